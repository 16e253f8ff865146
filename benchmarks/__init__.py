"""Benchmarks, not installed: each prints the product and a reference side by side.

Run from the repository's root: `python -m benchmarks.bench_extract`.
"""
