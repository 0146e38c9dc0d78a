"""The stream client: one WebSocket (``/v1/stream``) per client, one reply per message, in order.

A frame sent on the stream is the body of the HTTP route and its reply the HTTP answer (or its error), so
:meth:`TrajpredStream.predict` returns what ``TrajpredClient.predict`` returns, without a request's setup
per frame. ``send`` and ``recv`` pipeline: up to the server's ``TRAJPRED_STREAM_MAX_INFLIGHT`` frames can be
in flight, the server answers them in order. ``encoding="msgpack"`` sends and receives MessagePack (binary
messages); ``"json"`` text messages.

A stream is not retried: a frame whose connection dropped may or may not have been applied, so the caller
decides (re-sending an applied frame is answered ``409 stale_timestamp``). A rejected frame raises
:class:`ApiError` and leaves the stream open; a closed stream raises :class:`StreamClosed` with the close
code and reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgpack
import orjson
from pydantic import BaseModel, ValidationError
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from clients.errors import ApiError
from service.schemas import ABPredictResponse, ErrorResponse, Layout, Observation, PredictResponse

__all__ = ["AsyncTrajpredStream", "StreamClosed", "StreamRoute", "TrajpredStream", "stream_url"]

StreamRoute = Literal["predict", "baseline", "ab"]
Encoding = Literal["json", "msgpack"]
Answer = PredictResponse | ABPredictResponse


class StreamClosed(Exception):
    """The stream was closed (by the server: ``code`` and ``reason`` say why, e.g. 1001 at shutdown)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"stream closed ({code}): {reason}" if reason else f"stream closed ({code})")
        self.code = code
        self.reason = reason


def stream_url(base_url: str, route: StreamRoute, layout: Layout, modes: int | None = None) -> str:
    """``http(s)://host:port`` -> ``ws(s)://host:port/v1/stream?route=...`` (``layout`` only when not the
    default, ``modes`` when given)."""
    base = base_url.rstrip("/")
    if base.startswith("http"):
        base = "ws" + base[len("http") :]
    query = f"route={route}" + ("" if layout == "points" else f"&layout={layout}")
    if modes is not None:
        query += f"&modes={modes}"
    return f"{base}/v1/stream?{query}"


def observations_json(observations: Iterable[Observation | Mapping[str, Any]]) -> list[Any]:
    """Observations (schema objects or their JSON dicts) as a request body's JSON data."""
    return [o.model_dump(exclude_none=True) if isinstance(o, Observation) else dict(o) for o in observations]


def _frame(observations: Iterable[Observation | Mapping[str, Any]], encoding: Encoding) -> bytes:
    """A frame's message: MessagePack, or JSON's UTF-8 bytes (sent as a text frame, ``text=`` below)."""
    body = {"observations": observations_json(observations)}
    if encoding == "msgpack":
        return bytes(msgpack.packb(body, use_bin_type=True))
    return orjson.dumps(body)


def _answer(message: bytes | str, model: type[BaseModel], encoding: Encoding) -> Any:
    """The reply as the route's answer; an error reply raises :class:`ApiError`. Text replies are read as
    their UTF-8 bytes (``recv(decode=False)``): orjson parses and checks them without a decoded copy."""
    data = msgpack.unpackb(message, raw=False) if encoding == "msgpack" else orjson.loads(message)
    if isinstance(data, dict) and "error" in data:
        try:
            error = ErrorResponse.model_validate(data).error
        except ValidationError:
            raise ApiError(500, None, str(data)) from None
        raise ApiError(error.status, error, orjson.dumps(data).decode())
    return model.model_validate(data)


def _closed(e: ConnectionClosed) -> StreamClosed:
    frame = e.rcvd
    return StreamClosed(frame.code if frame else None, frame.reason if frame else "connection lost")


class TrajpredStream:
    """A synchronous stream. Open it with :meth:`TrajpredClient.stream` (a context manager)."""

    def __init__(self, connection: ClientConnection, route: StreamRoute, encoding: Encoding) -> None:
        self.connection = connection
        self.encoding = encoding
        self._model: type[BaseModel] = ABPredictResponse if route == "ab" else PredictResponse

    def send(self, observations: Iterable[Observation | Mapping[str, Any]]) -> None:
        """Send one frame without waiting for its reply (read it with :meth:`recv`, in order)."""
        try:
            self.connection.send(_frame(observations, self.encoding), text=self.encoding == "json")
        except ConnectionClosed as e:
            raise _closed(e) from None

    def recv(self, timeout_s: float | None = None) -> Any:
        """The reply to the oldest frame not yet read: the route's answer; :class:`ApiError` if rejected."""
        try:
            message = self.connection.recv(timeout=timeout_s, decode=False)
        except ConnectionClosed as e:
            raise _closed(e) from None
        return _answer(message, self._model, self.encoding)

    def predict(self, observations: Iterable[Observation | Mapping[str, Any]]) -> Any:
        """Send one frame and wait for its reply."""
        self.send(observations)
        return self.recv()

    def close(self) -> None:
        """Close the stream (normal closure, 1000)."""
        self.connection.close()

    def __enter__(self) -> TrajpredStream:
        self.connection.__enter__()  # the connection's own context: closed with the stream
        return self

    def __exit__(self, *exc: Any) -> None:
        self.connection.__exit__(*exc)


class AsyncTrajpredStream:
    """The asynchronous twin of :class:`TrajpredStream` (``async with client.stream(...) as s``)."""

    def __init__(
        self, url: str, headers: dict[str, str], route: StreamRoute, encoding: Encoding, open_timeout_s: float
    ) -> None:
        self._url = url
        self._headers = headers
        self._open_timeout_s = open_timeout_s
        self.encoding = encoding
        self._model: type[BaseModel] = ABPredictResponse if route == "ab" else PredictResponse
        self.connection: AsyncConnection | None = None

    async def __aenter__(self) -> AsyncTrajpredStream:
        self.connection = await async_connect(
            self._url, additional_headers=self._headers, open_timeout=self._open_timeout_s, max_size=None
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _open(self) -> AsyncConnection:
        if self.connection is None:
            raise RuntimeError("the stream is not open: use it as `async with client.stream(...) as s`")
        return self.connection

    async def send(self, observations: Iterable[Observation | Mapping[str, Any]]) -> None:
        """Send one frame without waiting for its reply."""
        try:
            await self._open().send(_frame(observations, self.encoding), text=self.encoding == "json")
        except ConnectionClosed as e:
            raise _closed(e) from None

    async def recv(self) -> Any:
        """The reply to the oldest frame not yet read."""
        try:
            message = await self._open().recv(decode=False)
        except ConnectionClosed as e:
            raise _closed(e) from None
        return _answer(message, self._model, self.encoding)

    async def predict(self, observations: Iterable[Observation | Mapping[str, Any]]) -> Any:
        """Send one frame and wait for its reply."""
        await self.send(observations)
        return await self.recv()

    async def close(self) -> None:
        """Close the stream (normal closure, 1000)."""
        if self.connection is not None:
            await self.connection.close()


def open_stream(
    base_url: str,
    headers: dict[str, str],
    route: StreamRoute,
    layout: Layout,
    encoding: Encoding,
    open_timeout_s: float,
    modes: int | None = None,
) -> TrajpredStream:
    """Connect a synchronous stream (the handshake is refused, ``InvalidStatus``, without a valid key)."""
    connection = connect(
        stream_url(base_url, route, layout, modes),
        additional_headers=headers,
        open_timeout=open_timeout_s,
        max_size=None,  # the server bounds the answer (413 answer_too_large), not the client
    )
    return TrajpredStream(connection, route, encoding)
