-- Sealed snapshots on the given segments whose members are still to be tagged (the work queue
-- is empty at rest: a row here means a tagging follow-up has not committed yet).
SELECT snapshot_id FROM segment_snapshot_tag_pending
WHERE tenant_id = %(tenant_id)s AND segment_key = ANY (%(segments)s)
ORDER BY snapshot_id
