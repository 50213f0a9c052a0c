-- Set the tenant context (read by leo_current_tenant() in every policy). is_local = true: the
-- SET LOCAL of a function call, so it ends with the transaction and never outlives it on a
-- pooled connection.
SELECT set_config('app.current_tenant_id', %(tenant)s, true)
