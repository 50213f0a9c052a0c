-- Is the stored dispatch under this key the same decision (event, snapshot, task) as this one?
-- A re-dispatch may carry a new time or correlation id; it is the same dispatch.
SELECT (event_id, snapshot_id, task_id) = (%(event_id)s::uuid, %(snapshot_id)s::uuid,
                                           %(task_id)s::uuid)
FROM dispatch
WHERE tenant_id = %(tenant_id)s AND dispatch_id = %(dispatch_id)s
