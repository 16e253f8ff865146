"""Batch types: one module per batch type, plus the builder that turns job types into a flow."""
