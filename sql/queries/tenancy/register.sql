-- Runs in the new tenant's own context: even the tenant table is written through its policy.
INSERT INTO tenant (tenant_id, tenant_name, status, created_at, updated_at)
VALUES (%(tenant_id)s, %(tenant_name)s, 'active', %(occurred_at)s, %(occurred_at)s)
ON CONFLICT (tenant_id) DO NOTHING
