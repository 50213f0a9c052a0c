-- Before the coordinator's own copies of distributed tables are emptied (truncate_local.sql):
-- the append-only triggers refuse TRUNCATE, and here nothing is lost (the rows are in the
-- shards), so for the rest of this transaction ordinary triggers do not fire.
SET LOCAL session_replication_role = replica
