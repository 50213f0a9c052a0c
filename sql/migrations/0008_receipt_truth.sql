-- Current status follows what the provider says happened last, as a pure function of the set of
-- a delivery's facts (never of their arrival order). 0004 ranked `delivered` above `bounced`, so an
-- asynchronous bounce hours after "delivered" never became current.
--
--   1. Any provider receipt outranks the fan-out's own facts (queued, suppressed); among those
--      alone, the later wins.
--   2. The success ladder sent < delivered < opened < clicked only climbs: each step implies the
--      ones below (an open proves delivery), so its facts share one time, the latest of them, and
--      the highest step stands for it; a `delivered` stamped after an open does not undo it.
--   3. A complaint or an unsubscribe withdraws consent: it stays current whatever comes after
--      (a click on an old message does not restore it); between two, the later.
--   4. Otherwise a failure (failed, bounced) is compared with the ladder by provider time: the later
--      is what happened last, so a bounce after delivered is current and a later successful retry
--      overrides an earlier failure.
--   5. Ties in time go to the higher precedence below (at the same instant the adverse report is
--      the one not to hide), then the higher log_id.
CREATE OR REPLACE FUNCTION leo_delivery_status_precedence(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE status
        WHEN 'queued' THEN 0
        WHEN 'suppressed' THEN 0
        WHEN 'sent' THEN 1
        WHEN 'delivered' THEN 2
        WHEN 'opened' THEN 3
        WHEN 'clicked' THEN 4
        WHEN 'failed' THEN 5
        WHEN 'bounced' THEN 5
        WHEN 'complained' THEN 6
        WHEN 'unsubscribed' THEN 6
    END
$$;

-- The same columns as 0004's view; only the choice of the current fact changes.
CREATE OR REPLACE VIEW delivery_status_current WITH (security_invoker = true) AS
SELECT
    agg.tenant_id,
    agg.delivery_id,
    cur.delivery_status                                AS current_status,
    cur.sent_at                                        AS current_status_at,
    cur.provider                                       AS current_provider,
    cur.log_id                                         AS current_log_id,
    agg.first_queued_at,
    agg.last_receipt_at,
    agg.fact_count,
    agg.receipt_count,
    cur.delivery_status = 'suppressed'                 AS is_suppressed,
    agg.reached_sent,
    agg.reached_delivered,
    agg.reached_opened,
    agg.reached_clicked,
    agg.had_failure,
    agg.dispatch_count,
    ctx.event_id,
    ctx.profile_id,
    ctx.profile_version,
    ctx.snapshot_id,
    ctx.task_id,
    ctx.dispatch_id,
    ctx.delivery_status                                AS fanout_status,
    ctx.reason                                         AS fanout_reason,
    coalesce(ctx.channel, agg.any_channel)             AS channel,
    coalesce(ctx.destination, agg.any_destination)     AS destination
FROM (
    SELECT
        tenant_id,
        delivery_id,
        min(sent_at) FILTER (WHERE delivery_status = 'queued')                    AS first_queued_at,
        max(sent_at) FILTER (WHERE delivery_status NOT IN ('queued', 'suppressed')) AS last_receipt_at,
        count(*)                                                                  AS fact_count,
        count(*) FILTER (WHERE delivery_status NOT IN ('queued', 'suppressed'))   AS receipt_count,
        bool_or(delivery_status NOT IN ('queued', 'suppressed', 'failed', 'bounced')) AS reached_sent,
        bool_or(delivery_status IN ('delivered', 'opened', 'clicked', 'complained', 'unsubscribed'))
                                                                                  AS reached_delivered,
        bool_or(delivery_status IN ('opened', 'clicked'))                         AS reached_opened,
        bool_or(delivery_status = 'clicked')                                      AS reached_clicked,
        bool_or(delivery_status IN ('failed', 'bounced'))                         AS had_failure,
        count(DISTINCT dispatch_id)                                               AS dispatch_count,
        min(channel)                                                              AS any_channel,
        min(destination)                                                          AS any_destination
    FROM delivery_log
    GROUP BY tenant_id, delivery_id
) agg
JOIN (
    SELECT DISTINCT ON (tenant_id, delivery_id)
        tenant_id, delivery_id, delivery_status, sent_at, provider, log_id
    FROM (
        SELECT l.tenant_id, l.delivery_id, l.delivery_status, l.sent_at, l.provider, l.log_id,
               CASE WHEN l.delivery_status IN ('sent', 'delivered', 'opened', 'clicked')
                    THEN max(l.sent_at) FILTER (
                             WHERE l.delivery_status IN ('sent', 'delivered', 'opened', 'clicked'))
                         OVER (PARTITION BY l.tenant_id, l.delivery_id)
                    ELSE l.sent_at END AS effective_at
        FROM delivery_log l
    ) f
    ORDER BY tenant_id, delivery_id,
             (delivery_status NOT IN ('queued', 'suppressed')) DESC,
             (delivery_status IN ('complained', 'unsubscribed')) DESC, effective_at DESC,
             leo_delivery_status_precedence(delivery_status) DESC NULLS LAST, log_id DESC
) cur ON cur.tenant_id = agg.tenant_id AND cur.delivery_id = agg.delivery_id
LEFT JOIN (
    -- the dispatch context, as in 0004: the fan-out's first fact for the delivery
    SELECT DISTINCT ON (tenant_id, delivery_id)
        tenant_id, delivery_id, event_id, profile_id, profile_version, snapshot_id, task_id,
        dispatch_id, delivery_status, reason, channel, destination
    FROM delivery_log
    WHERE event_id IS NOT NULL
    ORDER BY tenant_id, delivery_id, sent_at, log_id
) ctx ON ctx.tenant_id = agg.tenant_id AND ctx.delivery_id = agg.delivery_id;

GRANT EXECUTE ON FUNCTION leo_delivery_status_precedence(text) TO leo_application;
GRANT SELECT ON delivery_status_current TO leo_application;
