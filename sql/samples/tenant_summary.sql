-- Tenant overview: one row for the current tenant — profiles, sealed snapshots, deliveries, and
-- deliveries by current status (the demo prints this per tenant).
-- Run as the application role in a tenant's transaction (RLS scopes it to that tenant).
-- columns: tenant_name, profiles, snapshots, deliveries, queued, suppressed, sent, delivered,
--          opened, clicked, failed, bounced, complained, unsubscribed
SELECT
    (SELECT tn.tenant_name FROM tenant tn)                              AS tenant_name,
    (SELECT count(*) FROM cdp_profiles)                                 AS profiles,
    (SELECT count(*) FROM segment_snapshot)                             AS snapshots,
    count(s.delivery_id)                                                AS deliveries,
    count(s.delivery_id) FILTER (WHERE s.current_status = 'queued')     AS queued,
    count(s.delivery_id) FILTER (WHERE s.current_status = 'suppressed') AS suppressed,
    count(s.delivery_id) FILTER (WHERE s.current_status = 'sent')       AS sent,
    count(s.delivery_id) FILTER (WHERE s.current_status = 'delivered')  AS delivered,
    count(s.delivery_id) FILTER (WHERE s.current_status = 'opened')     AS opened,
    count(s.delivery_id) FILTER (WHERE s.current_status = 'clicked')    AS clicked,
    count(s.delivery_id) FILTER (WHERE s.current_status = 'failed')     AS failed,
    count(s.delivery_id) FILTER (WHERE s.current_status = 'bounced')    AS bounced,
    count(s.delivery_id) FILTER (WHERE s.current_status = 'complained') AS complained,
    count(s.delivery_id) FILTER (WHERE s.current_status = 'unsubscribed') AS unsubscribed
FROM delivery_status_current s
