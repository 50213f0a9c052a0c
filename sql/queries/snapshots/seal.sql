-- Seal: the immutable snapshot row, its members (with their pinned profile versions), the
-- request's state, and the snapshot's entry in the tagging work queue (the members'
-- cdp_profiles.segment_snapshots are written by the follow-up, tag_profiles.sql).
WITH sealed AS (
    INSERT INTO segment_snapshot (tenant_id, snapshot_id, segment_name, segment_version,
        as_of_sequence, snapshot_reason, member_count, member_digest, created_at)
    VALUES (leo_current_tenant(), %(snapshot_id)s, %(segment_key)s, %(segment_version)s,
        %(as_of)s, %(reason)s, %(member_count)s, %(member_digest)s, %(created_at)s)
    RETURNING snapshot_id
), members AS (
    INSERT INTO segment_snapshot_member (tenant_id, snapshot_id, profile_id, created_at,
        profile_version)
    SELECT (SELECT leo_current_tenant()), %(snapshot_id)s, profile_id, %(created_at)s, profile_version
    FROM snapshot_members, sealed
), pending AS (
    INSERT INTO segment_snapshot_tag_pending (tenant_id, snapshot_id, segment_key)
    SELECT leo_current_tenant(), snapshot_id, %(segment_key)s FROM sealed
)
UPDATE segment_snapshot_request SET state = 'sealed', state_detail = NULL
WHERE tenant_id = (SELECT leo_current_tenant()) AND snapshot_id = %(snapshot_id)s
