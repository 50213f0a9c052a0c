-- The members at the watermark: profiles whose latest change up to it is a join, with the
-- profile version that join pinned (the version their delivery destination is taken from).
INSERT INTO snapshot_members (profile_id, profile_version)
SELECT profile_id, profile_version FROM (
    SELECT DISTINCT ON (profile_id) profile_id, action, profile_version
    FROM segment_membership_change
    WHERE tenant_id = (SELECT leo_current_tenant()) AND segment_key = %(segment_key)s
      AND sequence <= %(as_of)s
    ORDER BY profile_id, sequence DESC) latest
WHERE action = 'join'
