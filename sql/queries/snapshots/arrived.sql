-- How many of the sequences 1..as_of have arrived (the key makes each count once): complete when
-- this equals as_of.
SELECT count(*) FROM segment_membership_change
WHERE tenant_id = %(tenant_id)s AND segment_key = %(segment_key)s
  AND sequence <= %(as_of)s
