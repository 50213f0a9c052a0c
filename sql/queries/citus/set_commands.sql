-- Whether this is a Citus database, and whether this session passes SET LOCAL on to the workers
-- (migrate sets it for the database; without it the tenant context never reaches a shard).
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus'),
       current_setting('citus.propagate_set_commands', true)
