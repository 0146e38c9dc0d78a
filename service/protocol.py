"""The HTTP connection as ``ipnet serve`` runs it: uvicorn's httptools protocol with the bounds a public
service needs before any request reaches the application.

uvicorn bounds none of these by itself: a connection that never sends a byte, or stops in the middle of its
headers, is held for ever; a header or URL grows without limit; a client that never reads its answer keeps
it in memory; and there is no cap on connections. :func:`guarded_protocol` returns a subclass of
``HttpToolsProtocol`` (uvicorn's ``http=`` accepts a protocol class) that adds, per connection:

- a cap on open connections (``TRAJPRED_MAX_CONNECTIONS``): at the cap a new connection takes the place of the
  connection that has waited longest for its next request's headers (idle, or stalled mid-header), which is
  closed; only when every connection is busy with a request is the new one answered 503 and closed. So a
  flood of idle connections, re-opened as fast as they are closed, cannot keep a client that sends its
  request at once out: that client's connection is the newest, and leaves the idle set within milliseconds;
- a deadline for the request line and headers (``TRAJPRED_HEADER_TIMEOUT_S``), from the connection's start or
  the previous answer: idle and half-open connections are closed;
- a bound on the request line and headers (``TRAJPRED_MAX_HEADER_BYTES``): 414 for the URL, 431 for headers;
- a deadline for a paused write (``TRAJPRED_WRITE_TIMEOUT_S``): a client that stops reading its answer is
  disconnected and the answer freed.

Every refusal is logged and counted in ``trajpred_connection_refusals_total{reason}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("service.protocol")

#: why a connection was refused or closed by the guards (the ``reason`` label)
REFUSAL_REASONS = (
    "too_many_connections",
    "idle_evicted",
    "header_timeout",
    "uri_too_long",
    "headers_too_large",
    "write_timeout",
)


class _Refused(Exception):
    """Raised from a parser callback: the request is refused with ``status`` (the parser stops there)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's protocol with connection, header and write bounds (class attributes set by
    :func:`guarded_protocol`)."""

    max_connections: int = 10_000
    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 10.0
    write_timeout_s: float = 30.0
    count_refusal: Callable[[str], None] = staticmethod(lambda reason: None)
    #: the server's connections waiting for a request's headers, longest-waiting first (one dict per server:
    #: :func:`guarded_protocol` gives each class its own)
    waiting: ClassVar[dict[GuardedHttpToolsProtocol, None]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._refusal: _Refused | None = None
        # bytes received since the current request began while its headers are incomplete: httptools hands
        # a header to on_header only once it is whole, buffering it until then, so a header that never ends
        # is bounded here, by what arrived, not by what the parser reported
        self._awaiting_headers = True
        self._unparsed_header_bytes = 0

    # --- connections ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            oldest = next(iter(self.waiting), None)
            if oldest is None:  # every connection is serving a request: nothing to give way
                self._refuse_now(
                    _Refused(
                        503, "too_many_connections", f"more than {self.max_connections} open connections"
                    )
                )
                return
            oldest._evict()
        self._wait_for_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._wait_for_headers()

    def _wait_for_headers(self) -> None:
        """The connection waits for a request's headers: deadline armed, byte count reset, evictable."""
        self._awaiting_headers, self._unparsed_header_bytes = True, 0
        self.waiting.pop(self, None)
        self.waiting[self] = None
        self._arm_header_timer()

    def _evict(self) -> None:
        self._count("idle_evicted", f"closed to make room at {self.max_connections} connections")
        self.waiting.pop(self, None)
        self._disarm()
        self.transport.close()

    # --- request line and headers --------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._unparsed_header_bytes += len(data)
        super().data_received(data)
        # still inside the header section after more than the bound arrived (a chunk that completes the
        # headers and carries body bytes passes: the headers are complete after it)
        if (
            self._awaiting_headers
            and self._unparsed_header_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse_now(
                _Refused(
                    431, "headers_too_large", f"request headers longer than {self.max_header_bytes} bytes"
                )
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        if self._header_bytes > self.max_header_bytes:
            self._stop(
                _Refused(414, "uri_too_long", f"request line longer than {self.max_header_bytes} bytes")
            )
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.max_header_bytes:
            self._stop(
                _Refused(
                    431, "headers_too_large", f"request headers longer than {self.max_header_bytes} bytes"
                )
            )
        super().on_header(name, value)

    def _stop(self, refused: _Refused) -> None:
        """Stop the parser from a callback: it raises a parser error, and uvicorn answers it through
        :meth:`send_400_response`, which answers this refusal instead."""
        self._refusal = refused
        raise refused

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self.waiting.pop(self, None)  # serving a request now: not evictable until it is answered
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """The parser stopped: on a refusal of ours (raised from a callback) answer its status instead."""
        if self._refusal is None:
            super().send_400_response(msg)
            return
        self._refuse_now(self._refusal)

    # --- writes ----------------------------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout_s, self._write_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        self._write_timer = None
        self._count("write_timeout", f"the client read nothing for {self.write_timeout_s:g} s")
        self.transport.abort()  # drops the unread answer: its memory is freed

    # --- helpers ---------------------------------------------------------------------------------------
    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timed_out)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being served: its own deadlines apply
        self._count("header_timeout", f"no complete request headers within {self.header_timeout_s:g} s")
        self.transport.close()

    def _disarm(self) -> None:
        self.waiting.pop(self, None)
        for timer in (self._header_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._write_timer = None
        self._unset_keepalive_if_required()

    def _refuse_now(self, refused: _Refused) -> None:
        self._count(refused.reason, refused.message)
        body = json.dumps(
            {"error": {"status": refused.status, "code": refused.reason, "message": refused.message}}
        ).encode()
        head = [
            STATUS_LINE[refused.status],
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n",
        ]
        if refused.status == 503:
            head.append(b"retry-after: 1\r\n")
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self.transport.close()
        self._disarm()

    def _count(self, reason: str, message: str) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
        log.warning("connection from %s refused or closed (%s): %s", client, reason, message)
        self.count_refusal(reason)


def guarded_protocol(
    max_connections: int,
    max_header_bytes: int,
    header_timeout_s: float,
    write_timeout_s: float,
    count_refusal: Callable[[str], None],
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with these bounds."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_connections": max_connections,
            "max_header_bytes": max_header_bytes,
            "header_timeout_s": header_timeout_s,
            "write_timeout_s": write_timeout_s,
            "count_refusal": staticmethod(count_refusal),
            "waiting": {},
        },
    )


#: the ASGI extension the stream's protocol advertises in its scope: a ``websocket.send`` message's ``text`` may
#: be UTF-8 bytes (any bytes-like object), sent as a text frame as it is. A JSON answer is written as bytes;
#: without the extension it is decoded to a ``str`` that the server encodes again, two copies and a UTF-8
#: check of megabytes at 1,000-agent frames (``service.stream`` sends a ``str`` where the extension is absent)
TEXT_BYTES_EXTENSION = "ipnet.websocket.send.text_bytes"


def draining_ws_protocol(drain: Callable[[], None]) -> type[Any]:
    """The WebSocket protocol class for ``uvicorn.run(ws=...)``: uvicorn's sans-I/O protocol that

    - at a graceful shutdown does not cut an open stream with 1012 (uvicorn's default) but tells it to drain
      (``drain()``: it stops reading, answers what it read and closes with 1001); uvicorn waits for the
      connection to close, up to its graceful timeout;
    - sends UTF-8 bytes as a text frame without decoding them (:data:`TEXT_BYTES_EXTENSION`).
    """
    from uvicorn.protocols.utils import ClientDisconnected
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.exceptions import InvalidState

    class DrainingWebSocketsProtocol(WebSocketsSansIOProtocol):
        def shutdown(self) -> None:
            if self.handshake_complete and self.initial_response is None and not self.close_sent:
                drain()
                return
            super().shutdown()

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)  # absent when the handshake was refused
            if scope is not None:
                scope["extensions"][TEXT_BYTES_EXTENSION] = {}

        async def send(self, message: Any) -> None:
            text = message.get("text") if message["type"] == "websocket.send" else None
            if text is None or isinstance(text, str):
                await super().send(message)
                return
            await self.writable.wait()
            if self.disconnected:
                raise ClientDisconnected()
            if not self.handshake_complete or self.close_sent or self.initial_response is not None:
                await super().send(message)  # uvicorn's own refusal of a send in this state
                return
            try:
                self.conn.send_text(text)
                self.transport.write(b"".join(self.conn.data_to_send()))
            except InvalidState:
                raise ClientDisconnected() from None

    return DrainingWebSocketsProtocol
