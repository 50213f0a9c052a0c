-- Is the stored record of a task the same decision as this one? (A copy is a duplicate; a
-- different decision under the same key is a conflict.) The correlation id is not part of the
-- decision: a retried publish may carry a new one. The trace compares as JSON, not as text.
SELECT (agent_name, task_type, campaign_id, event_id, snapshot_id, reasoning_summary,
        reasoning_trace, status, created_at)
       IS NOT DISTINCT FROM
       (%(agent_name)s::text, %(task_type)s::text, %(campaign_id)s::uuid, %(event_id)s::uuid,
        %(snapshot_id)s::uuid, %(reasoning_summary)s::text, %(reasoning_trace)s::jsonb,
        %(status)s::text, %(occurred_at)s::timestamptz)
FROM agent_task
WHERE tenant_id = %(tenant_id)s AND task_id = %(task_id)s
