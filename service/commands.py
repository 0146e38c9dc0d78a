"""Service subcommands of the ``ipnet`` CLI (``service/cli.py`` picks them up): ``ipnet serve``.

The client subcommands (``ipnet replay``, ``ipnet bench``) live in ``clients.commands`` and are added here.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
from typing import Any


def add_commands(sub: Any) -> None:
    """Add ``serve`` to the CLI's subparsers."""
    p = sub.add_parser(
        "serve",
        help="run the prediction service (uvicorn, one worker; settings from TRAJPRED_* variables)",
        description="Run the HTTP prediction service. Every setting is a TRAJPRED_* environment variable.",
    )
    p.add_argument("--host", default=None, help="bind address (default TRAJPRED_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default TRAJPRED_PORT or 8000)")
    p.set_defaults(handler=cmd_serve)
    from clients.commands import add_commands as add_client_commands

    add_client_commands(sub)


def cmd_serve(args: argparse.Namespace) -> int:
    """Build the app from the environment's settings and serve it until SIGINT/SIGTERM."""
    import uvicorn

    from service.app import create_app
    from service.logs import log_config
    from service.process import tune_allocator, tune_gc
    from service.protocol import draining_ws_protocol, guarded_protocol
    from service.settings import Settings

    settings = Settings()
    logs = log_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(logs)
    allocator = tune_allocator(settings.malloc_keep_mb)
    thresholds = tune_gc(settings.gc_gen0_threshold)
    logging.getLogger("service.process").info(
        "allocator tuned: %s (keep %d MB); gc thresholds %s", allocator, settings.malloc_keep_mb, thresholds
    )
    host = args.host if args.host is not None else settings.host
    port = args.port if args.port is not None else settings.port
    app = create_app(settings)

    def count_refusal(reason: str) -> None:
        runtime = getattr(app.state, "runtime", None)
        if runtime is not None:
            runtime.metrics.connection_refusals.labels(reason=reason).inc()

    protocol = guarded_protocol(
        settings.max_connections,
        settings.max_header_bytes,
        settings.header_timeout_s,
        settings.write_timeout_s,
        count_refusal,
    )
    # one worker: the memory store and the online scorer live in this process (use Redis for replicas)
    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=1,
        log_level=settings.log_level,
        log_config=logs,  # uvicorn's own lines in the same format, with the request id
        timeout_graceful_shutdown=30,
        access_log=settings.access_log,
        # named, not "auto": a missing dependency fails at start rather than silently serving slower
        loop="uvloop",
        # uvicorn's httptools protocol with bounds on connections, headers and stalled writes
        http=protocol,
        # WebSocket streams drain at a graceful shutdown (answer what they read, close with 1001)
        ws=draining_ws_protocol(app.state.streams.drain),
        ws_max_size=settings.max_body_bytes,
        ws_per_message_deflate=settings.stream_compression,
    )
    return 0
