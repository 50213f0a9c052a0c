-- Transaction-scoped scratch space of the dispatch fan-out.
-- dispatch_emitted: dispatches fanned out in this transaction. The durable mark ('fanned_out')
-- is only written after the Kafka transaction committed, so without this a second trigger in the
-- same transaction (a seal and a new profile version in one batch) would emit a dispatch twice.
CREATE TEMP TABLE IF NOT EXISTS dispatch_emitted (
    dispatch_id  uuid PRIMARY KEY
) ON COMMIT DELETE ROWS;
-- fanout_delivery_log: one fan-out's delivery rows, COPYed in chunks (RLS forbids COPY into the
-- real table) and moved into delivery_log with one INSERT ... SELECT.
CREATE TEMP TABLE IF NOT EXISTS fanout_delivery_log (
    LIKE delivery_log INCLUDING DEFAULTS
) ON COMMIT DELETE ROWS;
TRUNCATE fanout_delivery_log
