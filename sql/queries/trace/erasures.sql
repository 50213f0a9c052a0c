-- The erasures applied to a profile, oldest first.
SELECT erased_at, request_ref
FROM profile_erasure
WHERE tenant_id = (SELECT leo_current_tenant()) AND profile_id = %(profile_id)s
ORDER BY erased_at, request_ref
