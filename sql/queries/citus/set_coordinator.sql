-- Register the coordinator itself, under the address the workers reach it at.
SELECT citus_set_coordinator_host(%(host)s, %(port)s)
