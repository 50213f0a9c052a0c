-- A contact policy command into the tenant's policy history, numbered after the tenant's earlier
-- ones (its commands are applied in order). A redelivered command hits its key (policy_id hashes
-- the command) and adds nothing.
INSERT INTO contact_policy (tenant_id, policy_id, seq, channel, consent_required, cap_max,
    cap_window, occurred_at, correlation_id)
SELECT (SELECT leo_current_tenant()), %(policy_id)s,
       coalesce((SELECT max(seq) FROM contact_policy
                 WHERE tenant_id = (SELECT leo_current_tenant())), 0) + 1,
       %(channel)s, %(consent_required)s, %(frequency_cap_max)s,
       make_interval(secs => %(frequency_cap_window_s)s), %(occurred_at)s, %(correlation_id)s
ON CONFLICT (tenant_id, policy_id) DO NOTHING
