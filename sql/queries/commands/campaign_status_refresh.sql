-- A campaign's current status is its latest recorded one, so an older change arriving later never
-- overrides a newer one. Equal times: the most final status wins (completed > paused > active),
-- so the answer does not depend on the order the changes were applied in.
UPDATE campaign c SET status = latest.status
FROM (
    SELECT h.status FROM campaign_status_history h
    WHERE h.tenant_id = %(tenant_id)s AND h.campaign_id = %(campaign_id)s
    ORDER BY h.changed_at DESC,
             array_position(ARRAY['active', 'paused', 'completed'], h.status) DESC
    LIMIT 1
) latest
WHERE c.tenant_id = %(tenant_id)s AND c.campaign_id = %(campaign_id)s
  AND c.status IS DISTINCT FROM latest.status
