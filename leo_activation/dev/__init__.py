"""Development tooling: the local stack, the demo and the synthetic corpus (the `dev` extra)."""
