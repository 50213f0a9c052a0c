-- The sealed destinations of a delivery's rows or of a profile's, with the data key that opens
-- them (NULL: destroyed by an erasure, or not mirrored yet).
SELECT l.log_id, l.delivery_id, l.channel, l.destination_sealed, k.data_key
FROM delivery_log l
LEFT JOIN profile_key k
  ON k.tenant_id = l.tenant_id AND k.profile_id = l.profile_id AND k.key_id = l.key_id
WHERE l.tenant_id = %(tenant_id)s AND l.destination_sealed IS NOT NULL
  AND (l.delivery_id = %(delivery_id)s OR l.profile_id = %(profile_id)s)
