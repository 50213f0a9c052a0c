"""Shared pytest configuration; the fixtures live in topical plugins (``tests/fix_*.py``)."""

pytest_plugins = [
    "tests.fix_stack",
    "tests.fix_backends",
    "tests.fix_db",
    "tests.fix_app",
    "tests.fix_security",
    "tests.fix_cluster",
]
