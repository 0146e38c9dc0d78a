"""Overload on a real `ipnet serve`: a bounded queue answers 503 with Retry-After, never unbounded waits."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients.processes import REDIS_NO_PERSISTENCE, start_redis, stop_process
from tests.support import Server, free_port, serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_WAIT_S = 3.0


def _inflight(server: Server) -> dict[str, float]:
    text = server.client.get("/metrics").text
    return {
        s.labels["state"]: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "trajpred_inflight_requests"
    }


def _until(check: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _slow_request(port: int, body: bytes) -> socket.socket:
    """Send the headers and half the body of a POST, then hold: the request keeps its slot."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /v1/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    s.sendall(head + body[: len(body) // 2])
    return s


def _finish(s: socket.socket, body: bytes) -> bytes:
    s.sendall(body[len(body) // 2 :])
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return data


def _frame(tag: str, n: int) -> dict[str, Any]:
    return {
        "observations": [
            {"agent_id": f"{tag}-{i}", "timestamp": 1000.0, "x": float(i), "y": 1.0, "agent_type": "vehicle"}
            for i in range(n)
        ]
    }


def _timed_post(url: str, body: dict[str, Any]) -> tuple[int, float, str | None, str]:
    start = time.monotonic()
    r = httpx.post(f"{url}/v1/predict", json=body, timeout=60)
    return r.status_code, time.monotonic() - start, r.headers.get("retry-after"), r.text


def test_bounded_queue_answers_503_with_retry_after(weights: Path, tmp_path: Path):
    redis_port = free_port()
    redis = start_redis(redis_port, tmp_path, *REDIS_NO_PERSISTENCE)
    env = {
        "TRAJPRED_WEIGHTS_DIR": str(weights),
        "TRAJPRED_SNAPSHOT_PATH": "",
        "TRAJPRED_STORE": f"redis://127.0.0.1:{redis_port}/0",
        "TRAJPRED_MAX_CONCURRENT_REQUESTS": "2",
        "TRAJPRED_MAX_QUEUED_REQUESTS": "2",
        "TRAJPRED_MAX_QUEUE_WAIT_S": str(MAX_WAIT_S),
        "TRAJPRED_RETRY_AFTER_S": "2",
    }
    try:
        with serve(env, tmp_path / "serve.log") as server, concurrent.futures.ThreadPoolExecutor(32) as pool:
            # the store stops answering: the next two requests take both processing slots and wait in it
            redis.send_signal(signal.SIGSTOP)
            try:
                held = [pool.submit(_timed_post, server.url, _frame(f"h{k}", 5)) for k in range(2)]
                _until(lambda: _inflight(server).get("running") == 2, "two running requests")
                # two more wait in the queue
                queued = [pool.submit(_timed_post, server.url, _frame(f"q{k}", 5)) for k in range(2)]
                _until(lambda: _inflight(server).get("queued") == 2, "two queued requests")

                # the burst beyond slots + queue: an immediate 503 with Retry-After, no state touched
                burst = list(pool.map(lambda k: _timed_post(server.url, _frame(f"b{k}", 5)), range(20)))
                assert {code for code, *_ in burst} == {503}
                assert all(retry == "2" for _, _, retry, _ in burst)
                assert all('"overloaded"' in text for *_, text in burst)
                assert max(elapsed for _, elapsed, _, _ in burst) < 2.0
                # probes are never queued: a load balancer still sees the process as live
                assert server.client.get("/healthz").status_code == 200

                # the queued ones give up after the queue wait: latency stays bounded too
                for f in queued:
                    code, elapsed, retry, text = f.result(timeout=30)
                    assert code == 503 and retry == "2" and "no processing slot" in text
                    assert MAX_WAIT_S - 0.5 < elapsed < MAX_WAIT_S + 5
            finally:
                redis.send_signal(signal.SIGCONT)

            # the store answers again: the held requests finish, they were never dropped
            for f in held:
                code, _, _, text = f.result(timeout=30)
                assert code == 200, text[:200]
            assert server.client.get("/readyz").status_code == 200
            for tag in ["q0", "q1", *(f"b{k}" for k in range(20))]:
                assert server.client.get(f"/v1/agents/{tag}-0").status_code == 404

            # a real burst of predict requests: every answer is a 200 or a fast 503, nothing else
            results = list(pool.map(lambda k: _timed_post(server.url, _frame(f"r{k}", 400)), range(48)))
            codes = [code for code, *_ in results]
            assert set(codes) <= {200, 503}, {c: t for c, _, _, t in results if c not in (200, 503)}
            assert codes.count(200) >= 4
            for k, (code, _, retry, _) in enumerate(results):
                # a 503 changed nothing; a 200 applied its frame exactly once
                summary = server.client.get(f"/v1/agents/r{k}-399")
                if code == 200:
                    assert summary.json()["models"]["ipnet"]["steps"] == 1
                else:
                    assert retry == "2" and summary.status_code == 404
            _until(lambda: _inflight(server) == {"running": 0.0, "queued": 0.0}, "an idle server")
            print(
                f"burst of 48 x 400 agents on 2 slots + 2 queue places: {codes.count(200)} served, "
                f"{codes.count(503)} refused with 503; slowest {max(e for _, e, _, _ in results):.2f} s"
            )
    finally:
        redis.send_signal(signal.SIGCONT)
        stop_process(redis, 10)


def _read_answer(s: socket.socket) -> bytes:
    data = b""
    while not data.rstrip().endswith(b"}"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    return data


def test_a_stalled_body_holds_no_slot_and_times_out(weights: Path, tmp_path: Path):
    """The body is read before a processing slot is taken: a client stalled mid-body leaves the only slot
    free for others, and gets 408 at the body deadline."""
    env = {
        "TRAJPRED_WEIGHTS_DIR": str(weights),
        "TRAJPRED_SNAPSHOT_PATH": "",
        "TRAJPRED_MAX_CONCURRENT_REQUESTS": "1",
        "TRAJPRED_MAX_QUEUED_REQUESTS": "0",
        "TRAJPRED_BODY_READ_TIMEOUT_S": "2",
    }
    with serve(env, tmp_path / "serve.log") as server:
        stalled = [_slow_request(server.port, b'{"pad": "' + b"x" * 100 + b'"}') for _ in range(3)]
        time.sleep(0.3)
        assert _inflight(server).get("running", 0.0) == 0.0
        code, elapsed, _, text = _timed_post(server.url, _frame("meanwhile", 3))  # not queued behind them
        assert code == 200 and elapsed < 2.0, text[:200]
        for s in stalled:
            answer = _read_answer(s)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b'"body_timeout"' in answer
        assert (
            'trajpred_rejected_requests_total{reason="body_timeout"} 3.0'
            in server.client.get("/metrics").text
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_concurrent_requests", 0),
        ("max_queued_requests", -1),
        ("max_queue_wait_s", 0.0),
        ("retry_after_s", 0),
    ],
)
def test_overload_settings_are_validated(field: str, value: float):
    from service.settings import Settings

    with pytest.raises(ValueError, match=field):
        Settings(**{field: value})
