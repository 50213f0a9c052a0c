-- trace profile: the CDP facts of one profile (current version) in the tenant's context.
SELECT
    p.tenant_id, tn.tenant_name, p.profile_id, p.ext_id, p.email::text AS email, p.mobile_number,
    p.push_token IS NOT NULL AS has_push_token, p.segments, p.data_labels, p.segment_snapshots,
    p.raw_attributes, p.cdp_version, p.updated_at, p.consents
FROM cdp_profiles p
LEFT JOIN tenant tn ON tn.tenant_id = p.tenant_id
WHERE p.tenant_id = %(tenant_id)s AND p.profile_id = %(profile_id)s
