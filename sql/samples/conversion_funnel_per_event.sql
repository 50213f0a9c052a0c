-- Conversion funnel per marketing event: from the audience the snapshots held to clicks.
-- audience = members of the distinct sealed snapshots the event was dispatched to; then queued,
-- suppressed, sent (a provider accepted it), delivered, opened, clicked, failed/bounced, with the
-- step-to-step rates. A stage counts a delivery that ever reached it (an open implies delivery).
-- Run as the application role in a tenant's transaction (RLS scopes it to that tenant).
-- columns: campaign_code, event_key, event_name, event_channel, audience, queued, suppressed,
--          sent, delivered, opened, clicked, failed, delivery_rate, open_rate, click_rate
WITH per_delivery AS (
    SELECT s.event_id, s.current_status, s.first_queued_at, s.is_suppressed, s.reached_sent,
           s.reached_delivered, s.reached_opened, s.reached_clicked, s.had_failure
    FROM delivery_status_current s
    WHERE s.event_id IS NOT NULL
), audience AS (
    SELECT d.event_id, sum(ss.member_count) AS audience
    FROM (SELECT DISTINCT tenant_id, event_id, snapshot_id FROM dispatch) d
    JOIN segment_snapshot ss ON ss.tenant_id = d.tenant_id AND ss.snapshot_id = d.snapshot_id
    GROUP BY d.event_id
)
SELECT
    c.campaign_code,
    e.event_key,
    e.event_name,
    e.event_channel,
    coalesce(a.audience, 0)                                        AS audience,
    count(p.event_id) FILTER (WHERE p.first_queued_at IS NOT NULL) AS queued,
    count(p.event_id) FILTER (WHERE p.is_suppressed)               AS suppressed,
    count(p.event_id) FILTER (WHERE p.reached_sent)                AS sent,
    count(p.event_id) FILTER (WHERE p.reached_delivered)           AS delivered,
    count(p.event_id) FILTER (WHERE p.reached_opened)              AS opened,
    count(p.event_id) FILTER (WHERE p.reached_clicked)             AS clicked,
    count(p.event_id) FILTER (WHERE p.had_failure AND NOT p.reached_delivered) AS failed,
    round(count(p.event_id) FILTER (WHERE p.reached_delivered)::numeric
          / nullif(count(p.event_id) FILTER (WHERE p.first_queued_at IS NOT NULL), 0), 3)
                                                                   AS delivery_rate,
    round(count(p.event_id) FILTER (WHERE p.reached_opened)::numeric
          / nullif(count(p.event_id) FILTER (WHERE p.reached_delivered), 0), 3) AS open_rate,
    round(count(p.event_id) FILTER (WHERE p.reached_clicked)::numeric
          / nullif(count(p.event_id) FILTER (WHERE p.reached_opened), 0), 3) AS click_rate
FROM marketing_event e
JOIN campaign c ON c.tenant_id = e.tenant_id AND c.campaign_id = e.campaign_id
LEFT JOIN audience a ON a.event_id = e.event_id
LEFT JOIN per_delivery p ON p.event_id = e.event_id
GROUP BY c.campaign_code, e.event_key, e.event_name, e.event_channel, a.audience
ORDER BY c.campaign_code, e.event_key
