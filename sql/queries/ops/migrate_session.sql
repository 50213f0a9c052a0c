-- A migrate session hears warnings and errors only: a migration's NOTICEs (e.g. "already
-- exists, skipping" of an IF NOT EXISTS) are not news.
SET client_min_messages = warning
