-- Whether the coordinator's own files of a distributed table (or of its partitions) still hold
-- rows: those of a database distributed while it had some (truncate_local.sql empties them).
SELECT pg_relation_size(%(table)s::regclass) > 0
    OR coalesce((SELECT sum(pg_relation_size(relid))
                 FROM pg_partition_tree(%(table)s::regclass)), 0) > 0
