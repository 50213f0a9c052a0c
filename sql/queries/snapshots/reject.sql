UPDATE segment_snapshot_request SET state = 'rejected', state_detail = %(detail)s
WHERE tenant_id = %(tenant_id)s AND snapshot_id = %(snapshot_id)s
