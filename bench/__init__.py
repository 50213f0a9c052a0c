"""Benchmarks for SPEC §7: ``scripts/bench.sh`` or ``python -m bench --help``."""
