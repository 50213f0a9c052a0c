-- The queued rows of one dispatch, read back in delivery order while its requests are produced
-- (dispatch fan-out streams them instead of holding a million requests in memory). Partial: the
-- receipt rows (no dispatch) never pay for it.
CREATE INDEX IF NOT EXISTS delivery_log_dispatch_queued
    ON delivery_log (tenant_id, dispatch_id, delivery_id)
    WHERE dispatch_id IS NOT NULL AND delivery_status = 'queued';
