"""Serving and deploying the flows, the bundled demo APIs, the demo and the CLI."""
