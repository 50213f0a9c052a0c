-- Migrations applied to a database (leo_activation/ops/verify.py compares the live one with the
-- scratch rebuild: a live database behind the code cannot be compared table for table).
SELECT name, checksum FROM leo_meta.leo_schema_migrations ORDER BY name
