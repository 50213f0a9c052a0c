-- A psycopg.sql fragment, not runnable as it is, composed into recorded.sql and
-- refresh_segments.sql at their placeholder: the current segments of the given profiles, a
-- segment being current when the profile's latest change in it (by sequence) is a join. A
-- profile with changes but no current segment has '{}'; one without changes has no row.
SELECT profile_id,
       coalesce(array_agg(segment_key ORDER BY segment_key) FILTER (WHERE action = 'join'),
                '{}') AS segments
FROM (
    SELECT DISTINCT ON (m.profile_id, m.segment_key) m.profile_id, m.segment_key, m.action
    FROM segment_membership_change m
    WHERE m.tenant_id = %(tenant_id)s AND m.profile_id = ANY (%(profile_ids)s::uuid[])
    ORDER BY m.profile_id, m.segment_key, m.sequence DESC) latest
GROUP BY profile_id
