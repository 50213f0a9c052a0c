-- Seal, first: the immutable snapshot row (then its members, seal_members.sql; the request's
-- state, seal_request.sql; its entry in the tagging work queue, seal_tag_pending.sql), all in the
-- transaction that verified the member set.
INSERT INTO segment_snapshot (tenant_id, snapshot_id, segment_name, segment_version,
    as_of_sequence, snapshot_reason, member_count, member_digest, created_at)
VALUES (%(tenant_id)s, %(snapshot_id)s, %(segment_key)s, %(segment_version)s, %(as_of)s,
    %(reason)s, %(member_count)s, %(member_digest)s, %(created_at)s)
