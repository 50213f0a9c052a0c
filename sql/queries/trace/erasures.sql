-- The erasures applied to a profile, oldest first.
SELECT erased_at, request_ref
FROM profile_erasure
WHERE tenant_id = %(tenant_id)s AND profile_id = %(profile_id)s
ORDER BY erased_at, request_ref
