-- Segment membership changes from staging into their history, keyed by per-segment sequence;
-- returns how many were new (counted as receipts/insert.sql counts). profile_version is the CDP
-- profile version a join pinned (NULL from v1 producers).
WITH written AS (
    INSERT INTO segment_membership_change (tenant_id, segment_key, sequence, profile_id, action,
        occurred_at, profile_version)
    SELECT tenant_id, segment_key, sequence, profile_id, action, occurred_at, profile_version
    FROM stage_segment_membership_change
    ON CONFLICT (tenant_id, segment_key, sequence) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM written
