-- Erasure that survives replay: crypto-shredding of the personal fields.
--
-- A profile's personal fields (ext_id, email, mobile number, push token, raw attributes) arrive
-- sealed (ProfileUpsert v4: AES-SIV under a data key of the profile, named by key_id) and are
-- stored sealed, never in plaintext: cdp_profiles, cdp_profile_version and the fan-out's
-- delivery_log rows copy ciphertext. The data keys are a mirror of the compacted profile-keys
-- topic (profile_key); erasing a profile (ProfileErase) destroys every key its versions were
-- sealed under, in the table and, by tombstones, in the topic, so no copy of the ciphertext can
-- be opened again: the append-only history stays as it is. Plaintext is never updated away in
-- place, since PostgreSQL leaves the bytes of dead tuples in the table files.
-- Upserts v1-v3 (plaintext) are still accepted and stored in the plaintext columns.

-- ---------------------------------------------------------------- sealed columns
ALTER TABLE cdp_profiles
    ADD COLUMN IF NOT EXISTS key_id uuid,
    ADD COLUMN IF NOT EXISTS ext_id_sealed bytea,
    ADD COLUMN IF NOT EXISTS email_sealed bytea,
    ADD COLUMN IF NOT EXISTS mobile_number_sealed bytea,
    ADD COLUMN IF NOT EXISTS push_token_sealed bytea,
    ADD COLUMN IF NOT EXISTS raw_attributes_sealed bytea,
    -- when and by which request the profile was last erased (NULL: never)
    ADD COLUMN IF NOT EXISTS erased_at timestamptz,
    ADD COLUMN IF NOT EXISTS erasure_ref text;
ALTER TABLE cdp_profile_version
    ADD COLUMN IF NOT EXISTS key_id uuid,
    ADD COLUMN IF NOT EXISTS ext_id_sealed bytea,
    ADD COLUMN IF NOT EXISTS email_sealed bytea,
    ADD COLUMN IF NOT EXISTS mobile_number_sealed bytea,
    ADD COLUMN IF NOT EXISTS push_token_sealed bytea;
-- a fan-out row's destination, copied sealed from the pinned version (the request is opened
-- with the key only when it is produced)
ALTER TABLE delivery_log
    ADD COLUMN IF NOT EXISTS key_id uuid,
    ADD COLUMN IF NOT EXISTS destination_sealed bytea;

-- ---------------------------------------------------------------- data keys
-- The mirror of the profile-keys topic: one row a live key. Not append-only: a tombstone or an
-- erasure deletes the row. No reference to tenant: the topic is mirrored in whatever order it is
-- read, before or after the tenant's registration. data_key is secret: left out of the state
-- digest and never printed.
CREATE TABLE IF NOT EXISTS profile_key (
    tenant_id            uuid        NOT NULL,
    profile_id           uuid        NOT NULL,
    key_id               uuid        NOT NULL,
    data_key             bytea       NOT NULL CHECK (length(data_key) = 64),
    created_at           timestamptz NOT NULL,
    source_timestamp_ms  bigint      NOT NULL,  -- provenance: when the key was published
    PRIMARY KEY (tenant_id, profile_id, key_id)
);
SELECT leo_isolate_tenant('profile_key');
GRANT SELECT, INSERT, DELETE ON profile_key TO leo_application;

-- ---------------------------------------------------------------- erasures
-- Every erasure applied, append-only: the audit trail of the requests themselves.
CREATE TABLE IF NOT EXISTS profile_erasure (
    tenant_id       uuid        NOT NULL REFERENCES tenant (tenant_id),
    profile_id      uuid        NOT NULL,
    request_ref     text        NOT NULL CHECK (length(request_ref) <= 200),
    erased_at       timestamptz NOT NULL,
    correlation_id  text,
    PRIMARY KEY (tenant_id, profile_id, request_ref)
);
SELECT leo_isolate_tenant('profile_erasure');
SELECT leo_make_append_only('profile_erasure');

-- The keys an erasure destroyed: those of the profile's versions applied before it (the same set
-- in every run: a profile's upserts and erasures share a partition). A destroyed key that is read
-- again from the topic (a rebuild before compaction) is not mirrored, and a dispatch whose member
-- pinned a version under it does not wait for it.
CREATE TABLE IF NOT EXISTS profile_erased_key (
    tenant_id    uuid NOT NULL REFERENCES tenant (tenant_id),
    profile_id   uuid NOT NULL,
    key_id       uuid NOT NULL,
    request_ref  text NOT NULL,
    PRIMARY KEY (tenant_id, profile_id, key_id)
);
SELECT leo_isolate_tenant('profile_erased_key');
SELECT leo_make_append_only('profile_erased_key');

-- The fan-out and its triggers find the versions sealed under a key.
CREATE INDEX IF NOT EXISTS cdp_profile_version_key
    ON cdp_profile_version (tenant_id, profile_id, key_id) WHERE key_id IS NOT NULL;

-- Like the other personal columns (0011): no planner statistics to probe across tenants.
ALTER TABLE cdp_profiles ALTER COLUMN ext_id_sealed SET STATISTICS 0;
ALTER TABLE cdp_profiles ALTER COLUMN email_sealed SET STATISTICS 0;
ALTER TABLE cdp_profiles ALTER COLUMN mobile_number_sealed SET STATISTICS 0;
ALTER TABLE cdp_profiles ALTER COLUMN push_token_sealed SET STATISTICS 0;
ALTER TABLE cdp_profiles ALTER COLUMN raw_attributes_sealed SET STATISTICS 0;
ALTER TABLE cdp_profiles ALTER COLUMN erasure_ref SET STATISTICS 0;
ALTER TABLE cdp_profile_version ALTER COLUMN ext_id_sealed SET STATISTICS 0;
ALTER TABLE cdp_profile_version ALTER COLUMN email_sealed SET STATISTICS 0;
ALTER TABLE cdp_profile_version ALTER COLUMN mobile_number_sealed SET STATISTICS 0;
ALTER TABLE cdp_profile_version ALTER COLUMN push_token_sealed SET STATISTICS 0;
ALTER TABLE delivery_log ALTER COLUMN destination_sealed SET STATISTICS 0;
ALTER TABLE profile_key ALTER COLUMN tenant_id SET STATISTICS 0;
ALTER TABLE profile_key ALTER COLUMN data_key SET STATISTICS 0;
ALTER TABLE profile_erasure ALTER COLUMN tenant_id SET STATISTICS 0;
ALTER TABLE profile_erasure ALTER COLUMN request_ref SET STATISTICS 0;
ALTER TABLE profile_erased_key ALTER COLUMN tenant_id SET STATISTICS 0;
