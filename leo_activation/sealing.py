"""Personal fields sealed under per-profile data keys (crypto-shredding).

A profile's personal fields (``SEALED_FIELDS``) travel and rest as AES-SIV ciphertext under a
data key of that profile; erasing the profile destroys its keys, which makes every copy of the
ciphertext — in the topics, their replicas, the database and its backups — unreadable at once.
SIV is deterministic (RFC 5297): the same plaintext under the same key gives the same bytes, so
a re-published profile version is byte-identical and the consumers' version checks keep working.
The field's name is the associated data, so a value sealed as one field cannot be passed off as
another.
"""

from __future__ import annotations

import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from leo_activation.errors import LeoError

ALGORITHM = "AES-SIV-512"  # AES-256 in SIV mode: 64 key bytes (two AES-256 keys)
KEY_BYTES = 64
SIV_TAG_BYTES = 16
SEALED_FIELDS = ("ext_id", "email", "mobile_number", "push_token", "raw_attributes")
#: the profile field a channel's destination is taken from
DESTINATION_FIELD = {"email": "email", "sms": "mobile_number", "zalo": "mobile_number",
                     "push": "push_token"}  # fmt: skip


class Unreadable(LeoError):
    """Ciphertext that does not open under the key given (a wrong or damaged key or value)."""


def new_data_key() -> tuple[uuid.UUID, bytes]:
    """A fresh key id and data key (the only random values in the product: they name nothing
    stored by the consumers, which read the key from the keys topic)."""
    return uuid.uuid4(), os.urandom(KEY_BYTES)


def seal(data_key: bytes, field: str, plaintext: str) -> bytes:
    return AESSIV(data_key).encrypt(plaintext.encode("utf-8"), [field.encode()])


def unseal(data_key: bytes, field: str, sealed: bytes) -> str:
    try:
        return AESSIV(data_key).decrypt(bytes(sealed), [field.encode()]).decode("utf-8")
    except (InvalidTag, ValueError, UnicodeDecodeError) as exc:
        raise Unreadable(f"{field} does not open under its data key") from exc
