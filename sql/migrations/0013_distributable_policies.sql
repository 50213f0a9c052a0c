-- The tenant policy in a form Citus can distribute (it refuses a policy holding a subquery, and
-- 0002's `(SELECT leo_current_tenant())` is one), with the single server's speed kept.
--
-- USING (tenant_id = leo_current_tenant()): every statement of the application names its tenant
-- as a parameter too (`tenant_id = %(tenant_id)s`, so that Citus routes it to the tenant's one
-- shard), and the planner then folds the two equalities into a one-time check of the function
-- against the parameter, evaluated once per statement like 0002's InitPlan. A statement that
-- names no tenant (an analyst's sample) gets the function as an index condition, also evaluated
-- once; only a sequential scan evaluates it per row.
-- WITH CHECK compares text: it is evaluated for every row written, and the function (a regular
-- expression over the setting) costs microseconds a row there, while the uuid's text against the
-- lower-cased setting costs what 0002's InitPlan did. It accepts exactly what
-- leo_current_tenant() accepts: a uuid's text is its lower-case 8-4-4-4-12 form, so only a
-- setting that the function reads as that uuid can equal it; unset, '' and malformed settings
-- match nothing, and raise nothing.
CREATE OR REPLACE FUNCTION leo_isolate_tenant(tbl regclass) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', tbl);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s USING (tenant_id = leo_current_tenant()) '
        'WITH CHECK (tenant_id::text = lower(current_setting(''app.current_tenant_id'', true)))',
        tbl);
END
$$;

-- Every table 0002-0012 isolated, partitions included, gets the new form.
SELECT leo_isolate_tenant(polrelid)
FROM pg_policy
WHERE polname = 'tenant_isolation'
ORDER BY polrelid::regclass::text;
