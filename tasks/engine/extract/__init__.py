"""The extract job: pages -> records -> stage, incremental cursors, entity schemas and child endpoints."""
