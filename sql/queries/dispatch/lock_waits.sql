-- One tenant's cross-topic waits, decided one transaction at a time: a snapshot request and the
-- membership changes it waits for, a dispatch and the seal or the profile versions it waits for
-- arrive on different topics, so two consumers can apply the two halves at once. Each would find
-- the other's half uncommitted and leave the wait to a trigger that never comes. Taken before
-- a transaction records its half and checks the other, and held to its commit: the second
-- transaction's checks then see what the first committed.
SELECT pg_advisory_xact_lock(hashtextextended('leo-activation waits ' || %(tenant_id)s, 0))
