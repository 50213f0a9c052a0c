-- A table without a tenant: one copy on every node.
SELECT create_reference_table(%(table)s::regclass)
