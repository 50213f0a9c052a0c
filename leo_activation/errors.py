"""The project's own exceptions; driver errors are mapped to these at one boundary each."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from confluent_kafka import KafkaError, KafkaException


class LeoError(Exception):
    """A failure the user can act on; the CLI prints it in one line and exits 1."""


class UsageError(LeoError):
    """Bad invocation or bad input file; the CLI exits 2."""


class PoisonMessage(LeoError):
    """A message that can never be applied: it goes to the dead-letter topic with this reason."""

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, else its class name: driver errors (psycopg's
    carry DETAIL and HINT lines, fastavro's a dump) reported in one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def reported(what: str) -> Iterator[None]:
    """The database's and Kafka's client errors met while doing ``what``, as one-line
    ``LeoError``s (a server on a closed port, a broker down): the CLI prints them, no traceback."""
    try:
        yield
    except psycopg.Error as exc:
        raise LeoError(f"{what}: database: {first_line(exc)}") from exc
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        reason = error.str() if isinstance(error, KafkaError) else first_line(exc)
        raise LeoError(f"{what}: Kafka: {reason}") from exc
