-- The tenant policy takes the form its database can run. On one server, 0002's:
-- `tenant_id = (SELECT leo_current_tenant())`, the tenant an InitPlan evaluated once per
-- statement. Citus refuses a subquery in a policy, so on a database with the citus extension:
--   USING (tenant_id = leo_current_tenant()): every statement of the application names its
--   tenant as a parameter too (`tenant_id = %(tenant_id)s`, which is what makes Citus run it on
--   the tenant's one shard), and the planner folds the two equalities into one check evaluated
--   once per statement; a statement that names no tenant gets the function as an index
--   condition, also once; only a sequential scan of such a statement evaluates it per row (a
--   regular expression over the setting: microseconds a row, which is why one server keeps the
--   InitPlan).
--   WITH CHECK (tenant_id::text = lower(setting)): evaluated for every row written, so it
--   compares text instead of calling the function; it accepts exactly what leo_current_tenant()
--   accepts (a uuid's text is its lower-case 8-4-4-4-12 form, so only a setting the function
--   reads as that uuid equals it; unset, '' and malformed settings match nothing, and raise
--   nothing).
-- The database decides, not the caller: a migration isolating a table needs to know nothing of
-- Citus, and `migrate` isolates every table again just before it distributes it (the extension
-- may have been added to a database that ran on one server before).
CREATE OR REPLACE FUNCTION leo_isolate_tenant(tbl regclass) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    distributable boolean := EXISTS (SELECT FROM pg_extension WHERE extname = 'citus');
    tenant text := CASE WHEN distributable THEN 'tenant_id = leo_current_tenant()'
                        ELSE 'tenant_id = (SELECT leo_current_tenant())' END;
    checked text := CASE WHEN distributable
                         THEN 'tenant_id::text = lower(current_setting(''app.current_tenant_id'', true))'
                         ELSE 'tenant_id = (SELECT leo_current_tenant())' END;
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', tbl);
    EXECUTE format('CREATE POLICY tenant_isolation ON %s USING (%s) WITH CHECK (%s)',
                   tbl, tenant, checked);
END
$$;

-- Every table 0002-0012 isolated, partitions included, in its database's form.
SELECT leo_isolate_tenant(polrelid)
FROM pg_policy
WHERE polname = 'tenant_isolation'
ORDER BY polrelid::regclass::text;

-- delivery_trace (0004) with the agent task's latest status joined instead of looked up
-- laterally: Citus cannot place a lateral subquery correlated on tenant_id on the tenant's shard
-- ("failed to postpone qual containing lateral reference"; a SELECT * of it crashed the
-- coordinator). The same columns and rows: the latest status change of each task.
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
LEFT JOIN (
    SELECT DISTINCT ON (x.tenant_id, x.task_id)
        x.tenant_id, x.task_id, x.status, x.changed_at, x.reasoning_summary
    FROM agent_task_status x
    ORDER BY x.tenant_id, x.task_id, x.changed_at DESC, x.status DESC
) ts ON ts.tenant_id = t.tenant_id AND ts.task_id = t.task_id;

GRANT SELECT ON delivery_trace TO leo_application;

-- delivery_history (0004) with a fact's arrival after a later-stamped fact found by a window over
-- the delivery's facts instead of a correlated subquery, which Citus cannot place on the tenant's
-- shard. The same columns and rows: arrived_late is whether some fact of the delivery the provider
-- stamped later (greater sent_at) reached the database earlier (smaller ingested_at).
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
    l.source_topic,
    l.source_partition,
    l.source_offset,
    l.ingested_at,
    coalesce(min(l.ingested_at) OVER later < l.ingested_at, false) AS arrived_late
FROM delivery_log l
JOIN delivery_status_current s ON s.tenant_id = l.tenant_id AND s.delivery_id = l.delivery_id
WINDOW w AS (PARTITION BY l.tenant_id, l.delivery_id ORDER BY l.sent_at, l.log_id),
       later AS (PARTITION BY l.tenant_id, l.delivery_id ORDER BY l.sent_at DESC
                 RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW EXCLUDE GROUP);

GRANT SELECT ON delivery_history TO leo_application;
