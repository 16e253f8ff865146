"""The stage: its contract and its backends (memory, Redis)."""
