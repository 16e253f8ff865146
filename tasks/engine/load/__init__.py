"""The load job: the destination index, SCD planning and history, the writers, and the key sets jobs keep."""
