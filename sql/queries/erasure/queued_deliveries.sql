-- The deliveries queued to a profile: the delivery requests that named its destination, whose
-- tombstones an erasure produces on the compacted delivery-requests topic.
SELECT DISTINCT delivery_id FROM delivery_log
WHERE tenant_id = %(tenant_id)s AND profile_id = %(profile_id)s
  AND delivery_status = 'queued'
ORDER BY delivery_id
