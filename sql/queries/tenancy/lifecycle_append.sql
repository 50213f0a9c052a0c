-- A status change of the current tenant, numbered after its earlier ones (lifecycle_seed.sql
-- first gives a tenant created out of band its earlier status). Selected from the tenant's own
-- row, which a status change always has, so Citus runs the statement on the tenant's shard.
INSERT INTO tenant_lifecycle (tenant_id, seq, status, occurred_at, source_timestamp_ms)
SELECT t.tenant_id,
       coalesce((SELECT max(l.seq) FROM tenant_lifecycle l WHERE l.tenant_id = %(tenant_id)s), 0)
           + 1,
       %(status)s, %(occurred_at)s, %(published_ms)s
FROM tenant t
WHERE t.tenant_id = %(tenant_id)s
