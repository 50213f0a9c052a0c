-- Take migrate's session advisory lock if it is free (true), without waiting.
SELECT pg_try_advisory_lock(%(key)s)
