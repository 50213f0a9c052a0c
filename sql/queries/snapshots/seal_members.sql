-- A psycopg.sql template (its placeholder: computed_members.sql). The sealed snapshot's members
-- with their pinned profile versions, straight from the membership changes (on Citus the whole
-- statement runs on the tenant's shard: nothing passes through the coordinator).
INSERT INTO segment_snapshot_member (tenant_id, snapshot_id, profile_id, created_at,
    profile_version)
SELECT members.tenant_id, %(snapshot_id)s, members.profile_id, %(created_at)s,
    members.profile_version
FROM ({0}) members
