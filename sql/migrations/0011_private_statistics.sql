-- Row-level security hides rows, not the planner's statistics: a role that may read a table but
-- sees none of its rows (the application role with no tenant set) could still read other
-- tenants' values back from EXPLAIN row estimates, by moving a probed value across the column's
-- histogram bounds and most common values. Tenant ids and personal data therefore keep no
-- statistics: estimates for them fall back to defaults that do not move with the value probed.
-- Every other column keeps its statistics for the planner. A later migration that adds a
-- personal column to a table under row-level security gives it statistics 0 the same way.
DO $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT n.nspname, c.relname, a.attname
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = current_schema()
          AND c.relkind IN ('r', 'p')
          AND c.relrowsecurity
          AND (a.attname = 'tenant_id'
               OR (c.relname, a.attname) IN (
                   ('tenant', 'tenant_name'),
                   ('cdp_profiles', 'ext_id'), ('cdp_profiles', 'email'),
                   ('cdp_profiles', 'mobile_number'), ('cdp_profiles', 'push_token'),
                   ('cdp_profiles', 'raw_attributes'),
                   ('cdp_profile_version', 'ext_id'), ('cdp_profile_version', 'email'),
                   ('cdp_profile_version', 'mobile_number'), ('cdp_profile_version', 'push_token'),
                   ('delivery_log', 'destination'), ('delivery_log', 'provider_response'),
                   ('delivery_log', 'provider_message_id')))
        ORDER BY c.relname, a.attnum
    LOOP
        EXECUTE format('ALTER TABLE %I.%I ALTER COLUMN %I SET STATISTICS 0',
                       col.nspname, col.relname, col.attname);
        -- ANALYZE skips such a column from now on but leaves what it gathered before.
        IF to_regprocedure('pg_clear_attribute_stats(text, text, text, boolean)') IS NOT NULL THEN
            EXECUTE 'SELECT pg_clear_attribute_stats($1, $2, $3, false), '
                    'pg_clear_attribute_stats($1, $2, $3, true)'
                USING col.nspname, col.relname, col.attname;
        ELSIF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            DELETE FROM pg_statistic s
            USING pg_attribute a
            WHERE s.starelid = format('%I.%I', col.nspname, col.relname)::regclass
              AND a.attrelid = s.starelid AND a.attnum = s.staattnum AND a.attname = col.attname;
        ELSE
            RAISE WARNING 'statistics gathered before on %.% remain until a superuser clears them',
                col.relname, col.attname;
        END IF;
    END LOOP;
END
$$;
