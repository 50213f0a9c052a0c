"""The native hot path: the ``leo_native`` extension (built from ``native/`` by
``scripts/bootstrap.sh``) decodes, validates and prepares the rows of a whole batch at once.

For each message it answers either the row the topic's handler would prepare, or None: "ask the
Python path", which then decodes that message as if there were no extension (and words any
rejection). So the extension only ever takes a message the Python path would take, and gives the
same row; tests/test_native.py holds the two to that. A machine without the extension runs the
Python path alone.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Collection, Mapping
from typing import Any, Protocol, cast

from leo_activation import contracts, ids
from leo_activation.codec import Catalog

# (kind, tenant id as text, correlation id, COPY line, row key): see handler.Row
Prepared = tuple[str, str, str | None, bytes, tuple[Any, ...] | None]


# what the consumers' own checks allow, by name (a handler's ``native_rules``): the channels and
# states a profile's consent fact may name
NativeRules = Mapping[str, Collection[str]]


class NativeDecoder(Protocol):
    def kinds(self) -> list[str]: ...

    def prepare(
        self,
        topics: list[str],
        values: list[bytes | None],
        partitions: list[int],
        offsets: list[int],
        header_correlations: list[str | None],
    ) -> list[Prepared | None]: ...


def available() -> bool:
    return _module() is not None


def _module() -> Any | None:
    try:
        return importlib.import_module("leo_native")
    except ImportError:
        return None


def native_decoder(cat: Catalog, rules: NativeRules | None = None) -> NativeDecoder | None:
    """A native decoder of the catalog's versions, or None without the extension. The limits
    and ``rules`` come from the Python path, so that both accept the same messages."""
    module = _module()
    if module is None:
        return None
    kinds = {v.kind for v in cat.versions}
    versions = [
        (
            v.fingerprint,
            v.topic,
            v.kind,
            json.dumps(v.schema),
            json.dumps(cat.latest(v.kind).schema),
        )
        for v in cat.versions
    ]
    checks = {
        kind: {
            c.name: (c.max_len, c.is_json, c.is_labels) for c in contracts._checks(cat.latest(kind))
        }
        for kind in kinds
    }
    # 0 means no limit on the digits of an integer json.loads reads
    max_int_digits = sys.get_int_max_str_digits() or sys.maxsize
    decoder = module.Decoder(
        versions,
        checks,
        contracts.MAX_JSON_DEPTH,
        max_int_digits,
        contracts.DEFAULT_MAX_TEXT,
        ids._NAMESPACE.bytes,
        sorted((rules or {}).get("consent_channels", ())),
        sorted((rules or {}).get("consent_states", ())),
    )
    return cast(NativeDecoder, decoder)
