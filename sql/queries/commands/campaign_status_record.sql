-- Record a campaign status as of a time (insert-only history; a replay hits the key).
INSERT INTO campaign_status_history (tenant_id, campaign_id, changed_at, status)
VALUES (%(tenant_id)s, %(campaign_id)s, %(occurred_at)s, %(status)s)
ON CONFLICT (tenant_id, campaign_id, changed_at, status) DO NOTHING
