-- The members at the watermark: profiles whose latest change up to it is a join.
INSERT INTO snapshot_members (profile_id)
SELECT profile_id FROM (
    SELECT DISTINCT ON (profile_id) profile_id, action
    FROM segment_membership_change
    WHERE tenant_id = leo_current_tenant() AND segment_key = %(segment_key)s
      AND sequence <= %(as_of)s
    ORDER BY profile_id, sequence DESC) latest
WHERE action = 'join'
