-- Note dispatches as fanned out in this transaction.
INSERT INTO dispatch_emitted (dispatch_id) SELECT unnest(%(dispatch_ids)s::uuid[])
