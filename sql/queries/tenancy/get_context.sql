-- The tenant context in force (NULL or '' when none is set).
SELECT current_setting('app.current_tenant_id', true)
