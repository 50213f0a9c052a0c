-- The current tenant's status changes (published time, status) in the order they were applied;
-- a tenant without a history (created out of band) has its current status in effect since ever.
SELECT source_timestamp_ms, status
FROM (
    SELECT seq, source_timestamp_ms, status
    FROM tenant_lifecycle
    WHERE tenant_id = (SELECT leo_current_tenant())
    UNION ALL
    SELECT 0, NULL, status
    FROM tenant
    WHERE tenant_id = (SELECT leo_current_tenant())
      AND NOT EXISTS (SELECT 1 FROM tenant_lifecycle WHERE tenant_id = (SELECT leo_current_tenant()))
) changes
ORDER BY seq
