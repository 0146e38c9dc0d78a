"""Service subcommands of the ``ipnet`` CLI (``service/cli.py`` picks them up): ``ipnet serve``.

The client subcommands (``ipnet replay``, ``ipnet bench``) live in ``clients.commands`` and are added here.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import socket
from typing import Any


def add_commands(sub: Any) -> None:
    """Add ``serve`` to the CLI's subparsers."""
    p = sub.add_parser(
        "serve",
        help="run the prediction service (uvicorn; settings from TRAJPRED_* variables)",
        description="Run the HTTP prediction service. Every setting is a TRAJPRED_* environment variable.",
    )
    p.add_argument("--host", default=None, help="bind address (default TRAJPRED_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default TRAJPRED_PORT or 8000)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes sharing the port (default TRAJPRED_WORKERS or 1; more than one needs the "
        "Redis store, TRAJPRED_STORE)",
    )
    p.set_defaults(handler=cmd_serve)
    from clients.commands import add_commands as add_client_commands

    add_client_commands(sub)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM: in this process, or in ``--workers`` processes on one listening socket."""
    from service.settings import Settings
    from service.workers import serve_workers

    given = {"host": args.host, "port": args.port, "workers": args.workers}
    # the command line over the environment; a bad combination is a usage error before anything starts
    overrides = {k: v for k, v in given.items() if v is not None}
    settings = Settings(**overrides)
    if settings.workers == 1:
        return 0 if run_worker(overrides, None, 0) else STARTUP_FAILURE
    return serve_workers(settings, overrides)


def run_worker(overrides: dict[str, Any], shared: socket.socket | None, index: int) -> bool:
    """One server process: build the app from the environment's settings (with ``overrides``) and serve it on
    ``shared`` (the workers' one listening socket; None: bind the settings' host and port), and alone on
    ``TRAJPRED_WORKER_PORT_BASE + index`` when that is set."""
    import uvicorn

    from service.app import create_app
    from service.logs import log_config
    from service.process import tune_allocator, tune_gc
    from service.protocol import draining_ws_protocol, guarded_protocol
    from service.settings import Settings

    settings = Settings(**overrides)
    logs = log_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(logs)
    allocator = tune_allocator(settings.malloc_keep_mb)
    thresholds = tune_gc(settings.gc_gen0_threshold)
    logging.getLogger("service.process").info(
        "allocator tuned: %s (keep %d MB); gc thresholds %s", allocator, settings.malloc_keep_mb, thresholds
    )
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

    def config(port: int) -> uvicorn.Config:
        return uvicorn.Config(
            app,
            host=settings.host,
            port=port,
            log_level=settings.log_level,
            log_config=logs,  # uvicorn's own lines in the same format, with the request id
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
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

    main = config(settings.port)
    sockets = None  # one process on the settings' address: uvicorn binds it
    if shared is not None or settings.worker_port_base is not None:
        sockets = [shared if shared is not None else main.bind_socket()]
        if settings.worker_port_base is not None:
            sockets.append(config(settings.worker_port_base + index).bind_socket())
    # the memory store and the online scorer live in this process; workers and replicas share Redis
    server = uvicorn.Server(main)
    server.run(sockets=sockets)
    return server.started


#: seconds uvicorn waits for open requests and streams at a graceful shutdown
GRACEFUL_SHUTDOWN_S = 30
#: exit status of a server that did not start (uvicorn's own)
STARTUP_FAILURE = 3
