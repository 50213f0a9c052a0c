-- The current tenant's status changes (published time, status) in the order they were applied;
-- a tenant without a history (created out of band) has its current status in effect since ever.
SELECT source_timestamp_ms, status
FROM (
    SELECT seq, source_timestamp_ms, status
    FROM tenant_lifecycle
    WHERE tenant_id = %(tenant_id)s
    UNION ALL
    SELECT 0, NULL, status
    FROM tenant
    WHERE tenant_id = %(tenant_id)s
      AND NOT EXISTS (SELECT 1 FROM tenant_lifecycle WHERE tenant_id = %(tenant_id)s)
) changes
ORDER BY seq
