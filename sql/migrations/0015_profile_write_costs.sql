-- Profile changes at stream speed: their three tables' references to tenant checked once per
-- statement, as delivery_log's are (0007). A foreign key looks each inserted row's tenant up on
-- its own (an SPI query a row, and profile changes insert three rows a message); the
-- statement-level check reads the inserted rows' distinct tenants once. A tenant is
-- never deleted nor truncated (0007), so the referenced side needs no trigger of its own. On
-- Citus each check becomes the foreign key again when the tables are distributed.

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['cdp_profiles', 'cdp_profile_version', 'segment_membership_change']
    LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT IF EXISTS %I',
                       tbl, tbl || '_tenant_id_fkey');
        EXECUTE format('DROP TRIGGER IF EXISTS reference_tenant ON %I', tbl);
        EXECUTE format('CREATE TRIGGER reference_tenant AFTER INSERT ON %I '
                       'REFERENCING NEW TABLE AS inserted_rows FOR EACH STATEMENT '
                       'EXECUTE FUNCTION leo_check_reference(''tenant'', ''tenant_id'')', tbl);
    END LOOP;
END
$$;

-- The foreign keys also refused an UPDATE moving a row to a tenant that does not exist; an
-- insert-only check does not see updates, so a row's tenant never changes at all (the version
-- history is append-only already). Checked only for a row whose tenant_id the UPDATE changes, and
-- after the row-level security's own check, which refuses the application such a move first.
CREATE OR REPLACE FUNCTION leo_refuse_tenant_change() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'update on table "%" would move a row to another tenant', TG_TABLE_NAME
        USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME;
END
$$;
DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['cdp_profiles', 'segment_membership_change'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS tenant_never_changes ON %I', tbl);
        EXECUTE format('CREATE TRIGGER tenant_never_changes AFTER UPDATE OF tenant_id ON %I '
                       'FOR EACH ROW WHEN (OLD.tenant_id IS DISTINCT FROM NEW.tenant_id) '
                       'EXECUTE FUNCTION leo_refuse_tenant_change()', tbl);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------- indexes that skip NULLs
-- A sealed upsert (v4) carries no plaintext ext_id nor email, and an erased profile has neither
-- any more: indexing them cost two index entries per profile written for lookups that never ask
-- for NULL. Partial indexes answer `email = ...` and `ext_id = ...` the same (the planner proves
-- the NOT NULL from the equality).
DROP INDEX IF EXISTS cdp_profiles_email;
CREATE INDEX IF NOT EXISTS cdp_profiles_email_known ON cdp_profiles (tenant_id, email)
    WHERE email IS NOT NULL;
DROP INDEX IF EXISTS cdp_profiles_ext_id;
CREATE INDEX IF NOT EXISTS cdp_profiles_ext_id_known ON cdp_profiles (tenant_id, ext_id)
    WHERE ext_id IS NOT NULL;
