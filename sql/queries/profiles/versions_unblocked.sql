-- The waiting dispatches that newly arrived profile versions (profiles[i] at versions[i]) may have
-- completed: those whose snapshot has a member pinned to exactly such a version.
SELECT DISTINCT d.dispatch_id
FROM segment_snapshot_member m
JOIN dispatch d
  ON d.tenant_id = %(tenant_id)s AND d.snapshot_id = m.snapshot_id
 AND d.state = 'waiting_for_snapshot'
WHERE m.tenant_id = %(tenant_id)s
  AND (m.profile_id, m.profile_version) IN (
      SELECT * FROM unnest(%(profiles)s::uuid[], %(versions)s::bigint[]))
ORDER BY d.dispatch_id
