-- A status change of the current tenant, numbered after its earlier ones. A tenant that existed
-- before it had a history (created out of band) first gets its previous status as in effect since
-- ever, so the change does not make its older traffic look unregistered.
WITH seeded AS (
    INSERT INTO tenant_lifecycle (tenant_id, seq, status, occurred_at, source_timestamp_ms)
    SELECT tenant_id, 1, %(previous)s, created_at, NULL
    FROM tenant
    WHERE tenant_id = (SELECT leo_current_tenant())
      AND %(previous)s::text IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM tenant_lifecycle WHERE tenant_id = (SELECT leo_current_tenant()))
    RETURNING seq
)
INSERT INTO tenant_lifecycle (tenant_id, seq, status, occurred_at, source_timestamp_ms)
SELECT (SELECT leo_current_tenant()),
       coalesce((SELECT max(seq) FROM seeded), (SELECT max(seq) FROM tenant_lifecycle), 0) + 1,
       %(status)s, %(occurred_at)s, %(published_ms)s
