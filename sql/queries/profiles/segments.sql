-- One pass over the membership history of a batch's profiles (profile_ids: those its membership
-- changes touched and those it upserts), two uses of it. The current segments of a profile are
-- those whose latest change (by sequence) is a join. Those of the touched profiles are written
-- to the ones that exist (refreshed); for the upserted profiles the statement returns what is
-- recorded already, which a new profile starts with (its membership changes or a sealed snapshot
-- may have arrived before it): its current segments and the snapshots it was sealed into, in
-- order. An upserted profile with neither has no row.
WITH current AS (
    SELECT profile_id,
           coalesce(array_agg(segment_key ORDER BY segment_key) FILTER (WHERE action = 'join'),
                    '{}') AS segments
    FROM (
        SELECT DISTINCT ON (m.profile_id, m.segment_key) m.profile_id, m.segment_key, m.action
        FROM segment_membership_change m
        WHERE m.tenant_id = %(tenant_id)s AND m.profile_id = ANY (%(profile_ids)s::uuid[])
        ORDER BY m.profile_id, m.segment_key, m.sequence DESC) latest
    GROUP BY profile_id
), refreshed AS (
    UPDATE cdp_profiles p SET segments = current.segments
    FROM current
    WHERE p.tenant_id = %(tenant_id)s AND p.profile_id = current.profile_id
      AND p.profile_id = ANY (%(touched)s::uuid[])
      AND p.segments IS DISTINCT FROM current.segments
)
SELECT coalesce(upserted.profile_id, sealed.profile_id)::text,
       coalesce(upserted.segments, '{}'),
       coalesce(sealed.snapshots, '{}')
FROM (SELECT * FROM current WHERE profile_id = ANY (%(upserted)s::uuid[])) upserted
FULL JOIN (
    SELECT sm.profile_id, array_agg(sm.snapshot_id ORDER BY sm.snapshot_id) AS snapshots
    FROM segment_snapshot_member sm
    WHERE sm.tenant_id = %(tenant_id)s AND sm.profile_id = ANY (%(upserted)s::uuid[])
    GROUP BY sm.profile_id
) sealed ON sealed.profile_id = upserted.profile_id
