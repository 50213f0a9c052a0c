-- Is the stored status change under this key the same as this one (a duplicate)?
SELECT reasoning_summary IS NOT DISTINCT FROM %(reasoning_summary)s::text
FROM agent_task_status
WHERE tenant_id = %(tenant_id)s AND task_id = %(task_id)s
  AND changed_at = %(occurred_at)s AND status = %(status)s
