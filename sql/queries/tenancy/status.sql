-- The current tenant's status now (no row: not registered).
SELECT status FROM tenant WHERE tenant_id = %(tenant_id)s
