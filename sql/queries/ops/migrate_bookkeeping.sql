-- Bookkeeping of `leo-activation migrate` (leo_activation/migrate.py). Owner-only: the schema
-- grants nothing to PUBLIC, so the application role cannot even see that the table exists.
CREATE SCHEMA IF NOT EXISTS leo_meta;
REVOKE ALL ON SCHEMA leo_meta FROM PUBLIC;
CREATE TABLE IF NOT EXISTS leo_meta.leo_schema_migrations (
    name        text        PRIMARY KEY,
    checksum    text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON leo_meta.leo_schema_migrations FROM PUBLIC;
