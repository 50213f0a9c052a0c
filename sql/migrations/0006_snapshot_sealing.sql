-- Snapshot sealing within SPEC §7 (a 1,000,000-member snapshot sealed in <= 10 s), promises kept.
--
-- Sealing writes the snapshot, its members and a row in segment_snapshot_tag_pending in one
-- transaction; tagging the members' cdp_profiles.segment_snapshots (an UPDATE of every member's
-- profile row, the costliest part) runs afterwards in its own transaction, which deletes the
-- pending row (leo_activation.snapshots).

-- ---------------------------------------------------------------- member -> snapshot, per statement
-- The foreign key segment_snapshot_member (tenant_id, snapshot_id) -> segment_snapshot ran one
-- check per inserted member (~1 s of a 300,000-member seal). The same guarantee, checked once per
-- statement over the inserted rows: an insert naming a snapshot that does not exist (as the
-- inserting role sees it: a member's tenant_id is the current tenant's, by the RLS WITH CHECK) is
-- refused with the foreign-key SQLSTATE 23503.
-- The insert side is the whole guarantee: segment_snapshot is append-only (leo_make_append_only:
-- UPDATE, DELETE and TRUNCATE are refused for everyone, the owner included), so a referenced
-- snapshot can never change its key or disappear afterwards, which is all the foreign key's
-- referenced-side triggers were there for. The check sees only committed rows and the statement's
-- own transaction, so it cannot pass on another transaction's uncommitted snapshot either.
-- Relation names are schema-qualified: the application may create temp tables, and pg_temp is
-- searched first.
CREATE OR REPLACE FUNCTION leo_snapshot_members_reference_snapshot() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    missing record;
BEGIN
    SELECT n.tenant_id, n.snapshot_id INTO missing
    FROM (SELECT DISTINCT i.tenant_id, i.snapshot_id FROM inserted_members i) n
    WHERE NOT EXISTS (SELECT FROM public.segment_snapshot s
                      WHERE s.tenant_id = n.tenant_id AND s.snapshot_id = n.snapshot_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert on table "segment_snapshot_member" violates the reference to '
                        'table "segment_snapshot"'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (tenant_id, snapshot_id)=(%s, %s) is not present in '
                                  'table "segment_snapshot".', missing.tenant_id,
                                  missing.snapshot_id),
                  TABLE = 'segment_snapshot_member';
    END IF;
    RETURN NULL;
END
$$;

ALTER TABLE segment_snapshot_member
    DROP CONSTRAINT IF EXISTS segment_snapshot_member_tenant_id_snapshot_id_fkey;
DROP TRIGGER IF EXISTS reference_snapshot ON segment_snapshot_member;
CREATE TRIGGER reference_snapshot AFTER INSERT ON segment_snapshot_member
    REFERENCING NEW TABLE AS inserted_members
    FOR EACH STATEMENT EXECUTE FUNCTION leo_snapshot_members_reference_snapshot();

-- ---------------------------------------------------------------- tagging cdp_profiles
-- Room on each page for a new version of every row on it, so that tagging a snapshot's members
-- is a HOT update (no new entry in the three indexes of cdp_profiles, none of which covers
-- segment_snapshots) and old versions are pruned in place instead of bloating the table. A
-- profile row is ~280 bytes and grows 16 bytes per tag, so only about half-full pages hold a
-- second version of each of their rows. Measured tagging 300,000 members, first snapshot / the
-- next ones: fillfactor 100: 6.1 / 6.3-6.7 s, no HOT update, table 117 MB growing to 260 MB by
-- the third tag; 70: 4.8 / 3.2-3.7 s, 37% HOT at first; 50: 2.0 / 2.5-2.8 s, 93%+ HOT, table
-- 157 MB, 180-195 MB after four tags. Upserts of a profile that keep its email and ext_id are HOT
-- for the same reason. Applies to pages written from now on; an existing table gets it when
-- rewritten (VACUUM FULL, CLUSTER).
ALTER TABLE cdp_profiles SET (fillfactor = 50);

-- The only-grow check (0002) runs its plpgsql only for an update that would drop an entry: the
-- WHEN clause is the function's own test, evaluated without a plpgsql call per row (tagging
-- 300,000 members: 0.2-0.3 s less).
DROP TRIGGER IF EXISTS segment_snapshots_only_grow ON cdp_profiles;
CREATE TRIGGER segment_snapshots_only_grow BEFORE UPDATE OF segment_snapshots ON cdp_profiles
    FOR EACH ROW WHEN (NOT (OLD.segment_snapshots <@ NEW.segment_snapshots))
    EXECUTE FUNCTION leo_segment_snapshots_only_grow();

-- Sealed snapshots whose members' cdp_profiles.segment_snapshots are still to be tagged: a work
-- queue, empty at rest. The seal inserts the row in its transaction; the tagging follow-up
-- deletes it in the transaction that writes the tags. After a crash in between, the re-delivered
-- messages find it (leo_activation.snapshots.seal_ready) and the tagging runs again. Not state:
-- the state digest leaves it out (leo_activation.digest).
CREATE TABLE IF NOT EXISTS segment_snapshot_tag_pending (
    tenant_id    uuid  NOT NULL,
    snapshot_id  uuid  NOT NULL,
    segment_key  text  NOT NULL CHECK (length(segment_key) BETWEEN 1 AND 200),
    PRIMARY KEY (tenant_id, snapshot_id),
    FOREIGN KEY (tenant_id, snapshot_id) REFERENCES segment_snapshot (tenant_id, snapshot_id)
);
SELECT leo_isolate_tenant('segment_snapshot_tag_pending');
-- The one table the application deletes from: a finished work item leaves no history to keep.
GRANT SELECT, INSERT, DELETE ON segment_snapshot_tag_pending TO leo_application;
