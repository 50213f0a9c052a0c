"""Operator tools: replay, verify, digest, trace and the dead-letter list and redrive."""
