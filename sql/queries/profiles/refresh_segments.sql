-- A psycopg.sql template (its placeholder: current_segments.sql). Recompute the current
-- segments of the profiles a batch of membership changes touched (profile_ids).
UPDATE cdp_profiles p SET segments = current.segments
FROM ({0}) current
WHERE p.tenant_id = %(tenant_id)s AND p.profile_id = current.profile_id
  AND p.segments IS DISTINCT FROM current.segments
