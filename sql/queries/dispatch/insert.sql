-- Record a dispatch with what its fan-out needs from the commands topic, read now, in command
-- order: the event's channel and campaign, the suppression the event's or the campaign's status
-- implies at this point of the tenant's command stream, the channel's contact policy in effect
-- (consent required, frequency cap) and the dispatch's place among the tenant's dispatches.
-- (Read later, at fan-out time, they would depend on how far the commands topic had got when the
-- snapshot sealed.) A replay or a re-dispatch hits the key: the first record wins.
INSERT INTO dispatch (tenant_id, dispatch_id, dispatch_key, event_id, snapshot_id, task_id,
    requested_at, campaign_id, channel, suppress_reason, correlation_id, dispatch_seq,
    consent_required, cap_max, cap_window)
SELECT e.tenant_id, %(dispatch_id)s, %(dispatch_key)s, e.event_id, %(snapshot_id)s,
    %(task_id)s, %(occurred_at)s, e.campaign_id, e.event_channel,
    CASE
        WHEN e.status = 'cancelled' THEN format('event %%s is cancelled', e.event_key)
        WHEN c.status <> 'active'
            THEN format('campaign %%s is %%s', c.campaign_code, c.status)
    END,
    %(correlation_id)s,
    coalesce((SELECT max(d.dispatch_seq) FROM dispatch d WHERE d.tenant_id = %(tenant_id)s), 0)
        + 1,
    coalesce(p.consent_required, false), p.cap_max, p.cap_window
FROM marketing_event e
JOIN campaign c ON c.tenant_id = e.tenant_id AND c.campaign_id = e.campaign_id
LEFT JOIN LATERAL (
    SELECT cp.consent_required, cp.cap_max, cp.cap_window
    FROM contact_policy cp
    WHERE cp.tenant_id = %(tenant_id)s AND cp.channel = e.event_channel
    ORDER BY cp.seq DESC
    LIMIT 1
) p ON true
WHERE e.tenant_id = %(tenant_id)s AND c.tenant_id = %(tenant_id)s AND e.event_id = %(event_id)s
ON CONFLICT (tenant_id, dispatch_id) DO NOTHING
