-- Record a marketing event status as of a time (insert-only history; a replay hits the key).
INSERT INTO marketing_event_status_history (tenant_id, event_id, changed_at, status)
VALUES (%(tenant_id)s, %(event_id)s, %(occurred_at)s, %(status)s)
ON CONFLICT (tenant_id, event_id, changed_at, status) DO NOTHING
