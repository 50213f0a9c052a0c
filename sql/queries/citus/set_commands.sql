-- At a consumer's start: whether this is a Citus database, whether its sessions pass SET LOCAL on
-- to the workers (migrate sets it for the database; without it the tenant context never reaches
-- a shard), and the function every tenant policy reads (a database not migrated, or that lost
-- it, stops the consumer here rather than at its first batch).
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus'),
       current_setting('citus.propagate_set_commands', true),
       leo_current_tenant()
