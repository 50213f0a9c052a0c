-- A psycopg.sql fragment, not runnable as it is, composed into member_digest.sql and
-- seal_members.sql at their placeholder: the members of a segment at a watermark, profiles whose
-- latest change up to it is a join, with the profile version that join pinned (the version
-- their delivery destination is taken from), in profile order. Read twice (to verify, then to
-- seal) instead of kept in a scratch table: each read runs where the tenant's shard is, and on
-- one server the second read costs what writing and reading the scratch table did.
SELECT tenant_id, profile_id, profile_version FROM (
    SELECT DISTINCT ON (profile_id) tenant_id, profile_id, action, profile_version
    FROM segment_membership_change
    WHERE tenant_id = %(tenant_id)s AND segment_key = %(segment_key)s AND sequence <= %(as_of)s
    ORDER BY profile_id, sequence DESC) latest
WHERE action = 'join'
