-- The settings a row's ::text is read under by the state digest and verify, so that both print
-- every timestamp and float the same way whatever the server's or the role's defaults are.
-- Transaction-local: they end with the reading transaction.
SET LOCAL TimeZone = 'UTC';
SET LOCAL extra_float_digits = 1
