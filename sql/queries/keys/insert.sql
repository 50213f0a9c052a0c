-- Data keys from the profile-keys topic into the mirror, except keys an erasure destroyed (read
-- again before the topic was compacted). Returns the keys that are new here: dispatches waiting
-- for them may be ready.
INSERT INTO profile_key AS k (tenant_id, profile_id, key_id, data_key, created_at,
    source_timestamp_ms)
SELECT %(tenant_id)s, n.profile_id, n.key_id, n.data_key, n.created_at,
    n.published_ms
FROM unnest(%(profiles)s::uuid[], %(keys)s::uuid[], %(data_keys)s::bytea[],
            %(created)s::timestamptz[], %(published)s::bigint[])
     AS n(profile_id, key_id, data_key, created_at, published_ms)
LEFT JOIN profile_erased_key x
  ON x.tenant_id = %(tenant_id)s AND x.profile_id = n.profile_id
 AND x.key_id = n.key_id
WHERE x.key_id IS NULL
ON CONFLICT (tenant_id, profile_id, key_id) DO NOTHING
RETURNING profile_id, key_id
