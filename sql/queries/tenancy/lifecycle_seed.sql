-- Before the first recorded status change of a tenant that existed before it had a history
-- (created out of band): its previous status, in effect since ever, so the change does not make
-- its older traffic look unregistered. Nothing once the tenant has a history.
INSERT INTO tenant_lifecycle (tenant_id, seq, status, occurred_at, source_timestamp_ms)
SELECT t.tenant_id, 1, %(previous)s, t.created_at, NULL
FROM tenant t
WHERE t.tenant_id = %(tenant_id)s
  AND NOT EXISTS (SELECT 1 FROM tenant_lifecycle l WHERE l.tenant_id = %(tenant_id)s)
