"""The routing table: one handler per input topic, one module each, in the order a tenant's
transaction applies them. Commands come first, so a tenant registered in the batch exists for
its other messages; what only consumers use (snapshots, dispatch, the tenancy rule) lives here
too."""

from __future__ import annotations

from leo_activation.consumers.commands import CommandsHandler
from leo_activation.consumers.profile_changes import ProfileChangesHandler
from leo_activation.consumers.profile_keys import ProfileKeysHandler
from leo_activation.consumers.receipts import ReceiptsHandler
from leo_activation.engine.handler import Handler

HANDLERS: tuple[Handler, ...] = (
    CommandsHandler(),
    ProfileKeysHandler(),
    ProfileChangesHandler(),
    ReceiptsHandler(),
)
