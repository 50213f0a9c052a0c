-- Add a worker to this database's cluster (a worker added already keeps its node id).
SELECT citus_add_node(%(host)s, %(port)s)
