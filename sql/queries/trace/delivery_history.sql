-- trace delivery: every delivery_log fact of one delivery in provider-time order, the current one
-- marked, with where each fact was read from (provenance) and whether it arrived late.
SELECT
    h.step, h.log_id, h.delivery_status, h.occurred_at, h.provider, h.provider_message_id,
    h.provider_response, h.reason, h.channel, h.destination, h.correlation_id, h.is_current,
    h.arrived_late, h.source_topic, h.source_partition, h.source_offset, h.ingested_at
FROM delivery_history h
WHERE h.tenant_id = %(tenant_id)s AND h.delivery_id = %(delivery_id)s
ORDER BY h.step
