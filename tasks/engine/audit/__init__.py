"""The audit database: its SQLModel tables and the store that writes them."""
