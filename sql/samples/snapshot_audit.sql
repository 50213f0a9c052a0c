-- Snapshot audit ("to whom, at that moment"): for each sealed snapshot, its audience and how the
-- fan-out facts (queued / suppressed) written from it match it. deliveries_to_non_members must be
-- 0 — otherwise a message went to someone outside the audience the decision named — and so must
-- version_mismatches: a queued delivery whose destination came from another CDP profile version
-- than the one the member's segment join pinned.
-- Run as the application role in a tenant's transaction (RLS scopes it to that tenant).
-- columns: snapshot_id, segment_name, segment_version, as_of_sequence, created_at, member_count,
--          deliveries, queued, suppressed, deliveries_to_non_members, version_mismatches,
--          members_not_addressed
WITH facts AS (
    SELECT DISTINCT l.snapshot_id, l.delivery_id, l.profile_id, l.profile_version,
                    l.delivery_status
    FROM delivery_log l
    WHERE l.snapshot_id IS NOT NULL AND l.delivery_status IN ('queued', 'suppressed')
)
SELECT
    ss.snapshot_id,
    ss.segment_name,
    ss.segment_version,
    ss.as_of_sequence,
    ss.created_at,
    ss.member_count,
    count(DISTINCT f.delivery_id)                                           AS deliveries,
    count(DISTINCT f.delivery_id) FILTER (WHERE f.delivery_status = 'queued') AS queued,
    count(DISTINCT f.delivery_id) FILTER (WHERE f.delivery_status = 'suppressed') AS suppressed,
    count(DISTINCT f.delivery_id) FILTER (WHERE m.profile_id IS NULL)       AS deliveries_to_non_members,
    count(DISTINCT f.delivery_id) FILTER (
        WHERE f.delivery_status = 'queued' AND m.profile_id IS NOT NULL
          AND f.profile_version IS DISTINCT FROM m.profile_version)         AS version_mismatches,
    ss.member_count - count(DISTINCT m.profile_id)                          AS members_not_addressed
FROM segment_snapshot ss
LEFT JOIN facts f ON f.snapshot_id = ss.snapshot_id
LEFT JOIN segment_snapshot_member m
    ON m.tenant_id = ss.tenant_id AND m.snapshot_id = f.snapshot_id AND m.profile_id = f.profile_id
GROUP BY ss.snapshot_id, ss.segment_name, ss.segment_version, ss.as_of_sequence, ss.created_at,
         ss.member_count
ORDER BY ss.created_at, ss.snapshot_id
