"""Benchmarks of the performance targets in docs/performance.md: ``scripts/bench.sh`` or
``python -m bench --help``."""
