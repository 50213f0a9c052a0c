-- Recompute the current segments of the profiles a batch of membership changes touched: a segment
-- is current when the profile's latest change in it (by sequence) is a join.
WITH touched AS (
    SELECT DISTINCT profile_id FROM stage_segment_membership_change
), current AS (
    SELECT t.profile_id, ARRAY(
        SELECT c.segment_key FROM (
            SELECT DISTINCT ON (m.segment_key) m.segment_key, m.action
            FROM segment_membership_change m
            WHERE m.tenant_id = (SELECT leo_current_tenant()) AND m.profile_id = t.profile_id
            ORDER BY m.segment_key, m.sequence DESC) c
        WHERE c.action = 'join' ORDER BY c.segment_key) AS segments
    FROM touched t
)
UPDATE cdp_profiles p SET segments = current.segments
FROM current
WHERE p.tenant_id = (SELECT leo_current_tenant()) AND p.profile_id = current.profile_id
  AND p.segments IS DISTINCT FROM current.segments
