-- The dispatches fanned out in this transaction so far (scratch_tables.sql).
SELECT coalesce(array_agg(dispatch_id), '{}') FROM dispatch_emitted
