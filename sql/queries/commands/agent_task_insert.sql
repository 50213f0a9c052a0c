-- The agent's flight record: append-only, the first record of a task key wins.
INSERT INTO agent_task (tenant_id, task_id, task_key, agent_name, task_type, campaign_id,
    event_id, snapshot_id, reasoning_summary, reasoning_trace, status, created_at, correlation_id)
VALUES (%(tenant_id)s, %(task_id)s, %(task_key)s, %(agent_name)s, %(task_type)s,
    %(campaign_id)s, %(event_id)s, %(snapshot_id)s, %(reasoning_summary)s,
    %(reasoning_trace)s::jsonb, %(status)s, %(occurred_at)s, %(correlation_id)s)
ON CONFLICT (tenant_id, task_id) DO NOTHING
