-- What distributing needs in its transaction: the tables carry triggers (append-only truth, the
-- tenant never deleted), which Citus creates on every shard only when told they are safe to run
-- there (none of them reads another table).
SET LOCAL citus.enable_unsafe_triggers = on
