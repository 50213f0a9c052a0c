-- Release migrate's session advisory lock (closing the session would release it too).
SELECT pg_advisory_unlock(%(key)s)
