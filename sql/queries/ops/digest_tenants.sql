-- Every tenant id (needs a role that reads all tenants: digest_reads_all_tenants.sql).
SELECT tenant_id FROM tenant ORDER BY tenant_id
