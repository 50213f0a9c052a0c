-- Whether the connected role reads every tenant's rows: row-level security does not apply to a
-- superuser or a BYPASSRLS role.
SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user
