"""``ipnet serve``'s WebSocket protocol on a real uvicorn server (a loopback port, a thread of this process):
UTF-8 bytes sent as text frames as they are, and refused in the states where uvicorn refuses a ``str``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect

from service.protocol import TEXT_BYTES_EXTENSION, draining_ws_protocol
from tests.support import free_port


class _Echo:
    """Answers each text message four ways: its UTF-8 bytes as a memoryview and as bytes (the extension),
    as a ``str``, and in a binary frame; records the extensions its scope advertised. The message "close"
    closes the connection, then sends once with bytes and once with a ``str``: what each raised is kept."""

    def __init__(self) -> None:
        self.extensions: dict[str, Any] | None = None
        self.refusals: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        self.extensions = dict(scope.get("extensions") or {})
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message["text"] == "close":
                await send({"type": "websocket.close", "code": 1000})
                for late in (b"late", "late"):
                    try:
                        await send({"type": "websocket.send", "text": late})
                    except Exception as e:
                        self.refusals.append(f"{type(e).__name__}: {e}")
                return
            data = message["text"].encode()
            await send({"type": "websocket.send", "text": memoryview(data)})
            await send({"type": "websocket.send", "text": data})
            await send({"type": "websocket.send", "text": message["text"]})
            await send({"type": "websocket.send", "bytes": data})


@pytest.fixture
def echo_server() -> Iterator[tuple[str, _Echo]]:
    app = _Echo()
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        ws=draining_ws_protocol(lambda: None),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.01)
        assert thread.is_alive(), "uvicorn did not start"
    try:
        yield f"ws://127.0.0.1:{port}/", app
    finally:
        server.should_exit = True
        thread.join(10)


def test_utf8_bytes_are_sent_as_text_frames_unchanged(echo_server: tuple[str, _Echo]) -> None:
    url, app = echo_server
    text = '{"agent_id": "véh-17 ✓", "x": 1.5}'
    with connect(url) as ws:
        ws.send(text)
        replies = [ws.recv() for _ in range(4)]
    assert app.extensions is not None and TEXT_BYTES_EXTENSION in app.extensions
    # a text frame (websockets gives a str) for the bytes-like text, byte for byte the same as for the str
    assert replies[:3] == [text, text, text]
    assert replies[3] == text.encode()  # "bytes" is still a binary frame


def test_a_send_after_the_close_is_refused_as_uvicorn_refuses_it(echo_server: tuple[str, _Echo]) -> None:
    """The extension changes what ``text`` may hold, not the protocol's states."""
    url, app = echo_server
    with connect(url) as ws:
        ws.send("close")
        with pytest.raises(ConnectionClosedOK):
            ws.recv()
    deadline = time.monotonic() + 5
    while len(app.refusals) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(app.refusals) == 2 and app.refusals[0] == app.refusals[1], app.refusals
    assert "after sending 'websocket.close'" in app.refusals[0]
