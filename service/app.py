"""``create_app(settings)``: the FastAPI application, its lifespan, middleware and error mapping.

The lifespan owns every long-lived object: the loaded models, the state store, the metrics registry, the
engine and the background tasks (TTL sweep, periodic snapshot). Nothing lives at module level.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.kinematics import KinState
from models.predictor import Predictor
from service import snapshot
from service.api import ops, streams, v1
from service.deps import Runtime, key_allowed
from service.engine import Engine
from service.errors import (
    BodyTimeout,
    MalformedRequest,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    Unauthorized,
    from_validation_errors,
)
from service.frame_reader import available as frame_reader_available
from service.jsontext import available as json_writer_available
from service.logs import RequestIdMiddleware
from service.metrics import Metrics
from service.settings import Settings
from service.state import AgentState, StateDecodeError
from service.store import MemoryStore, StateStore
from service.stream import StreamHub

log = logging.getLogger("service.app")


# --- models -------------------------------------------------------------------------------------------
def load_models(settings: Settings) -> dict[str, Predictor]:
    """Load IPNet and the baseline and run each once, so the first request pays no warm-up."""
    import torch

    from models.catalog import is_motion
    from models.checkpoint import shipped_path
    from models.pipeline import load_predictors

    torch.set_num_threads(settings.torch_threads)
    names = ["ipnet", settings.baseline]
    for name in names:
        path = shipped_path(name, settings.model_dir)
        if not is_motion(name) and not path.is_file():
            raise FileNotFoundError(
                f"model weights {path} not found: train them with `ipnet train` or set TRAJPRED_WEIGHTS_DIR"
            )
    predictors = load_predictors(names, settings.model_dir, native=settings.native_kernel)
    for p in predictors.values():
        types = np.zeros(2, np.int64)
        r = p.step(KinState.empty(2), p.initial_memory(2), np.zeros((2, 2)), np.zeros(2), types)
        p.step(r.kin, r.memory, np.ones((2, 2)), np.full(2, 0.1), types)
    if settings.native_kernel:
        json_writer_available()  # imports the answer writer now, not on a request
        frame_reader_available()  # and the reader of request bodies
    return predictors


def build_store(settings: Settings, metrics: Metrics, models: list[str]) -> StateStore:
    if settings.uses_redis:
        from service.redis_store import RedisStore

        return RedisStore(
            settings.store,
            settings.redis_key_prefix,
            settings.state_ttl_s,
            settings.max_agents,
            models,
            metrics,
            log_retention_s=settings.scoring_log_retention_s,
        )
    return MemoryStore(settings.state_ttl_s, settings.max_agents, metrics)


def _wall_of(record: bytes) -> float:
    try:
        return AgentState.from_bytes(record).updated_wall
    except StateDecodeError:
        return float("-inf")  # unreadable: older than any TTL, so it is not restored


def restore_snapshot(store: MemoryStore, path: Path, metrics: Metrics) -> str:
    """Load the snapshot at ``path`` into ``store``; a damaged file is reported, set aside and skipped."""
    try:
        entries = snapshot.read(path)
    except snapshot.SnapshotError as e:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        with contextlib.suppress(OSError):
            path.replace(aside)
        metrics.snapshots.labels(event="corrupt").inc()
        log.error("snapshot %s is damaged (%s): NOT loaded, moved to %s; starting empty", path, e, aside)
        return f"corrupt: {e} (moved to {aside.name})"
    if entries is None:
        return "no snapshot"
    kept = store.restore(entries, _wall_of)
    metrics.snapshots.labels(event="restored").inc()
    log.info("restored %d of %d agent states from %s", kept, len(entries), path)
    return f"restored {kept} of {len(entries)} states"


async def write_snapshot(store: MemoryStore, path: Path, metrics: Metrics, lock: asyncio.Lock) -> None:
    """Atomically write the store's records (taken in one event-loop step, so no request is half in)."""
    async with lock:
        entries = store.entries()
        try:
            data = await anyio.to_thread.run_sync(snapshot.encode, entries)
            await anyio.to_thread.run_sync(snapshot.write_atomic, path, data)
        except OSError:
            metrics.snapshots.labels(event="failed").inc()
            log.exception("snapshot to %s failed", path)
            return
    metrics.snapshots.labels(event="written").inc()


#: at shutdown, how long a housekeeping round under way may take to finish before it is cancelled
HOUSEKEEPING_STOP_S = 10.0


async def _every(
    interval_s: float, job: Callable[[], Awaitable[None]], name: str, stop: asyncio.Event
) -> None:
    """``job`` every ``interval_s`` until ``stop`` is set. A round under way finishes first: cancelling it in
    the middle of a Redis command can leave a connection whose close never returns (redis-py), which hung
    the app's shutdown."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        if stop.is_set():
            return
        try:
            await job()
        except Exception:  # a failing housekeeping round must not kill the loop
            log.exception("%s failed", name)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """With ``TRAJPRED_STARTUP_IN_BACKGROUND`` (the default) the listener opens first: ``/healthz`` answers at
    once, ``/readyz`` and ``/v1`` answer 503 until the models are loaded and the store is open. A startup
    that fails makes ``/healthz`` fail too, so that the orchestrator restarts the process."""
    settings: Settings = app.state.settings
    if not settings.startup_in_background:
        async with serving(app):
            yield
        return
    ready, done = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        try:
            async with serving(app):
                ready.set()
                await done.wait()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("startup failed: the service stays unready and /healthz answers 503")
            app.state.startup_error = f"{type(e).__name__}: {e}"

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        done.set()
        if not ready.is_set():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[None]:
    """Load the models, open the store, restore the snapshot and start the housekeeping; on exit, stop
    them and write the shutdown snapshot. ``app.state.runtime`` is set while serving."""
    settings: Settings = app.state.settings
    metrics = Metrics()
    metrics.max_agents.set(settings.max_agents)
    predictors = await anyio.to_thread.run_sync(load_models, settings)
    roles = {"ipnet": "ipnet", "baseline": settings.baseline}
    store = build_store(settings, metrics, list(predictors))
    engine = Engine(settings, predictors, roles, store, metrics)  # checks the settings against the models
    snapshot_path = settings.snapshot_path if isinstance(store, MemoryStore) else None
    snap_lock = asyncio.Lock()
    tasks: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    await store.open()
    try:
        snapshot_status = None
        if isinstance(store, MemoryStore) and snapshot_path is not None:
            snapshot_status = restore_snapshot(store, snapshot_path, metrics)
        runtime = Runtime(settings, metrics, predictors, store, engine, snapshot_status)
        tasks.append(
            asyncio.create_task(_every(settings.eviction_interval_s, engine.maintain, "maintenance", stop))
        )
        if engine.follower is not None:  # replicas: score every replica's frames from the shared log
            tasks.append(asyncio.create_task(engine.follower.run(stop)))
        if isinstance(store, MemoryStore) and snapshot_path is not None:
            mem_store, path = store, snapshot_path

            async def periodic() -> None:
                await write_snapshot(mem_store, path, metrics, snap_lock)

            tasks.append(
                asyncio.create_task(_every(settings.snapshot_interval_s, periodic, "snapshot", stop))
            )
        app.state.runtime = runtime
        # Everything loaded so far (torch, the models, FastAPI) lives as long as the process: move it out of
        # the cyclic collector's reach. Otherwise every generation-2 pass re-walks all of them (hundreds of
        # thousands), and the thousands of short-lived dicts of each answer trigger such passes: building a
        # large answer was several times slower than with a frozen heap (see BENCHMARKS.md's profile).
        gc.collect()
        gc.freeze()
        ipnet = predictors["ipnet"]
        log.info(
            "ready: ipnet %s (MTJ layer: %s), baseline %s %s, store %s, answer writer: %s",
            ipnet.version,
            "compiled kernel" if ipnet.native else "torch",
            settings.baseline,
            predictors[settings.baseline].version,
            "redis" if settings.uses_redis else "memory",
            "compiled" if settings.native_kernel and json_writer_available() else "orjson",
        )
        yield
        runtime.stopping = True
        app.state.streams.drain()  # streams still open (a server that does not drain them itself)
    finally:
        stop.set()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=HOUSEKEEPING_STOP_S)
            for t in late:  # a round stuck on an unreachable dependency
                t.cancel()
            for t in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        if isinstance(store, MemoryStore) and snapshot_path is not None:
            # the shutdown snapshot (SIGTERM): a graceful restart loses no agent state
            await write_snapshot(store, snapshot_path, metrics, snap_lock)
            log.info("wrote %d state records to %s", len(store.entries()), snapshot_path)
        await store.close()
        gc.unfreeze()  # an app built and stopped in a longer-lived process (tests) leaves nothing pinned


# --- middleware ---------------------------------------------------------------------------------------
def _runtime(scope: Scope) -> Runtime | None:
    return getattr(scope["app"].state, "runtime", None) if "app" in scope else None


def _runtime_metrics(scope: Scope) -> Metrics | None:
    runtime = _runtime(scope)
    return runtime.metrics if runtime is not None else None


class BodyLimitMiddleware:
    """Reject bodies above ``max_bytes`` with 413 before anything parses them (Content-Length or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float = 10.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(scope, send)
                return
        chunks, size = [], 0
        # the whole body within the timeout: a client that stalls mid-body must not hold a slot for ever
        deadline = asyncio.get_running_loop().time() + self.read_timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                err = BodyTimeout(f"request body not received within {self.read_timeout_s:g} s", field="body")
                await self._reject(scope, send, err)
                return
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._reject(scope, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False
        whole = b"".join(chunks)

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, send: Send, err: ServiceError | None = None) -> None:
        err = err or PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes", field="body")
        metrics = _runtime_metrics(scope)
        if metrics is not None:
            metrics.count_error(err)
        response = JSONResponse({"error": err.to_dict()}, status_code=err.status)
        await response(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class ApiKeyMiddleware:
    """``/v1`` requests without a valid ``X-API-Key`` get 401 from their headers alone: an unauthenticated
    client's body is never read nor parsed, and it never takes a processing slot (the route dependency
    checks the key again and declares it in the OpenAPI schema)."""

    def __init__(self, app: ASGIApp, keys: frozenset[str]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.keys or scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-api-key"), None)
        if key_allowed(given, self.keys):
            await self.app(scope, receive, send)
            return
        err = Unauthorized("missing or invalid X-API-Key header", field="X-API-Key")
        metrics = _runtime_metrics(scope)
        if metrics is not None:
            metrics.count_error(err)
        response = JSONResponse(
            {"error": err.to_dict()}, status_code=err.status, headers={"WWW-Authenticate": "ApiKey"}
        )
        await response(scope, _no_receive, send)


class ConcurrencyLimitMiddleware:
    """Bound the ``/v1`` work in flight: ``max_concurrent`` run, ``max_queued`` wait, the rest get 503.

    Without a bound, a burst beyond capacity piles up requests (bodies, batches, threads) until memory and
    latency grow without limit; a quick 503 with Retry-After lets clients and load balancers back off.
    The operational routes (/healthz, /readyz, /metrics) are never queued: probes must answer under load.
    The slot is taken after the body is read (``BodyLimitMiddleware``, outside this one): a slow sender
    holds its connection, not a slot; a waiting request holds its raw body, at most
    ``TRAJPRED_MAX_BODY_BYTES``.
    """

    def __init__(
        self, app: ASGIApp, max_concurrent: int, max_queued: int, max_wait_s: float, retry_after_s: int
    ) -> None:
        self.app = app
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.max_wait_s = max_wait_s
        self.retry_after_s = retry_after_s
        self.running = 0
        self.waiting = 0
        # created on first use: it must belong to the serving event loop
        self._slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrent)
        slots = self._slots
        # waiting is checked before the semaphore so that the queue length, not the client count, is bounded
        if slots.locked() and self.waiting >= self.max_queued:
            await self._reject(scope, send, "the server is at capacity and its queue is full")
            return
        self.waiting += 1
        self._publish(scope)
        try:
            await asyncio.wait_for(slots.acquire(), self.max_wait_s)
        except TimeoutError:
            await self._reject(scope, send, f"no processing slot within {self.max_wait_s:g} s")
            return
        finally:
            self.waiting -= 1
            self._publish(scope)
        self.running += 1
        self._publish(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            self.running -= 1
            slots.release()
            self._publish(scope)

    def _publish(self, scope: Scope) -> None:
        metrics = _runtime_metrics(scope)
        if metrics is not None:
            metrics.inflight.labels(state="running").set(self.running)
            metrics.inflight.labels(state="queued").set(self.waiting)

    async def _reject(self, scope: Scope, send: Send, message: str) -> None:
        err = Overloaded(message)
        metrics = _runtime_metrics(scope)
        if metrics is not None:
            metrics.count_error(err)
        headers = {"Retry-After": str(self.retry_after_s)}
        response = JSONResponse({"error": err.to_dict()}, status_code=err.status, headers=headers)
        await response(scope, _no_receive, send)


class TimingMiddleware:
    """``trajpred_request_duration_seconds{route}`` by route template (bounded labels, never an id); and
    tells the engine when an answer has been handed over (:meth:`Engine.answer_sent`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            runtime = _runtime(scope)
            if runtime is not None:
                label = getattr(scope.get("route"), "path", None) or "unmatched"
                runtime.metrics.request_duration.labels(route=label).observe(time.perf_counter() - start)
                runtime.engine.answer_sent()


# --- errors -------------------------------------------------------------------------------------------
def _error_response(request: Request, err: ServiceError) -> JSONResponse:
    metrics = _runtime_metrics(request.scope)
    if metrics is not None:
        metrics.count_error(err)
    headers: dict[str, str] = {}
    if err.status == 401:
        headers["WWW-Authenticate"] = "ApiKey"
    if err.status == 503:
        # store outage, starting or stopping: tell clients and load balancers when to come back
        settings: Settings = request.app.state.settings
        headers["Retry-After"] = str(settings.retry_after_s)
    return JSONResponse({"error": err.to_dict()}, status_code=err.status, headers=headers or None)


def install_error_handlers(app: FastAPI) -> None:
    async def on_service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return _error_response(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _error_response(request, from_validation_errors(exc.errors()))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:
            # FastAPI's own body parse failure (too deep, number too long, bad encoding): the same
            # malformed_json error as a syntax error, naming the body, not a generic http_error
            return _error_response(request, MalformedRequest(f"malformed JSON: {exc.detail}", field="body"))
        code = {404: "route_not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        err = ServiceError(str(exc.detail), code=code)
        err.status = exc.status_code
        return _error_response(request, err)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error_response(request, ServiceError("internal error"))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


# --- factory ------------------------------------------------------------------------------------------
def create_app(settings: Settings | None = None) -> FastAPI:
    """A new application; its lifespan loads the models and opens the store."""
    settings = settings or Settings()
    # FastAPI with /docs and /redoc served from the package's own copies of Swagger UI and ReDoc (under
    # /static-offline-docs), not from a CDN: the docs work on a machine without the internet
    app = FastAPIOffline(
        title="ipnet-traj",
        version="0.1.0",
        summary="Streaming trajectory prediction: IPNet (MTJ thermal memory) with a recurrent baseline, "
        "shadow A/B and online error and energy metrics.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.state.streams = StreamHub()
    app.include_router(v1)
    app.include_router(ops)
    app.include_router(streams)
    # from the outside in: the request id, timing, the API key (from the headers, before a byte of the body is read), the
    # body (read whole, within its deadline, before a processing slot is taken: a client that sends its body
    # slowly holds a connection, never a slot), the processing slots
    app.add_middleware(
        ConcurrencyLimitMiddleware,
        max_concurrent=settings.max_concurrent_requests,
        max_queued=settings.max_queued_requests,
        max_wait_s=settings.max_queue_wait_s,
        retry_after_s=settings.retry_after_s,
    )
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, read_timeout_s=settings.body_read_timeout_s
    )
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_key_set)
    app.add_middleware(TimingMiddleware)
    app.add_middleware(RequestIdMiddleware)  # outermost: every answer, refusals included, carries the id
    return app
