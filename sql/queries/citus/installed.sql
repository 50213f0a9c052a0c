-- The version of the citus extension in this database (no row: a single server).
SELECT extversion FROM pg_extension WHERE extname = 'citus'
