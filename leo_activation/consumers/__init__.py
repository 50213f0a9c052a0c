"""One module per input topic; each holds the Handler the engine calls inside a tenant's
transaction."""
