-- The tables of public not distributed yet (partitions go with their parent), whether each has a
-- tenant_id, and the tables of public each references by foreign key: distribution runs in that
-- order, a referenced table before the tables referencing it.
SELECT c.relname,
       EXISTS (SELECT FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
           AS has_tenant,
       ARRAY(SELECT DISTINCT r.relname::text
             FROM pg_constraint f
             JOIN pg_class r ON r.oid = f.confrelid
             WHERE f.conrelid = c.oid AND f.contype = 'f' AND r.oid <> c.oid
             ORDER BY 1) AS references
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND NOT EXISTS (SELECT FROM pg_dist_partition p WHERE p.logicalrelid = c.oid)
ORDER BY c.relname
