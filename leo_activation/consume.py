"""``leo-activation consume``: the engine wired to the consumers' routing table, with metrics
and a clean stop on SIGTERM/SIGINT (the batch in flight finishes first)."""

from __future__ import annotations

import signal
from typing import Any

from leo_activation.consumers import HANDLERS
from leo_activation.engine.loop import Engine
from leo_activation.engine.metrics import EngineMetrics
from leo_activation.errors import UsageError
from leo_activation.jsonlog import configure as configure_json_logs
from leo_activation.kafka import INPUT_TOPICS
from leo_activation.settings import Settings


def cli_consume(settings: Settings, args: Any) -> int:
    configure_json_logs()
    settings = settings.with_overrides(batch_size=args.batch_size, metrics_port=args.metrics_port)
    topics = [
        settings.logical_topic(settings.resolve_topic(t)) for t in (args.topics or INPUT_TOPICS)
    ]
    outputs = [t for t in topics if t not in INPUT_TOPICS]
    if outputs:
        raise UsageError(
            f"consume --topics: {', '.join(outputs)} is written by the product, not consumed; "
            f"input topics are {', '.join(INPUT_TOPICS)}"
        )
    if args.until_idle is not None and not args.until_idle > 0:
        raise UsageError(f"--until-idle {args.until_idle:g}: must be more than 0 seconds")
    metrics = EngineMetrics(topics)
    engine = Engine(
        settings,
        HANDLERS,
        topics=topics,
        group=args.group,
        on_batch=metrics.observe_batch,
        on_idle=metrics.refresh_lag,
        on_retry=metrics.count_retry,
    )
    if settings.metrics_port is not None:
        metrics.watch(engine.lag).serve(settings.metrics_port)
    signal.signal(signal.SIGTERM, engine.request_stop)
    signal.signal(signal.SIGINT, engine.request_stop)
    engine.run(until_idle=args.until_idle)
    return 0
