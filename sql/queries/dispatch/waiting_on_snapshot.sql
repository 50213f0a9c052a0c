-- Dispatches still waiting on a snapshot (that has just been sealed).
SELECT dispatch_id FROM dispatch
WHERE tenant_id = %(tenant_id)s AND snapshot_id = %(snapshot_id)s
  AND state = 'waiting_for_snapshot'
ORDER BY dispatch_id
