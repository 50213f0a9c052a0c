-- A table's tenant policy again, in the form of this database (leo_isolate_tenant, 0013).
SELECT leo_isolate_tenant(%(table)s::regclass)
