-- Consent and contact pressure, decided at fan-out as deterministically as the destination is.
--
-- Consent facts come from the CDP with each profile version (ProfileUpsert v3): per channel, the
-- state (granted / revoked), its legal basis, source and business time. A member's consent is the
-- one its join's pinned version carried, never the profile's latest, for the reason 0003 pins
-- destinations. Shape: {"<channel>": {"state", "legal_basis", "source", "occurred_at"}}.
ALTER TABLE cdp_profiles ADD COLUMN IF NOT EXISTS consents jsonb NOT NULL DEFAULT '{}';
ALTER TABLE cdp_profile_version ADD COLUMN IF NOT EXISTS consents jsonb NOT NULL DEFAULT '{}';
ALTER TABLE cdp_profiles ALTER COLUMN consents SET STATISTICS 0;
ALTER TABLE cdp_profile_version ALTER COLUMN consents SET STATISTICS 0;

-- A tenant's contact policy per channel, set by commands (ContactPolicySet): whether a recipient
-- needs a granted consent for the channel, and a frequency cap (at most cap_max deliveries per
-- profile within cap_window of business time). History, numbered per tenant in command order
-- (seq); the policy in effect is the channel's newest. policy_id hashes the command, so a
-- redelivered command is the same row.
CREATE TABLE IF NOT EXISTS contact_policy (
    tenant_id         uuid        NOT NULL REFERENCES tenant (tenant_id),
    policy_id         uuid        NOT NULL,
    seq               integer     NOT NULL CHECK (seq > 0),
    channel           text        NOT NULL CHECK (channel IN ('email', 'sms', 'push', 'zalo')),
    consent_required  boolean     NOT NULL,
    cap_max           integer     CHECK (cap_max > 0),
    cap_window        interval    CHECK (cap_window > interval '0'),
    occurred_at       timestamptz NOT NULL,
    correlation_id    text,
    PRIMARY KEY (tenant_id, policy_id),
    UNIQUE (tenant_id, seq),
    CHECK ((cap_max IS NULL) = (cap_window IS NULL))
);
SELECT leo_isolate_tenant('contact_policy');
SELECT leo_make_append_only('contact_policy');
ALTER TABLE contact_policy ALTER COLUMN tenant_id SET STATISTICS 0;
CREATE INDEX IF NOT EXISTS contact_policy_channel ON contact_policy (tenant_id, channel, seq);

-- What a dispatch captured of the policy when its command was applied, and its place among the
-- tenant's dispatches in command order (dispatch_seq): a capped dispatch counts the deliveries of
-- the dispatches before it, and waits until those near it in business time have fanned out.
ALTER TABLE dispatch ADD COLUMN IF NOT EXISTS dispatch_seq bigint;
ALTER TABLE dispatch ADD COLUMN IF NOT EXISTS consent_required boolean NOT NULL DEFAULT false;
ALTER TABLE dispatch ADD COLUMN IF NOT EXISTS cap_max integer CHECK (cap_max > 0);
ALTER TABLE dispatch ADD COLUMN IF NOT EXISTS cap_window interval CHECK (cap_window > interval '0');
CREATE UNIQUE INDEX IF NOT EXISTS dispatch_seq ON dispatch (tenant_id, dispatch_seq);
CREATE INDEX IF NOT EXISTS dispatch_waiting_channel ON dispatch (tenant_id, channel, dispatch_seq)
    WHERE state = 'waiting_for_snapshot';
