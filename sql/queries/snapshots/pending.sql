-- Snapshot requests still waiting for their segment's changes, for the given segments.
SELECT snapshot_id, segment_key, as_of_sequence, snapshot_reason, expected_count, expected_digest,
       requested_at
FROM segment_snapshot_request
WHERE tenant_id = %(tenant_id)s AND state = 'pending' AND segment_key = ANY(%(segments)s)
ORDER BY segment_key, as_of_sequence
