-- Set the tenant context (read by leo_current_tenant() in every policy) for the transaction only:
-- SET LOCAL ends with it and never outlives it on a pooled connection. A psycopg.sql template: SET
-- takes no parameters, so leo_activation/db.py composes the tenant in as a literal. On Citus, a
-- transaction's SET LOCAL commands reach the workers its statements run on (migrate sets the
-- database's citus.propagate_set_commands to 'local'); a set_config() call would not.
SET LOCAL app.current_tenant_id = {0}
