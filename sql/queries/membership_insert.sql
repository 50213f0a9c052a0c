-- Segment membership changes from staging into their history, keyed by per-segment sequence.
INSERT INTO segment_membership_change (tenant_id, segment_key, sequence, profile_id, action, occurred_at)
SELECT tenant_id, segment_key, sequence, profile_id, action, occurred_at
FROM stage_segment_membership_change
ON CONFLICT (tenant_id, segment_key, sequence) DO NOTHING
