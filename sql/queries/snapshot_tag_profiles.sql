-- Record a sealed snapshot on its members' cdp_profiles.segment_snapshots (sorted, only grows).
UPDATE cdp_profiles p
SET segment_snapshots = ARRAY(
    SELECT DISTINCT s FROM unnest(p.segment_snapshots || %(snapshot_id)s::uuid) s ORDER BY s)
FROM snapshot_members m
WHERE p.tenant_id = (SELECT leo_current_tenant()) AND p.profile_id = m.profile_id
  AND NOT (%(snapshot_id)s::uuid = ANY (p.segment_snapshots))
