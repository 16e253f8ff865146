"""Shared fixtures: real servers on 127.0.0.1 live in tests/fixtures/, one module per server."""

pytest_plugins = [
    "fixtures.demo_apis",
    "fixtures.redis_server",
]
