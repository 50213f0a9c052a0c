-- Record a migration as applied, in the transaction that applied it.
INSERT INTO leo_meta.leo_schema_migrations (name, checksum) VALUES (%(name)s, %(checksum)s)
