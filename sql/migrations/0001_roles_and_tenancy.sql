-- Roles, extensions and the tenant-context function every row-level security policy reads.
--
-- The application logs in as its own role (created by `leo-activation migrate` from LEO_DATABASE_URL)
-- and is granted the NOLOGIN group role `leo_application`: it owns nothing, is not superuser and has no
-- BYPASSRLS, so every policy below applies to it.

CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS vector;

-- Roles are cluster-wide: two databases migrating at once may race to create it; either wins.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'leo_application') THEN
        CREATE ROLE leo_application NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO leo_application;

-- The tenant of the current transaction, or NULL: unset, '' (what a pooled session reads back after a
-- SET LOCAL ended) and anything that is not a well-formed uuid all fail closed instead of raising, so
-- a malformed setting can never make one tenant's query error out and another's leak.
CREATE OR REPLACE FUNCTION leo_current_tenant() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN current_setting('app.current_tenant_id', true)
             ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
        THEN current_setting('app.current_tenant_id', true)::uuid
    END
$$;

-- Append-only truth (SPEC §4.5): refuses UPDATE, DELETE and TRUNCATE whoever asks, so even a
-- mis-granted role cannot rewrite history. Privileges refuse them too; this is the second lock.
CREATE OR REPLACE FUNCTION leo_refuse_rewrite() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only: % refused (write a new row instead)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
