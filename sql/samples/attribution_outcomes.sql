-- Attribution: which campaign, event and agent decision led to which outcomes.
-- One row per (campaign, event, agent task): how many deliveries that decision produced and how
-- many reached delivered / opened / clicked, or failed (a delivery counts once per outcome it
-- ever reached, whatever order its receipts arrived in).
-- Run as the application role in a tenant's transaction (RLS scopes it to that tenant).
-- columns: campaign_code, campaign_name, event_key, event_name, agent_name, task_key, task_type,
--          reasoning_summary, deliveries, delivered, opened, clicked, failed, click_rate
SELECT
    t.campaign_code,
    t.campaign_name,
    t.event_key,
    t.event_name,
    t.agent_name,
    t.task_key,
    t.task_type,
    t.reasoning_summary,
    count(*)                                           AS deliveries,
    count(*) FILTER (WHERE t.reached_delivered)        AS delivered,
    count(*) FILTER (WHERE t.reached_opened)           AS opened,
    count(*) FILTER (WHERE t.reached_clicked)          AS clicked,
    count(*) FILTER (WHERE t.had_failure AND NOT t.reached_delivered) AS failed,
    round(count(*) FILTER (WHERE t.reached_clicked)::numeric
          / nullif(count(*) FILTER (WHERE t.reached_delivered), 0), 3) AS click_rate
FROM delivery_trace t
WHERE t.event_id IS NOT NULL
GROUP BY t.campaign_code, t.campaign_name, t.event_key, t.event_name, t.agent_name, t.task_key,
         t.task_type, t.reasoning_summary
ORDER BY t.campaign_code, t.event_key, t.task_key
