-- Deliveries per agent decision: what each agent task (the AI / rule flight record) set in
-- motion. One row per agent task, including tasks that dispatched nothing: its dispatches, the
-- deliveries they fanned out to, and those deliveries by current status.
-- Run as the application role in a tenant's transaction (RLS scopes it to that tenant).
-- columns: agent_name, task_key, task_type, task_status, created_at, reasoning_summary,
--          dispatches, deliveries, queued, suppressed, sent, delivered, opened, clicked,
--          failed_or_bounced, complained_or_unsubscribed
WITH task_status AS (
    SELECT DISTINCT ON (x.tenant_id, x.task_id) x.tenant_id, x.task_id, x.status
    FROM agent_task_status x
    ORDER BY x.tenant_id, x.task_id, x.changed_at DESC, x.status DESC
), outcomes AS (
    SELECT s.tenant_id, s.task_id, s.current_status
    FROM delivery_status_current s
    WHERE s.task_id IS NOT NULL
)
SELECT
    t.agent_name,
    t.task_key,
    t.task_type,
    coalesce(ts.status, t.status)                                   AS task_status,
    t.created_at,
    t.reasoning_summary,
    (SELECT count(*) FROM dispatch d
     WHERE d.tenant_id = t.tenant_id AND d.task_id = t.task_id)     AS dispatches,
    count(o.task_id)                                                AS deliveries,
    count(o.task_id) FILTER (WHERE o.current_status = 'queued')     AS queued,
    count(o.task_id) FILTER (WHERE o.current_status = 'suppressed') AS suppressed,
    count(o.task_id) FILTER (WHERE o.current_status = 'sent')       AS sent,
    count(o.task_id) FILTER (WHERE o.current_status = 'delivered')  AS delivered,
    count(o.task_id) FILTER (WHERE o.current_status = 'opened')     AS opened,
    count(o.task_id) FILTER (WHERE o.current_status = 'clicked')    AS clicked,
    count(o.task_id) FILTER (WHERE o.current_status IN ('failed', 'bounced')) AS failed_or_bounced,
    count(o.task_id) FILTER (WHERE o.current_status IN ('complained', 'unsubscribed'))
                                                                    AS complained_or_unsubscribed
FROM agent_task t
-- joined on tenant_id too, so on Citus each part runs on the tenant's shard
LEFT JOIN task_status ts ON ts.tenant_id = t.tenant_id AND ts.task_id = t.task_id
LEFT JOIN outcomes o ON o.tenant_id = t.tenant_id AND o.task_id = t.task_id
GROUP BY t.tenant_id, t.task_id, t.agent_name, t.task_key, t.task_type, t.status, ts.status, t.created_at,
         t.reasoning_summary
ORDER BY t.created_at, t.task_key
