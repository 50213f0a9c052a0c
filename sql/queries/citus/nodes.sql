-- The active primary nodes of this Citus database, the coordinator (group 0) first: the host and
-- port each is registered under.
SELECT nodename, nodeport FROM pg_dist_node
WHERE isactive AND noderole = 'primary'
ORDER BY groupid, nodeid
