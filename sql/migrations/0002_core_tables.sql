-- The founding schema (shared/seed-schema.md) plus what the consumers need to keep SPEC §4.
-- Every table: tenant_id leads every key; RLS enabled and forced with one tenant policy.
-- Deviations from the seed are listed in sql/README.md.
--
-- Column groups: business columns (derived from message content; part of the state digest) and
-- provenance columns `source_topic`, `source_partition`, `source_offset`, `ingested_at` (where and
-- when a row arrived; excluded from the digest because a replay legitimately changes them).

-- Enables and forces row-level security on a table and gives it the one tenant policy.
CREATE OR REPLACE FUNCTION leo_isolate_tenant(tbl regclass) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', tbl);
    -- The sub-select makes the tenant an InitPlan, evaluated once per statement; the bare call
    -- would be inlined and re-checked on every row of a scan (measured ~25x slower on full scans).
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s USING (tenant_id = (SELECT leo_current_tenant())) '
        'WITH CHECK (tenant_id = (SELECT leo_current_tenant()))', tbl);
END
$$;

-- Makes a table append-only for everyone: privileges for the application, a trigger for all.
CREATE OR REPLACE FUNCTION leo_make_append_only(tbl regclass) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE format('DROP TRIGGER IF EXISTS refuse_rewrite ON %s', tbl);
    EXECUTE format('CREATE TRIGGER refuse_rewrite BEFORE UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION leo_refuse_rewrite()', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS refuse_truncate ON %s', tbl);
    EXECUTE format('CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION leo_refuse_rewrite()', tbl);
    EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %s FROM leo_application', tbl);
    EXECUTE format('GRANT SELECT, INSERT ON %s TO leo_application', tbl);
END
$$;

-- ---------------------------------------------------------------- tenant (security boundary)
CREATE TABLE IF NOT EXISTS tenant (
    tenant_id     uuid        NOT NULL PRIMARY KEY,
    tenant_name   text        NOT NULL CHECK (length(tenant_name) BETWEEN 1 AND 200),
    status        text        NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

-- ---------------------------------------------------------------- CDP
CREATE TABLE IF NOT EXISTS cdp_profiles (
    tenant_id          uuid        NOT NULL REFERENCES tenant (tenant_id),
    profile_id         uuid        NOT NULL,
    ext_id             text        CHECK (length(ext_id) <= 200),
    email              citext      CHECK (length(email) <= 320),
    mobile_number      text        CHECK (length(mobile_number) <= 32),
    push_token         text        CHECK (length(push_token) <= 512),
    segments           text[]      NOT NULL DEFAULT '{}',
    data_labels        text[]      NOT NULL DEFAULT '{}',
    segment_snapshots  uuid[]      NOT NULL DEFAULT '{}',
    raw_attributes     jsonb       NOT NULL DEFAULT '{}',
    cdp_version        bigint      NOT NULL,
    content_hash       bytea       NOT NULL,
    updated_at         timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, profile_id)
);
CREATE INDEX IF NOT EXISTS cdp_profiles_email ON cdp_profiles (tenant_id, email);
CREATE INDEX IF NOT EXISTS cdp_profiles_ext_id ON cdp_profiles (tenant_id, ext_id);

-- Every join / leave the CDP published, keyed by its per-segment sequence: the source from which
-- current segments and sealed snapshots are computed, whatever order the changes arrived in.
CREATE TABLE IF NOT EXISTS segment_membership_change (
    tenant_id    uuid        NOT NULL REFERENCES tenant (tenant_id),
    segment_key  text        NOT NULL CHECK (length(segment_key) BETWEEN 1 AND 200),
    sequence     bigint      NOT NULL CHECK (sequence >= 1),
    profile_id   uuid        NOT NULL,
    action       text        NOT NULL CHECK (action IN ('join', 'leave')),
    occurred_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, segment_key, sequence)
);
CREATE INDEX IF NOT EXISTS segment_membership_change_profile
    ON segment_membership_change (tenant_id, profile_id, segment_key, sequence);

-- ---------------------------------------------------------------- strategy and definition
CREATE TABLE IF NOT EXISTS campaign (
    tenant_id      uuid        NOT NULL REFERENCES tenant (tenant_id),
    campaign_id    uuid        NOT NULL,
    campaign_code  text        NOT NULL CHECK (length(campaign_code) BETWEEN 1 AND 200),
    campaign_name  text        NOT NULL CHECK (length(campaign_name) BETWEEN 1 AND 500),
    objective      text        CHECK (length(objective) <= 2000),
    status         text        NOT NULL CHECK (status IN ('active', 'paused', 'completed')),
    start_at       timestamptz,
    end_at         timestamptz,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id),
    UNIQUE (tenant_id, campaign_code),
    CHECK (end_at IS NULL OR start_at IS NULL OR end_at >= start_at)
);

CREATE TABLE IF NOT EXISTS campaign_status_history (
    tenant_id    uuid        NOT NULL,
    campaign_id  uuid        NOT NULL,
    changed_at   timestamptz NOT NULL,
    status       text        NOT NULL CHECK (status IN ('active', 'paused', 'completed')),
    PRIMARY KEY (tenant_id, campaign_id, changed_at, status),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaign (tenant_id, campaign_id)
);

-- Partitioned by tenant as the seed says (hash partitions keep the count fixed as tenants grow).
CREATE TABLE IF NOT EXISTS marketing_event (
    tenant_id      uuid        NOT NULL REFERENCES tenant (tenant_id),
    event_id       uuid        NOT NULL,
    campaign_id    uuid        NOT NULL,
    event_key      text        NOT NULL CHECK (length(event_key) BETWEEN 1 AND 200),
    event_name     text        NOT NULL CHECK (length(event_name) BETWEEN 1 AND 500),
    event_type     text        NOT NULL CHECK (event_type IN ('email', 'webinar', 'push', 'sms', 'zalo')),
    event_channel  text        NOT NULL CHECK (event_channel IN ('email', 'sms', 'push', 'zalo')),
    start_at       timestamptz,
    end_at         timestamptz,
    embedding      vector(384),
    status         text        NOT NULL CHECK (status IN ('planned', 'active', 'cancelled')),
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, event_id),
    UNIQUE (tenant_id, campaign_id, event_key),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaign (tenant_id, campaign_id),
    CHECK (end_at IS NULL OR start_at IS NULL OR end_at >= start_at)
) PARTITION BY HASH (tenant_id);
CREATE TABLE IF NOT EXISTS marketing_event_p0 PARTITION OF marketing_event FOR VALUES WITH (MODULUS 4, REMAINDER 0);
CREATE TABLE IF NOT EXISTS marketing_event_p1 PARTITION OF marketing_event FOR VALUES WITH (MODULUS 4, REMAINDER 1);
CREATE TABLE IF NOT EXISTS marketing_event_p2 PARTITION OF marketing_event FOR VALUES WITH (MODULUS 4, REMAINDER 2);
CREATE TABLE IF NOT EXISTS marketing_event_p3 PARTITION OF marketing_event FOR VALUES WITH (MODULUS 4, REMAINDER 3);
CREATE INDEX IF NOT EXISTS marketing_event_embedding
    ON marketing_event USING hnsw (embedding vector_cosine_ops);

CREATE TABLE IF NOT EXISTS marketing_event_status_history (
    tenant_id   uuid        NOT NULL,
    event_id    uuid        NOT NULL,
    changed_at  timestamptz NOT NULL,
    status      text        NOT NULL CHECK (status IN ('planned', 'active', 'cancelled')),
    PRIMARY KEY (tenant_id, event_id, changed_at, status),
    FOREIGN KEY (tenant_id, event_id) REFERENCES marketing_event (tenant_id, event_id)
);

-- ---------------------------------------------------------------- audience snapshots
-- A request names the CDP's per-segment sequence watermark; it is sealed (a segment_snapshot row
-- plus its members) only once every change up to the watermark has arrived and verified.
CREATE TABLE IF NOT EXISTS segment_snapshot_request (
    tenant_id        uuid        NOT NULL REFERENCES tenant (tenant_id),
    snapshot_id      uuid        NOT NULL,
    segment_key      text        NOT NULL CHECK (length(segment_key) BETWEEN 1 AND 200),
    as_of_sequence   bigint      NOT NULL CHECK (as_of_sequence >= 0),
    snapshot_reason  text        CHECK (length(snapshot_reason) <= 2000),
    expected_count   bigint,
    expected_digest  text,
    requested_at     timestamptz NOT NULL,
    state            text        NOT NULL DEFAULT 'pending'
                                 CHECK (state IN ('pending', 'sealed', 'rejected')),
    state_detail     text,
    PRIMARY KEY (tenant_id, snapshot_id)
);
CREATE INDEX IF NOT EXISTS segment_snapshot_request_pending
    ON segment_snapshot_request (tenant_id, segment_key) WHERE state = 'pending';

CREATE TABLE IF NOT EXISTS segment_snapshot (
    tenant_id        uuid        NOT NULL,
    snapshot_id      uuid        NOT NULL,
    segment_name     text        NOT NULL,
    segment_version  text        NOT NULL,
    as_of_sequence   bigint      NOT NULL,
    snapshot_reason  text,
    member_count     bigint      NOT NULL,
    member_digest    text        NOT NULL,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, snapshot_id),
    FOREIGN KEY (tenant_id, snapshot_id) REFERENCES segment_snapshot_request (tenant_id, snapshot_id)
);

CREATE TABLE IF NOT EXISTS segment_snapshot_member (
    tenant_id    uuid        NOT NULL,
    snapshot_id  uuid        NOT NULL,
    profile_id   uuid        NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, snapshot_id, profile_id),
    FOREIGN KEY (tenant_id, snapshot_id) REFERENCES segment_snapshot (tenant_id, snapshot_id)
);
CREATE INDEX IF NOT EXISTS segment_snapshot_member_profile
    ON segment_snapshot_member (tenant_id, profile_id);

-- ---------------------------------------------------------------- decision (the AI flight recorder)
CREATE TABLE IF NOT EXISTS agent_task (
    tenant_id          uuid        NOT NULL REFERENCES tenant (tenant_id),
    task_id            uuid        NOT NULL,
    task_key           text        NOT NULL CHECK (length(task_key) BETWEEN 1 AND 200),
    agent_name         text        NOT NULL CHECK (length(agent_name) BETWEEN 1 AND 200),
    task_type          text        NOT NULL CHECK (task_type IN ('plan', 'execute', 'evaluate')),
    campaign_id        uuid,
    event_id           uuid,
    snapshot_id        uuid,
    reasoning_summary  text        CHECK (length(reasoning_summary) <= 10000),
    reasoning_trace    jsonb       NOT NULL DEFAULT '{}',
    status             text        NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
    created_at         timestamptz NOT NULL,
    correlation_id     text,
    PRIMARY KEY (tenant_id, task_id),
    FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaign (tenant_id, campaign_id),
    FOREIGN KEY (tenant_id, event_id) REFERENCES marketing_event (tenant_id, event_id),
    FOREIGN KEY (tenant_id, snapshot_id) REFERENCES segment_snapshot_request (tenant_id, snapshot_id)
);

CREATE TABLE IF NOT EXISTS agent_task_status (
    tenant_id          uuid        NOT NULL,
    task_id            uuid        NOT NULL,
    changed_at         timestamptz NOT NULL,
    status             text        NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
    reasoning_summary  text        CHECK (length(reasoning_summary) <= 10000),
    PRIMARY KEY (tenant_id, task_id, changed_at, status),
    FOREIGN KEY (tenant_id, task_id) REFERENCES agent_task (tenant_id, task_id)
);

-- ---------------------------------------------------------------- execution
CREATE TABLE IF NOT EXISTS dispatch (
    tenant_id     uuid        NOT NULL REFERENCES tenant (tenant_id),
    dispatch_id   uuid        NOT NULL,
    dispatch_key  text        NOT NULL,
    event_id      uuid        NOT NULL,
    snapshot_id   uuid        NOT NULL,
    task_id       uuid        NOT NULL,
    requested_at  timestamptz NOT NULL,
    state         text        NOT NULL DEFAULT 'waiting_for_snapshot'
                              CHECK (state IN ('waiting_for_snapshot', 'fanned_out')),
    PRIMARY KEY (tenant_id, dispatch_id),
    FOREIGN KEY (tenant_id, event_id) REFERENCES marketing_event (tenant_id, event_id),
    FOREIGN KEY (tenant_id, snapshot_id) REFERENCES segment_snapshot_request (tenant_id, snapshot_id),
    FOREIGN KEY (tenant_id, task_id) REFERENCES agent_task (tenant_id, task_id)
);

-- The single truth of what was sent: one row per fact (queued, suppressed, each provider receipt).
-- log_id hashes the fact's whole content, so a duplicate receipt collapses onto its first row and
-- two different receipts are both kept. Never updated: current status is a view.
CREATE TABLE IF NOT EXISTS delivery_log (
    tenant_id            uuid        NOT NULL REFERENCES tenant (tenant_id),
    log_id               uuid        NOT NULL,
    delivery_id          uuid        NOT NULL,
    event_id             uuid,
    profile_id           uuid,
    snapshot_id          uuid,
    task_id              uuid,
    dispatch_id          uuid,
    channel              text        CHECK (channel IN ('email', 'sms', 'push', 'zalo')),
    destination          text        CHECK (length(destination) <= 320),
    delivery_status      text        NOT NULL CHECK (delivery_status IN (
                             'queued', 'suppressed', 'sent', 'delivered', 'failed', 'bounced',
                             'opened', 'clicked', 'complained', 'unsubscribed')),
    provider             text        CHECK (length(provider) <= 100),
    provider_message_id  text        CHECK (length(provider_message_id) <= 200),
    provider_response    jsonb       NOT NULL DEFAULT '{}',
    reason               text        CHECK (length(reason) <= 2000),
    sent_at              timestamptz NOT NULL,
    correlation_id       text,
    source_topic         text,
    source_partition     integer,
    source_offset        bigint,
    ingested_at          timestamptz NOT NULL DEFAULT now(),  -- provenance only, not in the digest
    PRIMARY KEY (tenant_id, log_id)
);
CREATE INDEX IF NOT EXISTS delivery_log_delivery ON delivery_log (tenant_id, delivery_id, sent_at);
CREATE INDEX IF NOT EXISTS delivery_log_profile ON delivery_log (tenant_id, profile_id);
CREATE INDEX IF NOT EXISTS delivery_log_event ON delivery_log (tenant_id, event_id);

-- ---------------------------------------------------------------- isolation and privileges
SELECT leo_isolate_tenant(t) FROM unnest(ARRAY[
    'tenant', 'cdp_profiles', 'segment_membership_change', 'campaign', 'campaign_status_history',
    'marketing_event', 'marketing_event_p0', 'marketing_event_p1', 'marketing_event_p2',
    'marketing_event_p3', 'marketing_event_status_history', 'segment_snapshot_request',
    'segment_snapshot', 'segment_snapshot_member', 'agent_task', 'agent_task_status', 'dispatch',
    'delivery_log'
]::regclass[]) AS t;

-- Mutable projections: the application may insert and update, never delete or truncate.
GRANT SELECT, INSERT, UPDATE ON tenant, cdp_profiles, campaign, marketing_event,
    segment_snapshot_request, dispatch TO leo_application;
-- Histories keyed by content: insert-only for the application (no trigger: owners may prune them).
GRANT SELECT, INSERT ON segment_membership_change, campaign_status_history,
    marketing_event_status_history TO leo_application;

SELECT leo_make_append_only(t) FROM unnest(ARRAY[
    'delivery_log', 'segment_snapshot', 'segment_snapshot_member', 'agent_task', 'agent_task_status'
]::regclass[]) AS t;

-- cdp_profiles.segment_snapshots is a denormalised, only-growing list (source of truth:
-- segment_snapshot_member); an update that would drop an entry is refused.
CREATE OR REPLACE FUNCTION leo_segment_snapshots_only_grow() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NOT (OLD.segment_snapshots <@ NEW.segment_snapshots) THEN
        RAISE EXCEPTION 'cdp_profiles.segment_snapshots only grows: profile % would lose entries',
            OLD.profile_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS segment_snapshots_only_grow ON cdp_profiles;
CREATE TRIGGER segment_snapshots_only_grow BEFORE UPDATE OF segment_snapshots ON cdp_profiles
    FOR EACH ROW EXECUTE FUNCTION leo_segment_snapshots_only_grow();
