INSERT INTO segment_snapshot_request (tenant_id, snapshot_id, segment_key, as_of_sequence,
    snapshot_reason, expected_count, expected_digest, requested_at)
VALUES (%(tenant_id)s, %(snapshot_id)s, %(segment_key)s, %(as_of_sequence)s,
    %(snapshot_reason)s, %(expected_count)s, %(expected_digest)s, %(occurred_at)s)
ON CONFLICT (tenant_id, snapshot_id) DO NOTHING
