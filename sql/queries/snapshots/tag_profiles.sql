-- Record a sealed snapshot on its members' cdp_profiles.segment_snapshots (sorted, only grows).
-- Idempotent: a profile already carrying it is skipped. A member whose profile has not arrived
-- yet gets it from profiles/upsert.sql, which reads segment_snapshot_member.
UPDATE cdp_profiles p
SET segment_snapshots = ARRAY(
    SELECT DISTINCT s FROM unnest(p.segment_snapshots || %(snapshot_id)s::uuid) s ORDER BY s)
FROM segment_snapshot_member m
WHERE m.tenant_id = %(tenant_id)s AND m.snapshot_id = %(snapshot_id)s
  AND p.tenant_id = %(tenant_id)s AND p.profile_id = m.profile_id
  AND NOT (%(snapshot_id)s::uuid = ANY (p.segment_snapshots))
