-- Capped dispatches still waiting that come after the given ones in command order on their
-- channels: the given ones just fanned out, so these may be ready now (dispatch/ready.sql).
-- emitted: the dispatches fanned out in this transaction already (emitted.sql).
SELECT d.dispatch_id
FROM dispatch d
WHERE d.tenant_id = %(tenant_id)s AND d.state = 'waiting_for_snapshot'
  AND d.cap_max IS NOT NULL
  AND d.dispatch_id <> ALL (%(emitted)s::uuid[])
  AND EXISTS (
      SELECT FROM dispatch done
      WHERE done.tenant_id = %(tenant_id)s AND done.dispatch_id = ANY (%(dispatch_ids)s)
        AND done.channel = d.channel AND done.dispatch_seq < d.dispatch_seq)
ORDER BY d.dispatch_seq
