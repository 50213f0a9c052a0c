-- Late and out-of-order receipts (operations): receipts that reached the database after a fact
-- the provider stamped later. Status precedence keeps current status right regardless; this shows
-- how often providers' callbacks arrive out of order. May be empty.
-- Run as the application role in a tenant's transaction (RLS scopes it to that tenant).
-- columns: delivery_id, delivery_status, occurred_at, provider, ingested_at, current_status
SELECT
    h.delivery_id,
    h.delivery_status,
    h.occurred_at,
    h.provider,
    h.ingested_at,
    s.current_status
FROM delivery_history h
JOIN delivery_status_current s ON s.tenant_id = h.tenant_id AND s.delivery_id = h.delivery_id
WHERE h.arrived_late
ORDER BY h.ingested_at, h.delivery_id, h.occurred_at
