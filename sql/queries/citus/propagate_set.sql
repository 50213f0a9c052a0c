-- Whether this database passes a transaction's SET LOCAL commands on to the workers (the tenant
-- context, the digest's text settings) for every role: citus.propagate_set_commands = 'local'.
SELECT EXISTS (
    SELECT FROM pg_db_role_setting s
    JOIN pg_database d ON d.oid = s.setdatabase
    WHERE d.datname = current_database() AND s.setrole = 0
      AND 'citus.propagate_set_commands=local' = ANY (s.setconfig))
