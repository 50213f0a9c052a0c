-- Analyst views: the golden rule's five questions (seed-schema §6) as SQL (SPEC §4.7).
--
-- Every view is `security_invoker`, so row-level security is evaluated for the caller, not for the
-- view's owner: the application role sees its current tenant's rows and nothing else, and with no
-- tenant set every view is empty. Views store nothing; they are not part of the state digest.
--
--   delivery_status_current  one row per delivery: its current status (precedence, then provider
--                            time), first queued time, last receipt time, outcome flags, and the
--                            dispatch context (event, profile, snapshot, agent task, dispatch).
--   delivery_history         every delivery_log fact in provider-time order, the current one marked.
--   delivery_trace           one row per delivery with the five answers: why (campaign), what
--                            (event), to whom at that moment (snapshot), who decided (agent task
--                            with its reasoning) and what really happened (current status; the
--                            facts themselves are delivery_history / delivery_log, by delivery_id).
--   profile_activity         every activation that touched a profile: the snapshots it was sealed
--                            into and the deliveries addressed to it.

-- Status precedence: a later stage of a message's life outranks an earlier one, whatever order the
-- receipts arrived in: queued < sent < failed/bounced < delivered < opened < clicked <
-- complained/unsubscribed. `suppressed` stands alone, off the provider ladder: like `queued` it is
-- the fan-out's decision (not to send), not a provider's report, so it shares the bottom rank with
-- `queued` — between two dispatches' decisions the later one wins — and any provider receipt
-- outranks it (a receipt shows what really happened). Ties (failed vs bounced, queued vs
-- suppressed, the same status twice) go to the later provider time, then the higher log_id.
CREATE OR REPLACE FUNCTION leo_delivery_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE status
        WHEN 'queued' THEN 0
        WHEN 'suppressed' THEN 0
        WHEN 'sent' THEN 1
        WHEN 'failed' THEN 2
        WHEN 'bounced' THEN 2
        WHEN 'delivered' THEN 3
        WHEN 'opened' THEN 4
        WHEN 'clicked' THEN 5
        WHEN 'complained' THEN 6
        WHEN 'unsubscribed' THEN 6
    END
$$;

-- ---------------------------------------------------------------- current status of a delivery
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
    FROM delivery_log
    ORDER BY tenant_id, delivery_id,
             leo_delivery_status_rank(delivery_status) DESC NULLS LAST, sent_at DESC, log_id DESC
) cur ON cur.tenant_id = agg.tenant_id AND cur.delivery_id = agg.delivery_id
LEFT JOIN (
    -- the dispatch context: the fan-out's first fact (queued or suppressed) for the delivery;
    -- provider receipts carry no event / profile / snapshot / task of their own. A delivery is
    -- one per (event, recipient), so a second dispatch of the event to the same recipient adds
    -- its own fact to the same delivery (dispatch_count); the earliest decision is the context.
    SELECT DISTINCT ON (tenant_id, delivery_id)
        tenant_id, delivery_id, event_id, profile_id, profile_version, snapshot_id, task_id,
        dispatch_id, delivery_status, reason, channel, destination
    FROM delivery_log
    WHERE event_id IS NOT NULL
    ORDER BY tenant_id, delivery_id, sent_at, log_id
) ctx ON ctx.tenant_id = agg.tenant_id AND ctx.delivery_id = agg.delivery_id;

-- ---------------------------------------------------------------- what really happened, fact by fact
CREATE OR REPLACE VIEW delivery_history WITH (security_invoker = true) AS
SELECT
    l.tenant_id,
    l.delivery_id,
    row_number() OVER w                                AS step,
    l.log_id,
    l.delivery_status,
    leo_delivery_status_rank(l.delivery_status)        AS status_rank,
    l.sent_at                                          AS occurred_at,
    l.provider,
    l.provider_message_id,
    l.provider_response,
    l.reason,
    l.channel,
    l.destination,
    l.correlation_id,
    l.log_id = s.current_log_id                        AS is_current,
    -- provenance (not business state): where the fact was read from, and whether it arrived after
    -- a fact the provider stamped later (a late receipt; precedence keeps the status right anyway)
    l.source_topic,
    l.source_partition,
    l.source_offset,
    l.ingested_at,
    EXISTS (
        SELECT 1 FROM delivery_log o
        WHERE o.tenant_id = l.tenant_id AND o.delivery_id = l.delivery_id
          AND o.sent_at > l.sent_at AND o.ingested_at < l.ingested_at
    )                                                  AS arrived_late
FROM delivery_log l
JOIN delivery_status_current s ON s.tenant_id = l.tenant_id AND s.delivery_id = l.delivery_id
WINDOW w AS (PARTITION BY l.tenant_id, l.delivery_id ORDER BY l.sent_at, l.log_id);

-- ---------------------------------------------------------------- the five answers per delivery
CREATE OR REPLACE VIEW delivery_trace WITH (security_invoker = true) AS
SELECT
    s.tenant_id,
    s.delivery_id,
    -- why: the campaign
    c.campaign_id,
    c.campaign_code,
    c.campaign_name,
    c.objective,
    c.status                                           AS campaign_status,
    -- what: the marketing event
    e.event_id,
    e.event_key,
    e.event_name,
    e.event_type,
    e.event_channel,
    e.status                                           AS event_status,
    -- to whom, at that moment: the recipient and the sealed snapshot it was addressed from
    s.profile_id,
    s.profile_version,                                 -- the CDP version the destination came from
    s.channel,
    s.destination,
    s.fanout_status,
    s.fanout_reason,
    s.snapshot_id,
    ss.segment_name,
    ss.segment_version,
    ss.as_of_sequence,
    ss.snapshot_reason,
    ss.member_count                                    AS snapshot_member_count,
    ss.created_at                                      AS snapshot_created_at,
    CASE WHEN ss.snapshot_id IS NOT NULL AND s.profile_id IS NOT NULL
         THEN m.profile_id IS NOT NULL END             AS profile_in_snapshot,
    m.profile_version                                  AS member_profile_version,
    -- who decided: the agent task (the flight record) and its latest status
    t.task_id,
    t.task_key,
    t.agent_name,
    t.task_type,
    t.reasoning_summary,
    t.reasoning_trace,
    t.created_at                                       AS task_created_at,
    coalesce(ts.status, t.status)                      AS task_status,
    coalesce(ts.changed_at, t.created_at)              AS task_status_at,
    ts.reasoning_summary                               AS task_status_note,
    -- the dispatch that fanned the decision out
    d.dispatch_id,
    d.dispatch_key,
    d.requested_at                                     AS dispatch_requested_at,
    d.state                                            AS dispatch_state,
    d.suppress_reason                                  AS dispatch_suppress_reason,
    s.dispatch_count,
    -- what really happened (every fact: delivery_history by delivery_id)
    s.current_status,
    s.current_status_at,
    s.current_provider,
    s.first_queued_at,
    s.last_receipt_at,
    s.fact_count,
    s.receipt_count,
    s.reached_delivered,
    s.reached_opened,
    s.reached_clicked,
    s.had_failure
FROM delivery_status_current s
LEFT JOIN marketing_event e ON e.tenant_id = s.tenant_id AND e.event_id = s.event_id
LEFT JOIN campaign c ON c.tenant_id = e.tenant_id AND c.campaign_id = e.campaign_id
LEFT JOIN segment_snapshot ss ON ss.tenant_id = s.tenant_id AND ss.snapshot_id = s.snapshot_id
LEFT JOIN segment_snapshot_member m
    ON m.tenant_id = s.tenant_id AND m.snapshot_id = s.snapshot_id AND m.profile_id = s.profile_id
LEFT JOIN dispatch d ON d.tenant_id = s.tenant_id AND d.dispatch_id = s.dispatch_id
LEFT JOIN agent_task t
    ON t.tenant_id = s.tenant_id AND t.task_id = coalesce(s.task_id, d.task_id)
LEFT JOIN LATERAL (
    SELECT x.status, x.changed_at, x.reasoning_summary
    FROM agent_task_status x
    WHERE x.tenant_id = t.tenant_id AND x.task_id = t.task_id
    ORDER BY x.changed_at DESC, x.status DESC
    LIMIT 1
) ts ON true;

-- ---------------------------------------------------------------- everything that touched a profile
CREATE OR REPLACE VIEW profile_activity WITH (security_invoker = true) AS
SELECT
    m.tenant_id,
    m.profile_id,
    'snapshot'::text                                   AS activity,
    ss.created_at                                      AS occurred_at,
    ss.snapshot_id,
    ss.segment_name,
    ss.segment_version,
    m.profile_version,
    NULL::uuid                                         AS delivery_id,
    NULL::text                                         AS delivery_status,
    NULL::text                                         AS channel,
    NULL::text                                         AS destination,
    NULL::uuid                                         AS event_id,
    NULL::text                                         AS event_name,
    NULL::uuid                                         AS campaign_id,
    NULL::text                                         AS campaign_code,
    NULL::uuid                                         AS task_id,
    NULL::text                                         AS agent_name,
    NULL::uuid                                         AS dispatch_id
FROM segment_snapshot_member m
JOIN segment_snapshot ss ON ss.tenant_id = m.tenant_id AND ss.snapshot_id = m.snapshot_id
UNION ALL
SELECT
    p.tenant_id,
    p.profile_id,
    'delivery'::text,
    coalesce(t.first_queued_at, t.current_status_at),
    t.snapshot_id,
    t.segment_name,
    t.segment_version,
    t.profile_version,
    t.delivery_id,
    t.current_status,
    t.channel,
    t.destination,
    t.event_id,
    t.event_name,
    t.campaign_id,
    t.campaign_code,
    t.task_id,
    t.agent_name,
    t.dispatch_id
FROM (
    SELECT DISTINCT tenant_id, profile_id, delivery_id
    FROM delivery_log
    WHERE profile_id IS NOT NULL
) p
CROSS JOIN LATERAL (
    -- OFFSET 0 keeps this a per-delivery lookup: a filter on profile_id then reads only that
    -- profile's deliveries through the indexes instead of the whole tenant's delivery_log
    SELECT * FROM delivery_trace dt
    WHERE dt.tenant_id = p.tenant_id AND dt.delivery_id = p.delivery_id
    OFFSET 0
) t;

GRANT SELECT ON delivery_status_current, delivery_history, delivery_trace, profile_activity
    TO leo_application;
