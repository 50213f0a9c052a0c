-- Whether this database has been migrated (the analyst view the demo reads exists).
SELECT to_regclass('delivery_trace') IS NOT NULL
