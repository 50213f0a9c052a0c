-- Dispatches still waiting whose snapshot has a member pinned to a profile version sealed under
-- one of the given keys: the keys just arrived or were destroyed, so they may be ready now.
SELECT DISTINCT d.dispatch_id
FROM unnest(%(profiles)s::uuid[], %(keys)s::uuid[]) AS k(profile_id, key_id)
JOIN cdp_profile_version v
  ON v.tenant_id = %(tenant_id)s AND v.profile_id = k.profile_id
 AND v.key_id = k.key_id
JOIN segment_snapshot_member m
  ON m.tenant_id = v.tenant_id AND m.profile_id = v.profile_id AND m.profile_version = v.version
JOIN dispatch d
  ON d.tenant_id = m.tenant_id AND d.snapshot_id = m.snapshot_id
 AND d.state = 'waiting_for_snapshot'
ORDER BY d.dispatch_id
