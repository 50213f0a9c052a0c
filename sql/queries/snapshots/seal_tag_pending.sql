-- The sealed snapshot's members are still to be tagged (tag_profiles.sql, a follow-up).
INSERT INTO segment_snapshot_tag_pending (tenant_id, snapshot_id, segment_key)
VALUES (%(tenant_id)s, %(snapshot_id)s, %(segment_key)s)
