-- The server process holding migrate's session advisory lock on this database, if any.
-- A bigint advisory key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits).
SELECT pid
FROM pg_locks
WHERE locktype = 'advisory'
  AND granted
  AND objsubid = 1
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((classid::bigint << 32) | objid::bigint) = %(key)s
LIMIT 1
