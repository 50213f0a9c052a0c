-- Activation (issue 5): what the activation commands and the dispatch fan-out need.
--
-- The determinism trap this migration exists for: a delivery's destination (email, phone, push
-- token) comes from the CDP profile, which arrives on the profile-changes topic, while the
-- dispatch arrives on the commands topic. Their interleaving differs between a live run and a
-- replay, so "the profile's current email when the fan-out runs" is not a function of the topics.
-- Instead every segment join pins the CDP profile version it saw (SegmentMembershipChange v2
-- `profile_version`), every profile version is kept (`cdp_profile_version`), a snapshot member
-- carries the version of its latest join, and a dispatch fans out only once its snapshot is sealed
-- AND every pinned version has arrived: the destination is then the pinned version's.

-- ---------------------------------------------------------------- every profile version
-- Append-only history of the CDP's profile upserts (the channel-relevant fields). Equal versions
-- with different content both stay (content_hash is in the key); readers settle them the way the
-- cdp_profiles upsert does: the highest content_hash wins.
CREATE TABLE IF NOT EXISTS cdp_profile_version (
    tenant_id      uuid        NOT NULL REFERENCES tenant (tenant_id),
    profile_id     uuid        NOT NULL,
    version        bigint      NOT NULL CHECK (version >= 0),
    content_hash   bytea       NOT NULL CHECK (length(content_hash) = 32),  -- sha256
    ext_id         text        CHECK (length(ext_id) <= 200),
    email          citext      CHECK (length(email) <= 320),
    mobile_number  text        CHECK (length(mobile_number) <= 32),
    push_token     text        CHECK (length(push_token) <= 512),
    occurred_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, profile_id, version, content_hash)
);

-- The profile version a join pinned (NULL: a v1 producer that pins nothing).
ALTER TABLE segment_membership_change
    ADD COLUMN IF NOT EXISTS profile_version bigint CHECK (profile_version >= 0);
-- The version of the member's latest join up to the snapshot's watermark.
ALTER TABLE segment_snapshot_member
    ADD COLUMN IF NOT EXISTS profile_version bigint CHECK (profile_version >= 0);
-- The profile version a queued / suppressed row took its destination from (audit).
ALTER TABLE delivery_log
    ADD COLUMN IF NOT EXISTS profile_version bigint CHECK (profile_version >= 0);

-- ---------------------------------------------------------------- decisions and dispatches
ALTER TABLE agent_task_status
    ADD COLUMN IF NOT EXISTS correlation_id text CHECK (length(correlation_id) <= 200);

-- A dispatch records, when its command is applied, everything the fan-out needs from the
-- commands topic: the event's channel, its campaign, and whether the event (cancelled) or the
-- campaign (paused / completed) suppresses it. Commands of a tenant are totally ordered, so this
-- is deterministic; reading them again at fan-out time would depend on how far the commands topic
-- had got by then, which is not.
-- state: 'waiting_for_snapshot' = not emitted yet (snapshot not sealed, a pinned profile version
-- missing, or emitted in a Kafka transaction whose post-commit mark has not run);
-- 'fanned_out' = its delivery requests are committed on the delivery-requests topic.
ALTER TABLE dispatch
    ADD COLUMN IF NOT EXISTS campaign_id uuid,
    ADD COLUMN IF NOT EXISTS channel text CHECK (channel IN ('email', 'sms', 'push', 'zalo')),
    ADD COLUMN IF NOT EXISTS suppress_reason text CHECK (length(suppress_reason) <= 2000),
    ADD COLUMN IF NOT EXISTS correlation_id text CHECK (length(correlation_id) <= 200);
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_constraint
                   WHERE conrelid = 'dispatch'::regclass AND conname = 'dispatch_campaign_fkey') THEN
        ALTER TABLE dispatch ADD CONSTRAINT dispatch_campaign_fkey
            FOREIGN KEY (tenant_id, campaign_id) REFERENCES campaign (tenant_id, campaign_id);
    END IF;
END
$$;
-- Dispatches still to fan out, by snapshot: what a seal or an arriving profile version looks up.
CREATE INDEX IF NOT EXISTS dispatch_waiting
    ON dispatch (tenant_id, snapshot_id) WHERE state = 'waiting_for_snapshot';

-- ---------------------------------------------------------------- isolation and privileges
SELECT leo_isolate_tenant('cdp_profile_version');
SELECT leo_make_append_only('cdp_profile_version');
