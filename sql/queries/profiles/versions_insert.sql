-- Every staged profile upsert into the append-only version history (an identical duplicate hits
-- the key and is skipped), returning how many were new and which waiting dispatches a new version
-- may have completed: those whose snapshot has a member pinned to exactly that version. Only
-- newly inserted versions count, so a version seen before never re-triggers a fan-out.
WITH inserted AS (
    INSERT INTO cdp_profile_version (tenant_id, profile_id, version, content_hash, ext_id, email,
        mobile_number, push_token, occurred_at, consents, key_id, ext_id_sealed, email_sealed,
        mobile_number_sealed, push_token_sealed)
    SELECT tenant_id, profile_id, cdp_version, content_hash, ext_id, email, mobile_number,
        push_token, updated_at, consents, key_id, ext_id_sealed, email_sealed,
        mobile_number_sealed, push_token_sealed
    FROM stage_cdp_profiles
    ON CONFLICT (tenant_id, profile_id, version, content_hash) DO NOTHING
    RETURNING profile_id, version
)
SELECT (SELECT count(*) FROM inserted),
       ARRAY(
           SELECT DISTINCT d.dispatch_id
           FROM inserted i
           JOIN segment_snapshot_member m
             ON m.tenant_id = (SELECT leo_current_tenant()) AND m.profile_id = i.profile_id
            AND m.profile_version = i.version
           JOIN dispatch d
             ON d.tenant_id = m.tenant_id AND d.snapshot_id = m.snapshot_id
            AND d.state = 'waiting_for_snapshot'
           ORDER BY d.dispatch_id)
