-- trace profile: every activation that touched one profile (snapshots it was sealed into,
-- deliveries addressed to it with their current status, and why the fan-out suppressed one),
-- oldest first.
SELECT
    a.activity, a.occurred_at, a.snapshot_id, a.segment_name, a.segment_version, a.profile_version,
    a.delivery_id,
    a.delivery_status, a.channel, a.destination, a.event_id, a.event_name, a.campaign_id,
    a.campaign_code, a.task_id, a.agent_name, a.dispatch_id, suppressed.reason AS fanout_reason
FROM profile_activity a
LEFT JOIN LATERAL (
    SELECT l.reason
    FROM delivery_log l
    WHERE l.tenant_id = %(tenant_id)s AND l.delivery_id = a.delivery_id
      AND l.delivery_status = 'suppressed'
    ORDER BY l.log_id
    LIMIT 1
) suppressed ON a.activity = 'delivery'
WHERE a.tenant_id = %(tenant_id)s AND a.profile_id = %(profile_id)s
ORDER BY a.occurred_at, a.activity DESC, a.snapshot_id, a.delivery_id
