-- Citus in a database of one node (every node of the cluster needs it).
CREATE EXTENSION IF NOT EXISTS citus
