-- Tombstones of the profile-keys topic: the keys they name leave the mirror.
DELETE FROM profile_key k
USING unnest(%(profiles)s::uuid[], %(keys)s::uuid[]) AS t(profile_id, key_id)
WHERE k.tenant_id = %(tenant_id)s AND k.profile_id = t.profile_id
  AND k.key_id = t.key_id
