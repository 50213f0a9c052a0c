-- Which of the given dispatches can fan out now, with what the fan-out needs. Ready: still
-- waiting, not already fanned out in this transaction (emitted: emitted.sql), its snapshot sealed,
-- no member pinned to a profile version that has not arrived yet (members that pin nothing do not
-- wait: they are suppressed), none pinned to a version sealed under a data key that has neither
-- arrived nor been destroyed by an erasure (its request could not be produced), and, under a
-- frequency cap, no earlier dispatch (in command order) on the channel within the cap's window of
-- business time still to fan out: the cap counts their deliveries.
SELECT d.dispatch_id, d.event_id, d.campaign_id, d.snapshot_id, d.task_id, d.channel,
       d.suppress_reason, d.requested_at, d.correlation_id, d.dispatch_seq,
       d.consent_required, d.cap_max, d.cap_window
FROM dispatch d
JOIN segment_snapshot_request r
  ON r.tenant_id = %(tenant_id)s AND r.snapshot_id = d.snapshot_id AND r.state = 'sealed'
WHERE d.tenant_id = %(tenant_id)s AND d.dispatch_id = ANY (%(dispatch_ids)s)
  AND d.state = 'waiting_for_snapshot'
  AND d.dispatch_id <> ALL (%(emitted)s::uuid[])
  AND NOT EXISTS (
      SELECT FROM segment_snapshot_member m
      WHERE m.tenant_id = %(tenant_id)s AND m.snapshot_id = d.snapshot_id
        AND m.profile_version IS NOT NULL
        AND NOT EXISTS (
            SELECT FROM cdp_profile_version v
            WHERE v.tenant_id = %(tenant_id)s AND v.profile_id = m.profile_id
              AND v.version = m.profile_version))
  AND NOT EXISTS (
      SELECT FROM segment_snapshot_member m
      JOIN cdp_profile_version v
        ON v.tenant_id = %(tenant_id)s AND v.profile_id = m.profile_id
       AND v.version = m.profile_version AND v.key_id IS NOT NULL
      LEFT JOIN profile_key k
        ON k.tenant_id = %(tenant_id)s AND k.profile_id = v.profile_id AND k.key_id = v.key_id
      LEFT JOIN profile_erased_key x
        ON x.tenant_id = %(tenant_id)s AND x.profile_id = v.profile_id AND x.key_id = v.key_id
      WHERE m.tenant_id = %(tenant_id)s AND m.snapshot_id = d.snapshot_id
        AND k.key_id IS NULL AND x.key_id IS NULL)
  AND (d.cap_max IS NULL OR NOT EXISTS (
      SELECT FROM dispatch earlier
      WHERE earlier.tenant_id = %(tenant_id)s AND earlier.channel = d.channel
        AND earlier.state = 'waiting_for_snapshot'
        AND earlier.dispatch_seq < d.dispatch_seq
        AND earlier.requested_at > d.requested_at - d.cap_window
        AND earlier.requested_at < d.requested_at + d.cap_window
        AND earlier.dispatch_id <> ALL (%(emitted)s::uuid[])))
ORDER BY d.dispatch_seq, d.dispatch_id
