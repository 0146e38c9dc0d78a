"""``ipnet serve --workers N``: N server processes on one listening socket, kept running by this one.

The parent binds the address once and starts each worker with Python's ``spawn`` (a fresh interpreter: no
torch threads or event loop carried over a fork); every worker accepts connections on the inherited socket
and is a full replica of the service (its own models, metrics and scorer view, state in Redis). A worker that
dies is started again (one that cannot start, three times in a row, stops the service). SIGTERM or SIGINT to the parent stops every worker gracefully (each answers what it
read and closes its streams, as one ``ipnet serve`` does) and then the parent exits.
"""

from __future__ import annotations

import logging
import logging.config
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from service.settings import Settings

log = logging.getLogger("service.workers")

#: seconds between the parent's checks that every worker still runs
CHECK_INTERVAL_S = 0.5
#: seconds a worker that does not stop after its graceful shutdown is given before it is killed
STOP_GRACE_S = 5.0
#: a worker that exits this many times in a row, each within QUICK_EXIT_S of its start, stops the service
MAX_QUICK_EXITS = 3
QUICK_EXIT_S = 10.0


def _worker_main(overrides: dict[str, Any], sock: Any, index: int, parent: int) -> None:
    """A worker's entry point (spawned): serve until told to stop or until the parent is gone."""
    from service.commands import run_worker

    def watch_parent() -> None:
        # a parent killed with SIGKILL cannot stop its workers: they stop themselves, gracefully
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_parent, name="watch-parent", daemon=True).start()
    run_worker(overrides, sock, index)


def serve_workers(settings: Settings, overrides: dict[str, Any]) -> int:
    """Bind ``settings.host:port`` and run ``settings.workers`` workers on it until SIGTERM/SIGINT (exit status
    0), or until a worker cannot start (1)."""
    import uvicorn

    from service.commands import GRACEFUL_SHUTDOWN_S
    from service.logs import log_config

    logs = log_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(logs)
    # only binds (the workers build their own apps); a uvicorn Config sets up logging: ours
    bind = uvicorn.Config("service.app:create_app", settings.host, settings.port, log_config=logs)
    sock = bind.bind_socket()
    ctx = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def start(index: int) -> BaseProcess:
        proc = ctx.Process(
            target=_worker_main, args=(overrides, sock, index, os.getpid()), name=f"worker-{index}"
        )
        proc.start()
        log.info("worker %d started (pid %s)", index, proc.pid)
        return proc

    def on_signal(sig: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        procs = [start(i) for i in range(settings.workers)]
        started = [time.monotonic()] * len(procs)
        quick_exits = [0] * len(procs)
        log.info("%d workers on %s:%d", settings.workers, settings.host, settings.port)
        while not stop.wait(CHECK_INTERVAL_S):
            for i, proc in enumerate(procs):
                if proc.is_alive() or stop.is_set():
                    continue
                quick = time.monotonic() - started[i] < QUICK_EXIT_S
                quick_exits[i] = quick_exits[i] + 1 if quick else 0
                if quick_exits[i] >= MAX_QUICK_EXITS:  # it cannot start (a port taken, a broken setting)
                    log.error(
                        "worker %d exited %d times within %g s of its start: stopping",
                        i,
                        quick_exits[i],
                        QUICK_EXIT_S,
                    )
                    status = 1
                    stop.set()
                    break
                log.warning(
                    "worker %d (pid %s) exited with %s: starting it again", i, proc.pid, proc.exitcode
                )
                procs[i], started[i] = start(i), time.monotonic()
        log.info("stopping %d workers", len(procs))
        for proc in procs:  # a SIGINT from a terminal reached them too: a second signal is no harm to uvicorn
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(GRACEFUL_SHUTDOWN_S + STOP_GRACE_S)
            if proc.is_alive():
                log.error("worker pid %s did not stop: killed", proc.pid)
                proc.kill()
                proc.join()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
    return status
