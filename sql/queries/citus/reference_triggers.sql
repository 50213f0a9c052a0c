-- The statement-level reference checks (leo_check_reference, 0007) of public's tables: the
-- table, the trigger, and the trigger's two arguments (the referenced table; its columns, comma
-- separated). A shard cannot run their lookup of another table, so on Citus each becomes the
-- foreign key it stands for.
SELECT c.relname, t.tgname,
       (string_to_array(encode(t.tgargs, 'escape'), '\000'))[1] AS referenced,
       (string_to_array(encode(t.tgargs, 'escape'), '\000'))[2] AS columns
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
WHERE NOT t.tgisinternal AND t.tgfoid = 'leo_check_reference()'::regprocedure
ORDER BY c.relname, t.tgname
