-- A later status of an agent task: append-only, keyed by (task, time, status).
INSERT INTO agent_task_status (tenant_id, task_id, changed_at, status, reasoning_summary,
    correlation_id)
VALUES (%(tenant_id)s, %(task_id)s, %(occurred_at)s, %(status)s, %(reasoning_summary)s,
    %(correlation_id)s)
ON CONFLICT (tenant_id, task_id, changed_at, status) DO NOTHING
