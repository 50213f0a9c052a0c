-- Whether the local stack's database exists yet.
SELECT 1 FROM pg_database WHERE datname = %(name)s
