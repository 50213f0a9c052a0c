"""The provider webhook gateway (``leo-activation gateway``): HTTP callbacks -> receipts.

One endpoint per provider and tenant, ``POST /v1/<provider>/<tenant_id>``. A request is verified
with that tenant's key for that provider, its events are mapped to ``DeliveryReceipt`` records
(ids and times from the payload only, so a provider's retry gives byte-identical records), and it
is answered 2xx only once Kafka acknowledged every record of it. An event that is signed but
cannot be mapped goes to the dead-letter topic with its raw payload and a reason.

Modules: ``config`` (keys per tenant and provider), ``events`` (what a provider module returns),
``providers/*`` (one per provider: verify + map), ``sink`` (the only module that talks to Kafka),
``app`` (the Starlette application), ``server`` (uvicorn, the CLI entry point).
"""
