-- How many shards the tenant tables are split into.
SELECT shard_count FROM citus_tables WHERE table_name = 'tenant'::regclass
