-- The computed member set of the snapshot being sealed (transaction-scoped scratch space).
CREATE TEMP TABLE IF NOT EXISTS snapshot_members (
    profile_id       uuid PRIMARY KEY,
    profile_version  bigint
) ON COMMIT DELETE ROWS
