-- A psycopg.sql template (its placeholder: current_segments.sql). What is recorded already for
-- the given profiles, which a new profile starts with (its membership changes or a sealed
-- snapshot may have arrived before it): its current segments and the snapshots it was sealed
-- into, in order. A profile with neither has no row.
SELECT coalesce(current.profile_id, sealed.profile_id)::text,
       coalesce(current.segments, '{{}}'),
       coalesce(sealed.snapshots, '{{}}')
FROM ({0}) current
FULL JOIN (
    SELECT sm.profile_id, array_agg(sm.snapshot_id ORDER BY sm.snapshot_id) AS snapshots
    FROM segment_snapshot_member sm
    WHERE sm.tenant_id = %(tenant_id)s AND sm.profile_id = ANY (%(profile_ids)s::uuid[])
    GROUP BY sm.profile_id
) sealed ON sealed.profile_id = current.profile_id
