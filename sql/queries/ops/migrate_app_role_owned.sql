-- How many relations the application role or its group owns here (row-level security does not
-- apply to a table's owner, so it must own none).
SELECT count(*) FROM pg_class WHERE relowner IN
(SELECT oid FROM pg_roles WHERE rolname IN (%(role)s, %(group)s))
