"""Where provider callbacks echo a recipient's address, and how it is left out.

A provider's callback names the recipient (SendGrid ``email``, Mailgun ``recipient`` and the
message's ``headers``, Postmark ``Recipient``/``Email``, SES ``mail.destination``,
``commonHeaders`` and the recipients of a bounce, complaint or delivery, Twilio ``To``, Zalo's
``recipient``). The gateway drops those fields before it publishes a receipt, and the receipts
consumer drops them from whatever another connector published, so no receipt row holds an
address (erasure could not reach it in the append-only log). The key names are matched at any
depth, ASCII case-insensitively (the native path matches exactly the same keys).
"""

from __future__ import annotations

from typing import Any

ADDRESS_KEYS = frozenset(
    {
        "email", "recipient", "recipients", "to", "destination", "emailaddress", "phone",
        "phonenumber", "mobile", "mobile_number", "address", "headers", "commonheaders",
    }
)  # fmt: skip


def is_address_key(key: str) -> bool:
    return key.isascii() and key.lower() in ADDRESS_KEYS


def without_addresses(value: Any) -> Any:
    """A parsed JSON value with every address field left out, at any depth."""
    if isinstance(value, dict):
        return {k: without_addresses(v) for k, v in value.items() if not is_address_key(k)}
    if isinstance(value, list):
        return [without_addresses(v) for v in value]
    return value
