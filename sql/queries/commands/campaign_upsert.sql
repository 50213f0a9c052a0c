-- Define or redefine a campaign. A tenant's commands arrive in issue order; a definition not newer
-- than the stored one (a replay, a late copy) changes nothing. updated_at is the time of the
-- definition in force; status is kept apart (campaign_status_history, campaign_status_refresh.sql).
INSERT INTO campaign AS c (tenant_id, campaign_id, campaign_code, campaign_name, objective,
    status, start_at, end_at, created_at, updated_at)
VALUES (%(tenant_id)s, %(campaign_id)s, %(campaign_code)s, %(campaign_name)s,
    %(objective)s, %(status)s, %(start_at)s, %(end_at)s, %(occurred_at)s, %(occurred_at)s)
ON CONFLICT (tenant_id, campaign_id) DO UPDATE SET
    campaign_name = EXCLUDED.campaign_name,
    objective = EXCLUDED.objective,
    start_at = EXCLUDED.start_at,
    end_at = EXCLUDED.end_at,
    updated_at = EXCLUDED.updated_at
WHERE c.updated_at < EXCLUDED.updated_at
