-- Rename / disable / enable. A change older than the row's last one is a replay: skipped.
UPDATE tenant
SET tenant_name = coalesce(%(tenant_name)s, tenant_name),
    status = coalesce(%(status)s, status),
    updated_at = %(occurred_at)s
WHERE tenant_id = %(tenant_id)s
  AND updated_at <= %(occurred_at)s
  AND (tenant_name, status) IS DISTINCT FROM
      (coalesce(%(tenant_name)s, tenant_name), coalesce(%(status)s, status))
