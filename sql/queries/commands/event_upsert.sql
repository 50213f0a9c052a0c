-- Define or redefine a marketing event (a redefinition replaces the whole definition, embedding
-- included). A definition not newer than the stored one changes nothing; status is kept apart
-- (marketing_event_status_history, event_status_refresh.sql). The embedding arrives as pgvector
-- text ('[0.1,0.2,...]'), already checked: 384 finite floats.
INSERT INTO marketing_event AS e (tenant_id, event_id, campaign_id, event_key, event_name,
    event_type, event_channel, start_at, end_at, embedding, status, created_at, updated_at)
VALUES (%(tenant_id)s, %(event_id)s, %(campaign_id)s, %(event_key)s, %(event_name)s,
    %(event_type)s, %(event_channel)s, %(start_at)s, %(end_at)s, %(embedding)s::vector,
    %(status)s, %(occurred_at)s, %(occurred_at)s)
ON CONFLICT (tenant_id, event_id) DO UPDATE SET
    event_name = EXCLUDED.event_name,
    event_type = EXCLUDED.event_type,
    event_channel = EXCLUDED.event_channel,
    start_at = EXCLUDED.start_at,
    end_at = EXCLUDED.end_at,
    embedding = EXCLUDED.embedding,
    updated_at = EXCLUDED.updated_at
WHERE e.updated_at < EXCLUDED.updated_at
