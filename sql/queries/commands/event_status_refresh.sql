-- An event's current status is its latest recorded one. Equal times: the most final status wins
-- (cancelled > active > planned), whatever order the changes were applied in.
UPDATE marketing_event e SET status = latest.status
FROM (
    SELECT h.status FROM marketing_event_status_history h
    WHERE h.tenant_id = %(tenant_id)s AND h.event_id = %(event_id)s
    ORDER BY h.changed_at DESC,
             array_position(ARRAY['planned', 'active', 'cancelled'], h.status) DESC
    LIMIT 1
) latest
WHERE e.tenant_id = %(tenant_id)s AND e.event_id = %(event_id)s
  AND e.status IS DISTINCT FROM latest.status
