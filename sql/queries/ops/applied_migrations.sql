-- Migrations applied to a database, as recorded by migrate (leo_activation/migrate.py checks the
-- files against it; leo_activation/ops/verify.py compares the live one with the scratch rebuild:
-- a live database behind the code cannot be compared table for table).
SELECT name, checksum FROM leo_meta.leo_schema_migrations ORDER BY name
