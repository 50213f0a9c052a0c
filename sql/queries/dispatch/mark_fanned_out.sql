-- Run only after the Kafka transaction carrying these dispatches' delivery requests committed:
-- from now on no trigger (re-dispatch, replay, a late profile version) emits them again.
UPDATE dispatch SET state = 'fanned_out'
WHERE tenant_id = %(tenant_id)s AND dispatch_id = ANY (%(dispatch_ids)s)
  AND state = 'waiting_for_snapshot'
