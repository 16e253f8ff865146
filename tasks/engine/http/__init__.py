"""Talking to any REST API: the client, auth styles, paginators, the concurrency window and API configuration."""
