"""``leo-activation consume``: the engine wired to the consumers' routing table, with metrics
and a clean stop on SIGTERM/SIGINT (the batch in flight finishes first)."""

from __future__ import annotations

import logging
import signal
from typing import Any

from leo_activation import __version__
from leo_activation.consumers import HANDLERS
from leo_activation.engine.loop import Engine
from leo_activation.engine.metrics import EngineMetrics
from leo_activation.engine.progress import ProgressLog
from leo_activation.engine.stats import BatchStats
from leo_activation.errors import UsageError
from leo_activation.kafka import INPUT_TOPICS
from leo_activation.progress import Drain, bar
from leo_activation.settings import Settings, dsn_host

log = logging.getLogger("leo_activation.consume")


def cli_consume(settings: Settings, args: Any) -> int:
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
    drains: list[Drain] = []  # the backlog's bar, while --until-idle drains it

    def on_batch(stats: BatchStats) -> None:
        metrics.observe_batch(stats)
        progress.observe_batch(stats)
        for drain in drains:
            drain.on_batch(stats)

    def on_idle() -> None:
        metrics.refresh_lag()
        progress.tick()

    engine = Engine(
        settings,
        HANDLERS,
        topics=topics,
        group=args.group,
        on_batch=on_batch,
        on_idle=on_idle,
        on_retry=metrics.count_retry,
    )
    progress = ProgressLog(settings.progress_interval_s, engine.lag)
    if settings.metrics_port is not None:
        metrics.watch(engine.lag).serve(settings.metrics_port)
    log.info(
        "leo-activation %s consuming %s as group %s from %s into %s",
        __version__,
        ", ".join(settings.topic(t) for t in topics),
        engine.group,
        settings.kafka_bootstrap,
        dsn_host(settings.database_url),
        extra={
            "event": "start",
            "version": __version__,
            "topics": [settings.topic(t) for t in topics],
            "group": engine.group,
            "brokers": settings.kafka_bootstrap,
            "database": dsn_host(settings.database_url),
        },
    )
    signal.signal(signal.SIGTERM, engine.request_stop)
    signal.signal(signal.SIGINT, engine.request_stop)
    if args.until_idle is None:
        engine.run()
        return 0
    with bar("consume: draining", unit="messages") as drawn:
        drains.append(Drain(drawn, engine.lag))
        engine.run(until_idle=args.until_idle)
    return 0
