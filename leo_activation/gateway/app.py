"""The gateway's Starlette application.

Starlette rather than FastAPI: every endpoint must read the raw body bytes (signatures are over
them) and answer with its own status codes, so FastAPI's model validation and OpenAPI layer would
only sit in the way; Starlette is the ASGI toolkit FastAPI is built on, without that layer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from leo_activation.gateway import metrics
from leo_activation.gateway.config import GatewayConfig
from leo_activation.gateway.events import Inbound, Outcome, Provider, Receipt, Refused, Unmapped
from leo_activation.gateway.providers import PROVIDERS
from leo_activation.gateway.sink import KafkaSink, Unavailable, check

log = logging.getLogger("leo_activation.gateway")


class _TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _inbound(request: Request, config: GatewayConfig, name: str) -> tuple[Provider, Inbound]:
    provider = PROVIDERS.get(name)
    if provider is None:
        raise Refused(404, f"no provider {name[:40]!r}")
    try:
        tenant_id = str(uuid.UUID(str(request.path_params["tenant"])))
    except ValueError:
        raise Refused(404, "the tenant in the path is not a uuid") from None
    if config.keys(tenant_id, name) is None:
        raise Refused(401, "no key for this tenant and provider")
    try:
        body = await _body(request, config.max_body_bytes)
    except _TooLarge:
        raise Refused(413, "the body is over the size limit") from None
    inbound = Inbound(
        url=_url(request, config),
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params),
        body=body,
        tenant_id=tenant_id,
        now=time.time(),
    )
    return provider, inbound


def _url(request: Request, config: GatewayConfig) -> str:
    if config.public_base_url is None:
        return str(request.url)
    query = request.url.query
    return config.public_base_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


def _answer(name: str, status: int, started: float, body: dict[str, object]) -> Response:
    provider = name if name in PROVIDERS else "unknown"  # the label set stays small
    metrics.requests.labels(provider, str(status)).inc()
    metrics.latency.labels(provider).observe(time.perf_counter() - started)
    return JSONResponse(body, status_code=status)


def create_app(config: GatewayConfig, sink: KafkaSink) -> Starlette:
    async def receive(request: Request) -> Response:
        started = time.perf_counter()
        name = str(request.path_params["provider"])
        try:
            provider, inbound = await _inbound(request, config, name)
            keys = config.keys(inbound.tenant_id, name) or {}

            def verified_events() -> list[Outcome]:
                provider.verify(inbound, keys, config)
                return provider.events(inbound, keys)

            outcomes = await run_in_threadpool(verified_events)
        except Refused as refusal:
            log.warning(
                "refused a %s request: %s",
                name,
                refusal.reason,
                extra={"event": "refused", "provider": name, "status": refusal.status},
            )
            return _answer(name, refusal.status, started, {"error": refusal.reason})
        tenant_id = inbound.tenant_id
        receipts: list[Receipt] = []
        letters: list[Unmapped] = []
        for outcome in outcomes:
            problem = check(outcome) if isinstance(outcome, Receipt) else outcome
            if problem is None and isinstance(outcome, Receipt):
                receipts.append(outcome)
            elif problem is not None:
                letters.append(problem)
        try:
            await sink.deliver(receipts, letters, tenant_id=tenant_id, source=f"gateway/{name}")
        except Unavailable as exc:
            log.error("Kafka did not take a %s request: %s", name, exc, extra={"event": "503"})
            return _answer(name, 503, started, {"error": "Kafka is unavailable, retry later"})
        for letter in letters:
            log.warning(
                "dead-lettered a %s event: %s",
                name,
                letter.reason,
                extra={"event": "dead_letter", "provider": name, "error_class": letter.error_class},
            )
        metrics.events.labels(name, "produced").inc(len(receipts))
        metrics.events.labels(name, "dead_lettered").inc(len(letters))
        if not outcomes:
            metrics.events.labels(name, "ignored").inc()
        return _answer(
            name, 200, started, {"receipts": len(receipts), "dead_letters": len(letters)}
        )

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        if await run_in_threadpool(sink.ready):
            return PlainTextResponse("ready\n")
        return PlainTextResponse("Kafka is not reachable\n", status_code=503)

    async def metrics_page(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # topics are created in the background: a gateway started before Kafka serves 503s
        # (and /readyz says why) instead of failing to start
        threading.Thread(target=_create_topics, args=(sink,), daemon=True).start()
        yield
        await run_in_threadpool(sink.close)

    return Starlette(
        routes=[
            Route("/v1/{provider}/{tenant}", receive, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_page),
        ],
        lifespan=lifespan,
    )


def _create_topics(sink: KafkaSink) -> None:
    try:
        sink.create_topics()
    except Exception as exc:  # logged, and /readyz keeps saying not ready
        log.warning("could not create the gateway's topics: %s", exc)
