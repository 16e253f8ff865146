"""Benchmarks: each prints the product and a reference side by side; run from the repository root (`python -m benchmarks.bench_extract`)."""
