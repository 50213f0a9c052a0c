-- Whether a database of this name exists and still takes connections (no row: it does not exist;
-- false: a finished template, see leo_activation/dev/citus.py).
SELECT datallowconn FROM pg_database WHERE datname = %(name)s
