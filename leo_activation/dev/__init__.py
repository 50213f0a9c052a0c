"""Development tooling: the local stack (the ``devstack`` extra), the demo, the synthetic corpus."""
