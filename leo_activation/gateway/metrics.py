"""Prometheus metrics of the gateway (``GET /metrics``), labelled by provider, never by tenant.

========================================== ========= ==========================================
name                                       type      meaning
========================================== ========= ==========================================
``leo_gateway_requests_total{provider,     counter   requests answered, by HTTP status
code}``
``leo_gateway_events_total{provider,       counter   events by outcome: ``produced``,
outcome}``                                           ``dead_lettered``, ``ignored`` (a step
                                                     with no receipt, an SNS confirmation)
``leo_gateway_request_seconds{provider}``  histogram time from request to answer
========================================== ========= ==========================================
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

registry = CollectorRegistry()
requests = Counter(
    "leo_gateway_requests", "requests answered", ["provider", "code"], registry=registry
)
events = Counter("leo_gateway_events", "events by outcome", ["provider", "outcome"],
                 registry=registry)  # fmt: skip
latency = Histogram(
    "leo_gateway_request_seconds",
    "time from request to answer",
    ["provider"],
    registry=registry,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
