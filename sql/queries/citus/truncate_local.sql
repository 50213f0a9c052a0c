-- The coordinator's own copy of a table distributed with rows in it: create_distributed_table
-- copies the rows into the shards and leaves them in the coordinator's table files, never read
-- again but on its disk (an erased profile's plaintext among them, for a database that was
-- single-server before erasure). Empties those files; the rows live on in the shards.
SELECT truncate_local_data_after_distributing_table(%(table)s::regclass)
