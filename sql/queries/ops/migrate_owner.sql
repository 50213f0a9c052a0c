-- The migrating (owner) role and the database it migrates.
SELECT current_user, current_database()
