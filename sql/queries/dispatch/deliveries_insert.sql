-- One fan-out's queued / suppressed rows into the append-only delivery_log. Their ids are a
-- function of (tenant, event, profile, dispatch), so a fan-out applied again (after an aborted
-- Kafka transaction, or a crash before the post-commit mark) hits the key and adds nothing.
INSERT INTO delivery_log (tenant_id, log_id, delivery_id, event_id, profile_id, snapshot_id,
    task_id, dispatch_id, channel, destination, delivery_status, reason, sent_at, correlation_id,
    profile_version, key_id, destination_sealed)
SELECT tenant_id, log_id, delivery_id, event_id, profile_id, snapshot_id, task_id, dispatch_id,
    channel, destination, delivery_status, reason, sent_at, correlation_id, profile_version,
    key_id, destination_sealed
FROM fanout_delivery_log
ON CONFLICT (tenant_id, log_id) DO NOTHING
