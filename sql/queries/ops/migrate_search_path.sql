-- A migration's objects land in public whatever the admin role's own search_path says.
SET LOCAL search_path = public
