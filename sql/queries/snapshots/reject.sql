UPDATE segment_snapshot_request SET state = 'rejected', state_detail = %(detail)s
WHERE tenant_id = (SELECT leo_current_tenant()) AND snapshot_id = %(snapshot_id)s
