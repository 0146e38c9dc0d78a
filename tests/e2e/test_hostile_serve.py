"""A real ``ipnet serve`` under the cheap attacks a public service meets: connections that never send, stop
mid-header or never read their answer, oversized headers and URLs, slow bodies. Each is bounded at the
connection (``service/protocol.py``) or before a processing slot, counted, and the service keeps serving."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clients.client import TrajpredClient
from tests.support import Server, serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "hostile-test-key-1"
LIMITS = {
    "TRAJPRED_MAX_CONNECTIONS": "12",
    "TRAJPRED_HEADER_TIMEOUT_S": "1.5",
    "TRAJPRED_MAX_HEADER_BYTES": "8192",
    "TRAJPRED_WRITE_TIMEOUT_S": "2",
    "TRAJPRED_API_KEYS": KEY,
    "TRAJPRED_SNAPSHOT_PATH": "",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, weights: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("hostile")
    with serve({**LIMITS, "TRAJPRED_WEIGHTS_DIR": str(weights)}, tmp / "serve.log") as s:
        yield s


def _refusals(server: Server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith("trajpred_connection_refusals_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            out[reason] = float(line.rsplit(" ", 1)[1])
    return out


def _connect(server: Server) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return s


def _closed_within(s: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``s`` (EOF) within ``seconds``."""
    s.settimeout(seconds)
    try:
        while True:
            if not s.recv(4096):
                return True
    except (TimeoutError, OSError):
        return False
    finally:
        s.close()


def test_oversized_request_lines_and_headers_are_refused_at_once(server: Server) -> None:
    before = _refusals(server)
    r = httpx.get(f"{server.url}/healthz", headers={"X-Big": "a" * 50_000}, timeout=10)
    assert r.status_code == 431 and r.json()["error"]["code"] == "headers_too_large"
    r = httpx.get(f"{server.url}/healthz?" + "a" * 50_000, timeout=10)
    assert r.status_code == 414 and r.json()["error"]["code"] == "uri_too_long"
    after = _refusals(server)
    assert after["headers_too_large"] == before["headers_too_large"] + 1
    assert after["uri_too_long"] == before["uri_too_long"] + 1
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_a_header_that_never_ends_is_refused_once_past_the_bound(server: Server) -> None:
    """httptools reports a header only once it is whole: one that keeps growing must be cut by the bytes
    that arrived, not wait for its end (a 20 MB header was buffered whole)."""
    before = _refusals(server)
    s = _connect(server)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    try:
        while sent < 20 * 2**20:
            s.sendall(b"a" * 4096)
            sent += 4096
    except OSError:  # the server answered and closed: the rest of the header has nowhere to go
        pass
    s.settimeout(5)
    answer = s.recv(64)
    s.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer
    assert sent < 4 * 2**20  # cut after the 8 KB bound plus what the socket buffers held
    assert _refusals(server)["headers_too_large"] == before["headers_too_large"] + 1


def test_idle_half_open_and_excess_connections_are_closed(server: Server) -> None:
    before = _refusals(server)
    idle = _connect(server)
    half = _connect(server)
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never ends its headers
    assert _closed_within(idle, 5.0) and _closed_within(half, 5.0)
    # at the cap, a new connection takes the place of the longest-idle one: an idle flood cannot lock out a
    # client that sends its request at once
    held = [_connect(server) for _ in range(12)]
    time.sleep(0.3)
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    assert _closed_within(held[0], 2.0)  # the oldest idle connection gave way
    for s in held:
        s.close()
    time.sleep(0.3)
    # when every connection is busy with a request (here: bodies that stall), one more is answered 503
    busy = []
    for _ in range(12):
        s = _connect(server)
        s.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        busy.append(s)
    time.sleep(0.3)
    extra = _connect(server)
    extra.settimeout(5)
    assert extra.recv(64).startswith(b"HTTP/1.1 503")
    extra.close()
    for s in busy:
        s.close()
    time.sleep(0.3)
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    after = _refusals(server)
    assert after["header_timeout"] >= before["header_timeout"] + 2
    assert after["idle_evicted"] >= before["idle_evicted"] + 1
    assert after["too_many_connections"] >= before["too_many_connections"] + 1


def test_a_client_that_never_reads_its_answer_is_disconnected(server: Server) -> None:
    before = _refusals(server)
    frame = [{"agent_id": f"big-{i}", "timestamp": time.time(), "x": float(i), "y": 0.0} for i in range(3000)]
    body = json.dumps({"observations": frame}).encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window: the answer backs up at once
    s.connect(("127.0.0.1", server.port))
    s.sendall(
        b"POST /v1/ab/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"X-API-Key: {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _refusals(server)["write_timeout"] == before["write_timeout"]:
        time.sleep(0.5)
    s.close()
    assert _refusals(server)["write_timeout"] == before["write_timeout"] + 1
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_slow_bodies_do_not_starve_authenticated_clients(server: Server) -> None:
    """Connections sending a body at a few bytes a second (without a valid key, and with one) hold no
    processing slot: meanwhile every request of a client with a key is answered."""
    stop = threading.Event()

    def slow(key: str) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"X-API-Key: {key}\r\nContent-Length: 100000\r\n\r\n".encode()
            )
            while not stop.is_set():
                try:
                    s.sendall(b" ")
                except OSError:
                    return
                stop.wait(0.5)

    threads = [
        threading.Thread(target=slow, args=(KEY if i % 2 else "not-the-key",), daemon=True) for i in range(8)
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)
    try:
        with TrajpredClient(server.url, api_key=KEY) as c:
            codes = []
            for k in range(20):
                obs = [{"agent_id": "steady", "timestamp": time.time() + 0.001 * k, "x": 0.1 * k, "y": 0.0}]
                try:
                    c.predict(obs)
                    codes.append(200)
                except Exception as e:
                    codes.append(getattr(e, "status", -1))
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert codes == [200] * 20


def test_agent_ids_with_percent_signs_reach_their_agent(server: Server) -> None:
    with TrajpredClient(server.url, api_key=KEY) as c:
        ids = ["%2e", "a%2F..%2Fb", "100%"]
        c.predict([{"agent_id": a, "timestamp": time.time(), "x": 1.0, "y": 2.0} for a in ids])
        for a in ids:
            assert c.agent(a).agent_id == a
            assert c.delete_agent(a).deleted
