-- trace delivery: the golden rule's five answers for one delivery (leo_activation/ops/trace.py).
-- Runs as the application role inside the tenant's transaction: RLS limits it to that tenant,
-- so another tenant's delivery id finds nothing.
SELECT
    t.tenant_id, tn.tenant_name, t.delivery_id,
    t.campaign_id, t.campaign_code, t.campaign_name, t.objective, t.campaign_status,
    t.event_id, t.event_key, t.event_name, t.event_type, t.event_channel, t.event_status,
    t.profile_id, t.profile_version, t.member_profile_version, t.channel, t.destination,
    t.fanout_status, t.fanout_reason,
    t.snapshot_id, t.segment_name, t.segment_version, t.as_of_sequence, t.snapshot_reason,
    t.snapshot_member_count, t.snapshot_created_at, t.profile_in_snapshot,
    t.task_id, t.task_key, t.agent_name, t.task_type, t.reasoning_summary, t.reasoning_trace,
    t.task_created_at, t.task_status, t.task_status_at, t.task_status_note,
    t.dispatch_id, t.dispatch_key, t.dispatch_requested_at, t.dispatch_state,
    t.dispatch_suppress_reason, t.dispatch_count,
    t.current_status, t.current_status_at, t.current_provider, t.first_queued_at,
    t.last_receipt_at, t.fact_count, t.receipt_count
FROM delivery_trace t
LEFT JOIN tenant tn ON tn.tenant_id = t.tenant_id
WHERE t.tenant_id = %(tenant_id)s AND t.delivery_id = %(delivery_id)s
