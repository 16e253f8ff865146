"""The transform job: steps, the expression language, lookups and quality screens."""
