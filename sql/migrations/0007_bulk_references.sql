-- Receipts at stream speed (SPEC §7): the per-row costs of writing delivery_log, measured on
-- 2,000-row INSERT ... SELECT statements from the staging table (~13 us a row in all).

-- ---------------------------------------------------------------- references, per statement
-- A foreign key checks each inserted row on its own (a lookup through SPI: ~3.5 us a receipt).
-- The same guarantee, checked once per statement over the inserted rows (a transition table):
-- the trigger's arguments are the referenced table and the referencing columns, named alike on
-- both sides. Refused with the foreign-key SQLSTATE 23503. The check sees what the inserting role
-- sees: the RLS WITH CHECK already makes a row's tenant_id the current tenant's, and that
-- tenant's rows are visible to it. The referenced side keeps its guarantee by never losing a row
-- (see each use). Relation names are schema-qualified: pg_temp is searched first.
CREATE OR REPLACE FUNCTION leo_check_reference() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    referenced text := TG_ARGV[0];
    columns    text[] := string_to_array(TG_ARGV[1], ',');
    col_list   text := (SELECT string_agg(quote_ident(c), ', ') FROM unnest(columns) c);
    missing    text;
BEGIN
    EXECUTE format(
        'SELECT row(%1$s)::text FROM (SELECT DISTINCT %1$s FROM inserted_rows) n '
        'WHERE NOT EXISTS (SELECT FROM public.%2$I r WHERE (%3$s) = (%4$s)) LIMIT 1',
        col_list, referenced,
        (SELECT string_agg('r.' || quote_ident(c), ', ') FROM unnest(columns) c),
        (SELECT string_agg('n.' || quote_ident(c), ', ') FROM unnest(columns) c))
    INTO missing;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'insert on table "%" violates the reference to table "%"',
                TG_TABLE_NAME, referenced
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (%s)=%s is not present in table "%s".', col_list, missing,
                                  referenced),
                  TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$$;

-- segment_snapshot_member -> segment_snapshot (0006) through the shared check. segment_snapshot
-- is append-only: a referenced snapshot never changes its key nor disappears.
DROP TRIGGER IF EXISTS reference_snapshot ON segment_snapshot_member;
CREATE TRIGGER reference_snapshot AFTER INSERT ON segment_snapshot_member
    REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION leo_check_reference('segment_snapshot', 'tenant_id,snapshot_id');
DROP FUNCTION IF EXISTS leo_snapshot_members_reference_snapshot();

-- delivery_log -> tenant. A tenant is disabled, never deleted (its delivery history is append-only
-- truth): DELETE and TRUNCATE of tenant are refused for everyone, the owner included, which is
-- what the foreign key's referenced-side triggers were there for.
ALTER TABLE delivery_log DROP CONSTRAINT IF EXISTS delivery_log_tenant_id_fkey;
DROP TRIGGER IF EXISTS reference_tenant ON delivery_log;
CREATE TRIGGER reference_tenant AFTER INSERT ON delivery_log
    REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION leo_check_reference('tenant', 'tenant_id');

CREATE OR REPLACE FUNCTION leo_refuse_tenant_delete() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'a tenant is never deleted (its history is append-only): disable it instead'
        USING ERRCODE = 'insufficient_privilege';
END
$$;
DROP TRIGGER IF EXISTS tenant_never_deleted ON tenant;
CREATE TRIGGER tenant_never_deleted BEFORE DELETE ON tenant
    FOR EACH ROW EXECUTE FUNCTION leo_refuse_tenant_delete();
DROP TRIGGER IF EXISTS tenant_never_truncated ON tenant;
CREATE TRIGGER tenant_never_truncated BEFORE TRUNCATE ON tenant
    FOR EACH STATEMENT EXECUTE FUNCTION leo_refuse_tenant_delete();

-- ---------------------------------------------------------------- indexes that skip receipts
-- A provider receipt knows its delivery, not the profile or event (those are on the delivery's
-- queued row), so for most delivery_log rows both are NULL; indexing them cost two index entries
-- per receipt for lookups that never ask for NULL. Partial indexes answer `profile_id = ...` and
-- `event_id = ...` the same (the planner proves the NOT NULL from the equality).
DROP INDEX IF EXISTS delivery_log_profile;
CREATE INDEX IF NOT EXISTS delivery_log_profile_known ON delivery_log (tenant_id, profile_id)
    WHERE profile_id IS NOT NULL;
DROP INDEX IF EXISTS delivery_log_event;
CREATE INDEX IF NOT EXISTS delivery_log_event_known ON delivery_log (tenant_id, event_id)
    WHERE event_id IS NOT NULL;
