-- The extensions the schema needs that this server offers, with the version CREATE EXTENSION
-- would install.
SELECT name, default_version FROM pg_available_extensions
WHERE name IN ('vector', 'citext') ORDER BY name
