-- The delivery requests of one fanned-out dispatch: its queued rows, in delivery order, with
-- the data key a sealed destination opens with (NULL once an erasure destroyed it: that request
-- is not produced).
SELECT l.delivery_id, l.profile_id, l.destination, l.destination_sealed, k.data_key
FROM delivery_log l
LEFT JOIN profile_key k
  ON k.tenant_id = l.tenant_id AND k.profile_id = l.profile_id AND k.key_id = l.key_id
WHERE l.tenant_id = %(tenant_id)s AND l.dispatch_id = %(dispatch_id)s
  AND l.delivery_status = 'queued'
ORDER BY l.delivery_id
