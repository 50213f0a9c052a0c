-- The profile's keys in the mirror published at or before an erasure (Kafka time): keys a key
-- ring made for data it published before the erasure, whether or not that data was applied (a
-- dead-lettered upsert's key too). Their tombstones go out with the erasure; keys published after
-- it, for data the CDP sent after it, are left alone.
SELECT key_id FROM profile_key
WHERE tenant_id = %(tenant_id)s AND profile_id = %(profile_id)s
  AND source_timestamp_ms <= %(published_ms)s
ORDER BY key_id
