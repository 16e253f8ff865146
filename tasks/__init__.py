"""The jobs: extract, transform, load and audit tasks, and the engine they use."""
