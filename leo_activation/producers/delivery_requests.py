"""Delivery requests: what a channel connector is asked to send, one per queued delivery of a
dispatch's fan-out (the ``delivery-requests`` topic, keyed by tenant + delivery)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

from leo_activation.engine.handler import Outgoing

TOPIC = "delivery-requests"  # logical
KIND = "delivery_request"


class Dispatch(Protocol):
    """What a request takes from the dispatch it fans out."""

    @property
    def dispatch_id(self) -> uuid.UUID: ...
    @property
    def campaign_id(self) -> uuid.UUID: ...
    @property
    def event_id(self) -> uuid.UUID: ...
    @property
    def snapshot_id(self) -> uuid.UUID: ...
    @property
    def task_id(self) -> uuid.UUID: ...
    @property
    def channel(self) -> str: ...
    @property
    def requested_at(self) -> datetime: ...
    @property
    def correlation_id(self) -> str | None: ...


def delivery_request(
    tenant_id: uuid.UUID,
    d: Dispatch,
    delivery_id: uuid.UUID,
    profile_id: uuid.UUID,
    destination: str,
) -> Outgoing:
    """The DeliveryRequest record of one queued delivery."""
    record = {
        "tenant_id": tenant_id,
        "delivery_id": delivery_id,
        "dispatch_id": d.dispatch_id,
        "campaign_id": d.campaign_id,
        "event_id": d.event_id,
        "profile_id": profile_id,
        "snapshot_id": d.snapshot_id,
        "task_id": d.task_id,
        "channel": d.channel,
        "destination": destination,
        "occurred_at": d.requested_at,
        "correlation_id": d.correlation_id,
    }
    return Outgoing(TOPIC, KIND, record)
