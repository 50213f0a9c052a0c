-- tenant_id is given as well as enforced by row-level security, here and in the other erasure
-- and keys statements: a distributed database routes it to the tenant's shard.
-- Apply one erasure: record it (append-only), destroy the data keys of every version of the
-- profile applied before it (they precede it in the profile's partition, so the set is the same
-- in every run), delete those keys from the mirror and clear the current profile row's personal
-- columns. An erasure applied before (a replay, a re-published request) changes nothing: keys
-- made since, for data the CDP published after it, are not its to destroy. Returns whether it
-- was new and the keys it destroyed.
WITH erasure AS (
    INSERT INTO profile_erasure (tenant_id, profile_id, request_ref, erased_at, correlation_id)
    VALUES (%(tenant_id)s, %(profile_id)s, %(request_ref)s, %(erased_at)s,
            %(correlation_id)s)
    ON CONFLICT (tenant_id, profile_id, request_ref) DO NOTHING
    RETURNING tenant_id, profile_id
), destroyed AS (
    INSERT INTO profile_erased_key (tenant_id, profile_id, key_id, request_ref)
    SELECT DISTINCT v.tenant_id, v.profile_id, v.key_id, %(request_ref)s
    FROM erasure e
    JOIN cdp_profile_version v ON v.tenant_id = e.tenant_id AND v.profile_id = e.profile_id
    WHERE v.tenant_id = %(tenant_id)s AND v.profile_id = %(profile_id)s AND v.key_id IS NOT NULL
    ON CONFLICT (tenant_id, profile_id, key_id) DO NOTHING
    RETURNING key_id
), shredded AS (
    DELETE FROM profile_key k
    USING destroyed d
    WHERE k.tenant_id = %(tenant_id)s AND k.profile_id = %(profile_id)s
      AND k.key_id = d.key_id
), cleared AS (
    UPDATE cdp_profiles p
    SET ext_id = NULL, email = NULL, mobile_number = NULL, push_token = NULL,
        raw_attributes = '{}', key_id = NULL, ext_id_sealed = NULL, email_sealed = NULL,
        mobile_number_sealed = NULL, push_token_sealed = NULL, raw_attributes_sealed = NULL,
        erased_at = %(erased_at)s, erasure_ref = %(request_ref)s
    FROM erasure e
    WHERE p.tenant_id = %(tenant_id)s AND p.profile_id = %(profile_id)s
      AND p.tenant_id = e.tenant_id AND p.profile_id = e.profile_id
)
SELECT (SELECT count(*) FROM erasure) > 0, ARRAY(SELECT key_id FROM destroyed ORDER BY key_id)
