"""Benchmarks for agency-pgvector: `make bench` (python -m bench). Numbers and ratios, never pass/fail tests."""
