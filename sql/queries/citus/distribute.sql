-- Distribute a tenant table by tenant_id, co-located with `tenant` (a tenant's rows of every
-- table on one shard group), or `tenant` itself with the cluster's shard count.
SELECT create_distributed_table(%(table)s::regclass, 'tenant_id',
                                colocate_with => %(colocate_with)s::text)
