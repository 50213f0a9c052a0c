-- Every staged profile upsert into the append-only version history (an identical duplicate hits
-- the key and is skipped), returning the versions that were new: only those may complete a
-- waiting dispatch (versions_unblocked.sql), so a version seen before never re-triggers a fan-out.
INSERT INTO cdp_profile_version (tenant_id, profile_id, version, content_hash, ext_id, email,
    mobile_number, push_token, occurred_at, consents, key_id, ext_id_sealed, email_sealed,
    mobile_number_sealed, push_token_sealed)
SELECT tenant_id, profile_id, cdp_version, content_hash, ext_id, email, mobile_number,
    push_token, updated_at, consents, key_id, ext_id_sealed, email_sealed, mobile_number_sealed,
    push_token_sealed
FROM stage_cdp_profiles
ON CONFLICT (tenant_id, profile_id, version, content_hash) DO NOTHING
RETURNING profile_id::text, version
