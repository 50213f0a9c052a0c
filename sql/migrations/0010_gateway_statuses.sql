-- The gateway's vocabulary: provider statuses with no equal among 0002's (DeliveryReceipt.v2).
--   deferred  the provider could not deliver yet and will retry (SendGrid deferred, SES
--             DeliveryDelay, Mailgun temporary failure, Postmark soft bounce): not a failure
--   dropped   the provider refused to send (SendGrid dropped, SES Reject): a failure
--   read      a read receipt (Twilio read, Zalo seen): the success ladder's step beside opened
ALTER TABLE delivery_log DROP CONSTRAINT IF EXISTS delivery_log_delivery_status_check;
ALTER TABLE delivery_log ADD CONSTRAINT delivery_log_delivery_status_check CHECK (delivery_status IN (
    'queued', 'suppressed', 'sent', 'delivered', 'failed', 'bounced', 'opened', 'clicked',
    'complained', 'unsubscribed', 'deferred', 'dropped', 'read'));

-- 0008's precedence with the new statuses: on a tie in time a deferral yields to a success
-- (it was overtaken), read ranks with opened, dropped with the failures.
CREATE OR REPLACE FUNCTION leo_delivery_status_precedence(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE status
        WHEN 'queued' THEN 0
        WHEN 'suppressed' THEN 0
        WHEN 'deferred' THEN 0
        WHEN 'sent' THEN 1
        WHEN 'delivered' THEN 2
        WHEN 'opened' THEN 3
        WHEN 'read' THEN 3
        WHEN 'clicked' THEN 4
        WHEN 'failed' THEN 5
        WHEN 'bounced' THEN 5
        WHEN 'dropped' THEN 5
        WHEN 'complained' THEN 6
        WHEN 'unsubscribed' THEN 6
    END
$$;

-- 0008's view with the new statuses placed: read climbs the ladder with opened, dropped is a
-- failure, deferred stands outside both (compared by time, like a failure, without being one).
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
        bool_or(delivery_status NOT IN ('queued', 'suppressed', 'failed', 'bounced', 'dropped',
                                        'deferred'))                      AS reached_sent,
        bool_or(delivery_status IN ('delivered', 'opened', 'read', 'clicked', 'complained',
                                    'unsubscribed'))
                                                                                  AS reached_delivered,
        bool_or(delivery_status IN ('opened', 'read', 'clicked'))                 AS reached_opened,
        bool_or(delivery_status = 'clicked')                                      AS reached_clicked,
        bool_or(delivery_status IN ('failed', 'bounced', 'dropped'))              AS had_failure,
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
               CASE WHEN l.delivery_status IN ('sent', 'delivered', 'opened', 'read', 'clicked')
                    THEN max(l.sent_at) FILTER (
                             WHERE l.delivery_status IN ('sent', 'delivered', 'opened', 'read', 'clicked'))
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

GRANT SELECT ON delivery_status_current TO leo_application;
