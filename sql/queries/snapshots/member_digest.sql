-- A psycopg.sql template (its placeholder: computed_members.sql). Count and digest of the
-- computed member set: sha256 over the sorted member uuids, one per line (lower-case text form,
-- '\n' between them). A CDP can compute the same to verify a snapshot.
SELECT count(*),
       encode(sha256(convert_to(coalesce(string_agg(profile_id::text, E'\n' ORDER BY profile_id), ''),
                                'UTF8')), 'hex')
FROM ({0}) members
