-- The delivery requests of one fanned-out dispatch: its queued rows, in delivery order.
SELECT delivery_id, profile_id, destination
FROM delivery_log
WHERE tenant_id = %(tenant_id)s AND dispatch_id = %(dispatch_id)s
  AND delivery_status = 'queued'
ORDER BY delivery_id
