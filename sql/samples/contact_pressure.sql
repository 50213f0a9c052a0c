-- Contact pressure (compliance): how many messages each profile was sent, per channel, and over
-- which span of time — to spot over-messaged customers. Only deliveries queued to a provider
-- count (a suppressed one was never sent).
-- Run as the application role in a tenant's transaction (RLS scopes it to that tenant).
-- columns: profile_id, ext_id, channel, deliveries, campaigns, first_queued_at, last_queued_at
SELECT
    s.profile_id,
    p.ext_id,
    s.channel,
    count(*)                                           AS deliveries,
    count(DISTINCT e.campaign_id)                      AS campaigns,
    min(s.first_queued_at)                             AS first_queued_at,
    max(s.first_queued_at)                             AS last_queued_at
FROM delivery_status_current s
LEFT JOIN cdp_profiles p ON p.tenant_id = s.tenant_id AND p.profile_id = s.profile_id
LEFT JOIN marketing_event e ON e.tenant_id = s.tenant_id AND e.event_id = s.event_id
WHERE s.profile_id IS NOT NULL AND s.first_queued_at IS NOT NULL
GROUP BY s.profile_id, p.ext_id, s.channel
ORDER BY deliveries DESC, s.profile_id, s.channel
