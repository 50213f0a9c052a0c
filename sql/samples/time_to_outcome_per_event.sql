-- Time to outcome per marketing event: how long after being queued deliveries were delivered,
-- opened and clicked (provider times; median and 90th percentile, in seconds).
-- Run as the application role in a tenant's transaction (RLS scopes it to that tenant).
-- columns: event_key, event_name, deliveries, median_to_delivered_s, p90_to_delivered_s,
--          median_to_opened_s, median_to_clicked_s
WITH firsts AS (
    SELECT
        l.delivery_id,
        min(l.sent_at) FILTER (WHERE l.delivery_status = 'queued')    AS queued_at,
        min(l.sent_at) FILTER (WHERE l.delivery_status = 'delivered') AS delivered_at,
        min(l.sent_at) FILTER (WHERE l.delivery_status = 'opened')    AS opened_at,
        min(l.sent_at) FILTER (WHERE l.delivery_status = 'clicked')   AS clicked_at
    FROM delivery_log l
    GROUP BY l.delivery_id
)
SELECT
    e.event_key,
    e.event_name,
    count(*)                                                           AS deliveries,
    percentile_cont(0.5) WITHIN GROUP (
        ORDER BY extract(epoch FROM f.delivered_at - f.queued_at))     AS median_to_delivered_s,
    percentile_cont(0.9) WITHIN GROUP (
        ORDER BY extract(epoch FROM f.delivered_at - f.queued_at))     AS p90_to_delivered_s,
    percentile_cont(0.5) WITHIN GROUP (
        ORDER BY extract(epoch FROM f.opened_at - f.queued_at))        AS median_to_opened_s,
    percentile_cont(0.5) WITHIN GROUP (
        ORDER BY extract(epoch FROM f.clicked_at - f.queued_at))       AS median_to_clicked_s
FROM delivery_status_current s
JOIN firsts f ON f.delivery_id = s.delivery_id
JOIN marketing_event e ON e.tenant_id = s.tenant_id AND e.event_id = s.event_id
WHERE f.queued_at IS NOT NULL
GROUP BY e.event_key, e.event_name
ORDER BY e.event_key
