"""``leo-activation gateway``: the Starlette application on uvicorn.

uvicorn stops on SIGTERM/SIGINT by refusing new connections and finishing the requests in flight
(for at most ``--graceful-timeout`` seconds); the application then delivers what its producer
still holds before exiting.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import uvicorn

from leo_activation.gateway import config as gateway_config
from leo_activation.gateway.app import create_app
from leo_activation.gateway.sink import KafkaSink
from leo_activation.settings import Settings

log = logging.getLogger("leo_activation.gateway")


def cli_gateway(settings: Settings, args: Any) -> int:
    config = gateway_config.load(args.config or os.environ.get("LEO_GATEWAY_CONFIG"))
    settings.require_kafka()
    sink = KafkaSink(settings, config.ack_timeout_s)
    log.info(
        "gateway on %s:%d for %d tenants",
        args.host,
        args.port,
        len(config.tenants),
        extra={"event": "start"},
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config, sink),
            host=args.host,
            port=args.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=args.graceful_timeout,
            lifespan="on",
        )
    )
    server.run()
    return 0
