-- CDP profile upserts from staging; returns how many profiles were written (counted as
-- receipts/insert.sql counts). The newest CDP version wins in any arrival order; equal versions
-- with different content are settled by content hash, so every order gives the same row. A new
-- profile starts with the segments and snapshots recorded for it before it arrived, staged with
-- it (segments.sql): read apart, on the tenant's shard, so that this statement reads nothing but
-- the staging table.
WITH written AS (
    INSERT INTO cdp_profiles AS p (
        tenant_id, profile_id, ext_id, email, mobile_number, push_token, segments, data_labels,
        segment_snapshots, raw_attributes, cdp_version, content_hash, updated_at, consents, key_id,
        ext_id_sealed, email_sealed, mobile_number_sealed, push_token_sealed,
        raw_attributes_sealed)
    SELECT DISTINCT ON (s.profile_id)
        s.tenant_id, s.profile_id, s.ext_id, s.email, s.mobile_number, s.push_token, s.segments,
        s.data_labels, s.segment_snapshots, s.raw_attributes, s.cdp_version, s.content_hash,
        s.updated_at, s.consents, s.key_id, s.ext_id_sealed, s.email_sealed,
        s.mobile_number_sealed, s.push_token_sealed, s.raw_attributes_sealed
    FROM stage_cdp_profiles s
    ORDER BY s.profile_id, s.cdp_version DESC, s.content_hash DESC
    ON CONFLICT (tenant_id, profile_id) DO UPDATE SET
        ext_id = EXCLUDED.ext_id,
        email = EXCLUDED.email,
        mobile_number = EXCLUDED.mobile_number,
        push_token = EXCLUDED.push_token,
        data_labels = EXCLUDED.data_labels,
        raw_attributes = EXCLUDED.raw_attributes,
        cdp_version = EXCLUDED.cdp_version,
        content_hash = EXCLUDED.content_hash,
        updated_at = EXCLUDED.updated_at,
        consents = EXCLUDED.consents,
        key_id = EXCLUDED.key_id,
        ext_id_sealed = EXCLUDED.ext_id_sealed,
        email_sealed = EXCLUDED.email_sealed,
        mobile_number_sealed = EXCLUDED.mobile_number_sealed,
        push_token_sealed = EXCLUDED.push_token_sealed,
        raw_attributes_sealed = EXCLUDED.raw_attributes_sealed
    WHERE (p.cdp_version, p.content_hash) < (EXCLUDED.cdp_version, EXCLUDED.content_hash)
    RETURNING 1
)
SELECT count(*) FROM written
