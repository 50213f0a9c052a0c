-- End the sessions still on a database that takes no new connections (the Citus maintenance
-- daemon's among them), so that it can be copied.
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %(name)s
