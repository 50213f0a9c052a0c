-- Provider receipts from the staging table into the append-only delivery_log; returns how many
-- were new. log_id hashes the receipt's whole content: an identical duplicate hits the key and is
-- skipped. Counted from RETURNING, not from the command's row count: on Citus, whose coordinator
-- runs this statement (the staging table is its own), the row count is the rows it sent.
WITH written AS (
    INSERT INTO delivery_log (
        tenant_id, log_id, delivery_id, channel, destination, delivery_status, provider,
        provider_message_id, provider_response, sent_at, correlation_id,
        source_topic, source_partition, source_offset)
    SELECT tenant_id, log_id, delivery_id, channel, destination, delivery_status, provider,
        provider_message_id, provider_response, sent_at, correlation_id,
        source_topic, source_partition, source_offset
    FROM stage_delivery_log
    ON CONFLICT (tenant_id, log_id) DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM written
