"""``WebSocket /v1/stream``: one long-lived connection per client, one reply per message, in order.

``/v1/stream?route=predict|baseline|ab[&layout=points|columns][&modes=K]``. Each client message is the body
of the HTTP route (``{"observations": [...]}``) and gets exactly one reply, in order: that route's answer, or its
error body ``{"error": {...}}`` (a rejected message changes no state; the stream stays open). Text messages
carry JSON and are answered in JSON; binary messages carry MessagePack and are answered in MessagePack.
Validation, state, scoring, metrics and limits are those of the HTTP routes (the same data plane).

Back-pressure: a connection has at most ``TRAJPRED_STREAM_MAX_INFLIGHT`` messages read and not yet answered;
beyond that the server stops reading it (the client's sends then wait on TCP). Close codes:

- 1008 (policy): no valid ``X-API-Key`` in the handshake when keys are set (the handshake is refused: the
  close comes before the accept, which an ASGI server answers with HTTP 403), or an unknown
  ``route``/``layout``/``modes`` (after the handshake, with the reason);
- 1009 (too big): a message larger than ``TRAJPRED_MAX_BODY_BYTES``;
- 1013 (try again later): the server is starting, or has ``TRAJPRED_STREAM_MAX_CONNECTIONS`` streams open;
- 1001 (going away): graceful shutdown, after every message already read has been answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson
from fastapi import WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from service.answers import Encoding, encode, predict_payload
from service.deps import key_allowed
from service.errors import (
    InvalidRequest,
    MalformedRequest,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    Unauthorized,
    from_validation_errors,
)
from service.frame_reader import read_frame
from service.frames import Observations
from service.protocol import TEXT_BYTES_EXTENSION
from service.schemas import PredictRequest
from service.settings import Settings
from service.validation import FrameValidator

log = logging.getLogger("service.stream")

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_LATER = 1013
ROUTES = {"predict": ["ipnet"], "baseline": ["baseline"], "ab": ["ipnet", "baseline"]}
STREAM_ROUTE = "/v1/stream"


@dataclass
class _Message:
    data: bytes | str
    encoding: Encoding


class StreamHub:
    """The app's open streams: their count (bounded) and the shutdown signal they drain on."""

    def __init__(self) -> None:
        self.open = 0
        self.draining = asyncio.Event()

    def drain(self) -> None:
        """Graceful shutdown: every stream stops reading, answers what it read, and closes with 1001."""
        self.draining.set()


async def serve_stream(websocket: WebSocket) -> None:
    """The whole life of one stream (see the module docstring)."""
    app = websocket.app
    runtime = getattr(app.state, "runtime", None)
    settings: Settings = app.state.settings
    hub: StreamHub = app.state.streams
    if not key_allowed(websocket.headers.get("x-api-key"), settings.api_key_set):
        if runtime is not None:
            runtime.metrics.count_error(Unauthorized("missing or invalid X-API-Key header"))
        # closed before it is accepted: the handshake is refused (an ASGI server answers it with HTTP 403)
        await websocket.close(code=CLOSE_POLICY, reason="missing or invalid X-API-Key header")
        return
    route = websocket.query_params.get("route", "predict")
    layout = websocket.query_params.get("layout", "points")
    modes_text = websocket.query_params.get("modes")
    # every other refusal is told after the handshake, so that the client reads its close code and reason
    # (a close before accept reaches the client as a bare HTTP 403)
    refusal, modes = _refusal(route, layout, modes_text, runtime, hub)
    await websocket.accept()
    if refusal is not None:
        code, err = refusal
        if runtime is not None:
            runtime.metrics.count_error(err)
        await websocket.close(code=code, reason=err.message)
        return
    assert runtime is not None  # a refusal otherwise
    hub.open += 1
    runtime.metrics.streams_open.set(hub.open)
    try:
        await _Session(websocket, runtime, hub, ROUTES[route], layout, modes).run()
    finally:
        hub.open -= 1
        runtime.metrics.streams_open.set(hub.open)


def _refusal(
    route: str, layout: str, modes_text: str | None, runtime: Any, hub: StreamHub
) -> tuple[tuple[int, ServiceError] | None, int | None]:
    """Why a stream is refused after its handshake (its close code, and the error counted as the HTTP routes
    count it), or None; and the ``modes`` it asks for (None: the single trajectory)."""
    if route not in ROUTES:
        return (CLOSE_POLICY, InvalidRequest(f"route: {route!r} is not one of predict, baseline, ab")), None
    if layout not in ("points", "columns"):
        return (CLOSE_POLICY, InvalidRequest(f"layout: {layout!r} is not one of points, columns")), None
    modes = None
    if modes_text is not None:
        try:
            modes = int(modes_text)
            FrameValidator.check_modes(modes)
        except ValueError:
            bad = InvalidRequest(
                f"modes: {modes_text!r} is not an integer", field="modes", code="invalid_type"
            )
            return (CLOSE_POLICY, bad), None
        except InvalidRequest as err:
            return (CLOSE_POLICY, err), None
    if runtime is None or runtime.stopping or hub.draining.is_set():
        return (CLOSE_TRY_LATER, NotReady("the service is starting or stopping")), None
    if hub.open >= runtime.settings.stream_max_connections:
        reason = f"{hub.open} streams open: the maximum (TRAJPRED_STREAM_MAX_CONNECTIONS)"
        return (CLOSE_TRY_LATER, Overloaded(reason)), None
    return None, modes


class _Session:
    """One accepted stream: a reader that takes messages while fewer than ``stream_max_inflight`` are
    unanswered, and a worker that answers them one at a time, in order."""

    def __init__(
        self,
        websocket: WebSocket,
        runtime: Any,
        hub: StreamHub,
        roles: list[str],
        layout: Any,
        modes: int | None = None,
    ) -> None:
        self.ws = websocket
        self.runtime = runtime
        self.hub = hub
        self.roles = roles
        self.layout = layout
        self.modes = modes
        self.max_bytes = runtime.settings.max_body_bytes
        # a message holds a credit from before it is read until its answer is sent: with none left the
        # reader does not read, and the client's sends wait on TCP (back-pressure)
        self.credits = asyncio.Semaphore(runtime.settings.stream_max_inflight)
        self.inbox: asyncio.Queue[_Message | None] = asyncio.Queue()
        self.close_code: int | None = CLOSE_GOING_AWAY
        self.close_reason = ""
        # whether the server sends UTF-8 bytes as a text frame (``ipnet serve``'s protocol does)
        self.text_bytes = TEXT_BYTES_EXTENSION in (websocket.scope.get("extensions") or {})

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        drained = asyncio.create_task(self.hub.draining.wait())
        worker = asyncio.create_task(self._answer())
        try:
            done, _ = await asyncio.wait({reader, drained}, return_when=asyncio.FIRST_COMPLETED)
            if drained in done and not reader.done():
                # shutting down: read nothing more, answer what was read
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                self.close_reason = "the server is shutting down"
            await worker
        finally:
            for task in (reader, drained, worker):
                task.cancel()
            # read and never answered (the client left): no longer in flight
            while not self.inbox.empty():
                if self.inbox.get_nowait() is not None:
                    self.runtime.metrics.stream_messages_inflight.dec()
        if self.close_code is not None:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await self.ws.close(code=self.close_code, reason=self.close_reason)

    async def _read(self) -> None:
        gauge = self.runtime.metrics.stream_messages_inflight
        try:
            while True:
                await self.credits.acquire()
                try:
                    message = await self.ws.receive()
                except BaseException:
                    self.credits.release()
                    raise
                if message["type"] == "websocket.disconnect":
                    self.close_code = None  # the client closed: nothing to send
                    self.credits.release()
                    break
                data: bytes | str | None = message.get("bytes")
                encoding: Encoding = "msgpack"
                if data is None:
                    data, encoding = message.get("text") or "", "json"
                if len(data) > self.max_bytes:
                    self.close_code = CLOSE_TOO_BIG
                    self.close_reason = (
                        f"message larger than {self.max_bytes} bytes (TRAJPRED_MAX_BODY_BYTES)"
                    )
                    self.runtime.metrics.count_error(PayloadTooLarge(self.close_reason))
                    self.credits.release()
                    break
                gauge.inc()
                self.inbox.put_nowait(_Message(data, encoding))
        finally:
            self.inbox.put_nowait(None)  # the worker answers what was read, then ends

    async def _answer(self) -> None:
        gauge = self.runtime.metrics.stream_messages_inflight
        while True:
            msg = await self.inbox.get()
            if msg is None:
                return
            try:
                reply = await self._reply(msg)
                if msg.encoding == "msgpack":
                    # what send_bytes sends, with the answer's buffer as it is (a view: websockets sends
                    # any bytes-like message; send_bytes is typed for bytes only)
                    await self.ws.send({"type": "websocket.send", "bytes": reply})
                elif self.text_bytes:  # the answer's UTF-8 bytes as they are, in a text frame
                    await self.ws.send({"type": "websocket.send", "text": reply})
                else:
                    await self.ws.send_text(str(reply, "utf-8"))
                self.runtime.engine.answer_sent()  # as the HTTP routes do once their answer is handed over
            except (WebSocketDisconnect, RuntimeError):
                self.close_code = None  # the client is gone
                return
            finally:
                gauge.dec()
                self.credits.release()

    async def _reply(self, msg: _Message) -> bytes | memoryview:
        metrics = self.runtime.metrics
        start = time.perf_counter()
        try:
            engine = self.runtime.engine
            out = await engine.predict(self._observations(msg), self.roles, self.modes)
            payload = predict_payload(engine, out, self.roles, self.layout, msg.encoding)
        except ServiceError as err:
            metrics.count_error(err)
            payload = {"error": err.to_dict()}
        except Exception:
            log.exception("unhandled error on a stream message")
            internal = ServiceError("internal error")
            metrics.count_error(internal)
            payload = {"error": internal.to_dict()}
        finally:
            metrics.request_duration.labels(route=STREAM_ROUTE).observe(time.perf_counter() - start)
        return encode(payload, msg.encoding)

    def _observations(self, msg: _Message) -> Observations:
        """The message's observations: read by the compiled reader, or validated as the HTTP routes'
        ``PredictRequest`` with the same errors."""
        compiled = self.runtime.settings.native_kernel
        read = None
        if isinstance(msg.data, bytes):  # a binary message: MessagePack
            read = read_frame(msg.data, "msgpack", compiled)
        elif msg.data.isascii():  # (a text with other characters is not one the reader takes)
            read = read_frame(msg.data.encode("ascii"), "json", compiled)
        if read is not None:
            return read
        try:
            return Observations.of(PredictRequest.model_validate(_decode(msg)))
        except ValidationError as e:
            raise from_validation_errors(e.errors()) from None


def _decode(msg: _Message) -> Any:
    try:
        if msg.encoding == "msgpack":
            return msgpack.unpackb(msg.data, raw=False, strict_map_key=True)
        return orjson.loads(msg.data)
    except (ValueError, msgpack.UnpackException) as e:  # orjson's errors are ValueErrors
        kind = "MessagePack" if msg.encoding == "msgpack" else "JSON"
        raise MalformedRequest(f"malformed {kind}: {e}", field="body") from None
