"""Real-time hooks: the receiver's configuration, signatures, the durable intake, the debouncer, pushed records."""
