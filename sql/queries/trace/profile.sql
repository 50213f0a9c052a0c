-- trace profile: the CDP facts of one profile (current version) in the tenant's context, its
-- sealed fields with the data key that opens them (NULL: destroyed, or not mirrored yet).
SELECT
    p.tenant_id, tn.tenant_name, p.profile_id, p.ext_id, p.email::text AS email, p.mobile_number,
    (p.push_token IS NOT NULL OR p.push_token_sealed IS NOT NULL) AS has_push_token, p.segments,
    p.data_labels, p.segment_snapshots, p.raw_attributes, p.cdp_version, p.updated_at, p.consents,
    p.ext_id_sealed, p.email_sealed, p.mobile_number_sealed, p.raw_attributes_sealed, k.data_key
FROM cdp_profiles p
LEFT JOIN tenant tn ON tn.tenant_id = p.tenant_id
LEFT JOIN profile_key k
  ON k.tenant_id = p.tenant_id AND k.profile_id = p.profile_id AND k.key_id = p.key_id
WHERE p.tenant_id = %(tenant_id)s AND p.profile_id = %(profile_id)s
