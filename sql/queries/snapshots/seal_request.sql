-- The sealed snapshot's request is done.
UPDATE segment_snapshot_request SET state = 'sealed', state_detail = NULL
WHERE tenant_id = %(tenant_id)s AND snapshot_id = %(snapshot_id)s
