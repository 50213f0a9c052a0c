-- Tenant overview: one row for the current tenant — profiles, sealed snapshots, deliveries, and
-- deliveries by current status (the demo prints this per tenant).
-- Run as the application role in a tenant's transaction (RLS scopes it to that tenant).
-- columns: tenant_name, profiles, snapshots, deliveries, queued, suppressed, sent, delivered,
--          opened, clicked, failed, bounced, complained, unsubscribed
SELECT
    tn.tenant_name,
    coalesce(p.profiles, 0)                                             AS profiles,
    coalesce(ss.snapshots, 0)                                           AS snapshots,
    coalesce(d.deliveries, 0)                                           AS deliveries,
    coalesce(d.queued, 0)                                               AS queued,
    coalesce(d.suppressed, 0)                                           AS suppressed,
    coalesce(d.sent, 0)                                                 AS sent,
    coalesce(d.delivered, 0)                                            AS delivered,
    coalesce(d.opened, 0)                                               AS opened,
    coalesce(d.clicked, 0)                                              AS clicked,
    coalesce(d.failed, 0)                                               AS failed,
    coalesce(d.bounced, 0)                                              AS bounced,
    coalesce(d.complained, 0)                                           AS complained,
    coalesce(d.unsubscribed, 0)                                         AS unsubscribed
FROM tenant tn
-- every part is joined on tenant_id, so on Citus each runs on the tenant's shard
LEFT JOIN (SELECT tenant_id, count(*) AS profiles FROM cdp_profiles GROUP BY tenant_id) p
    ON p.tenant_id = tn.tenant_id
LEFT JOIN (SELECT tenant_id, count(*) AS snapshots FROM segment_snapshot GROUP BY tenant_id) ss
    ON ss.tenant_id = tn.tenant_id
LEFT JOIN (
    SELECT
        s.tenant_id,
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
    GROUP BY s.tenant_id
) d ON d.tenant_id = tn.tenant_id