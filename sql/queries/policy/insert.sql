-- A contact policy command into the tenant's policy history, numbered after the tenant's earlier
-- ones (its commands are applied in order). A redelivered command hits its key (policy_id hashes
-- the command) and adds nothing. Selected from the tenant's own row (commands are applied only for
-- a registered tenant), so Citus runs the statement on the tenant's shard.
INSERT INTO contact_policy (tenant_id, policy_id, seq, channel, consent_required, cap_max,
    cap_window, occurred_at, correlation_id)
SELECT t.tenant_id, %(policy_id)s,
       coalesce((SELECT max(p.seq) FROM contact_policy p WHERE p.tenant_id = %(tenant_id)s), 0)
           + 1,
       %(channel)s, %(consent_required)s, %(frequency_cap_max)s,
       make_interval(secs => %(frequency_cap_window_s)s), %(occurred_at)s, %(correlation_id)s
FROM tenant t
WHERE t.tenant_id = %(tenant_id)s
ON CONFLICT (tenant_id, policy_id) DO NOTHING
