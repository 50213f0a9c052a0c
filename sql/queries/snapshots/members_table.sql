-- The computed member set of the snapshot being sealed (transaction-scoped scratch space). No
-- key: DISTINCT ON (profile_id) in compute_members.sql makes each profile appear once,
-- and the member table's primary key checks it again when the set is sealed; an index here cost
-- ~0.1 s per 300,000 members for nothing.
-- Emptied at every commit; the TRUNCATE empties it for the next seal in the same transaction.
CREATE TEMP TABLE IF NOT EXISTS snapshot_members (
    profile_id       uuid,
    profile_version  bigint
) ON COMMIT DELETE ROWS;
TRUNCATE snapshot_members
