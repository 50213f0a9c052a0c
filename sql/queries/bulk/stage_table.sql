-- A psycopg.sql template, not runnable as it is: leo_activation/bulk.py formats the stage's name
-- (first placeholder) and the table it is shaped like (second) into it.
-- The stage is per session and emptied at every commit; the DELETE empties it for a second
-- stage of the same table in one transaction (and finds nothing otherwise: a TRUNCATE would
-- give the table a new file every time). No parameters, so one round trip runs both.
CREATE TEMP TABLE IF NOT EXISTS {0} (LIKE {1} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;
DELETE FROM {0}
