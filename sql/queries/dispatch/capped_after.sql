-- Capped dispatches still waiting that come after the given ones in command order on their
-- channels: the given ones just fanned out, so these may be ready now (dispatch/ready.sql).
SELECT d.dispatch_id
FROM dispatch d
WHERE d.tenant_id = (SELECT leo_current_tenant()) AND d.state = 'waiting_for_snapshot'
  AND d.cap_max IS NOT NULL
  AND NOT EXISTS (SELECT FROM dispatch_emitted e WHERE e.dispatch_id = d.dispatch_id)
  AND EXISTS (
      SELECT FROM dispatch done
      WHERE done.tenant_id = d.tenant_id AND done.dispatch_id = ANY (%(dispatch_ids)s)
        AND done.channel = d.channel AND done.dispatch_seq < d.dispatch_seq)
ORDER BY d.dispatch_seq
