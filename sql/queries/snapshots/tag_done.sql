-- Take a snapshot's tagging off the work queue (in the transaction that writes the tags). The row
-- lock serialises two runs of the same tagging: the second finds nothing and does nothing.
DELETE FROM segment_snapshot_tag_pending
WHERE tenant_id = %(tenant_id)s AND snapshot_id = %(snapshot_id)s
