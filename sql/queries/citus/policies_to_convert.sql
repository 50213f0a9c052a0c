-- The tables whose tenant policy has one server's form (isolated before the database had the
-- citus extension): leo_isolate_tenant (0013) gives them the form Citus can distribute.
SELECT p.polrelid::regclass::text
FROM pg_policy p
WHERE p.polname = 'tenant_isolation'
  AND pg_get_expr(p.polqual, p.polrelid) <> '(tenant_id = leo_current_tenant())'
ORDER BY 1
