"""Security: constant-time API key check, namespaced Redis keys, no per-agent metric labels, no pickle."""

from __future__ import annotations

import inspect
import re
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from clients.processes import redis_server
from service import deps
from tests.service.conftest import MakeClient
from tests.service.helpers import obs
from tests.support import REPO

KEY = "k3y-correct-horse-battery"


def test_api_keys_are_checked_in_constant_time(make_client: MakeClient):
    c = make_client(api_keys=f"other-key-000,{KEY}")
    body = {"observations": [obs("sec-1", 1000.0, 1.0, 2.0)]}
    wrong: list[str | bytes | None] = [
        None,
        "",
        KEY[:-1],
        KEY + "x",
        KEY.upper(),
        "k3y-correct-horse-batterü".encode(),
        "other-key-00",
    ]
    for key in wrong:
        headers = {} if key is None else {"X-API-Key": key}
        r = c.post("/v1/predict", json=body, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "ApiKey", key
        assert r.json()["error"]["code"] == "unauthorized"
    assert c.get("/v1/agents/sec-1", headers={"X-API-Key": KEY}).status_code == 404  # nothing applied
    assert c.post("/v1/predict", json=body, headers={"X-API-Key": KEY}).status_code == 200
    assert c.get("/healthz").status_code == 200  # probes need no key
    # the comparison itself: a digest compare over every configured key, never == or a set lookup
    source = inspect.getsource(deps.key_allowed)  # the one check of the routes, the middleware and the stream
    assert "compare_digest(" in source
    assert not re.search(r"key\s*(==|!=|in)\s*keys", source)


def test_redis_keys_are_namespaced(make_client: MakeClient, tmp_path: Path):
    agents = ["plain", "a:b:c", "idx:ipnet", "*", "{tag}", "ü-ß", "s:gru:x"]
    with redis_server(tmp_path) as url:  # a fresh server: every key in it is the service's
        c = make_client(store=url, redis_key_prefix="tenant-a")
        body = {"observations": [obs(a, 1000.0, float(i), 0.0) for i, a in enumerate(agents)]}
        assert c.post("/v1/ab/predict", json=body).status_code == 200
        assert c.delete("/v1/agents/plain").status_code == 200
        r = redis.Redis.from_url(url)
        keys = sorted(k.decode() for k in r.scan_iter(count=1000))
        r.close()
    pattern = re.compile(r"tenant-a:(s:(ipnet|gru):.+|idx:(ipnet|gru)|scoring)")
    assert keys and all(pattern.fullmatch(k) for k in keys), keys
    states = {k for k in keys if k.startswith("tenant-a:s:")}
    assert states == {f"tenant-a:s:{m}:{a}" for m in ("ipnet", "gru") for a in agents if a != "plain"}


def _series(text: str) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return {
        (s.name, frozenset(s.labels.items()))
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def _two_frames(c: Any, agents: range, prefix: str) -> None:
    # twice, so every agent also has a history (intervals, pending predictions), not only a first step
    for t in (1000.0, 1000.1):
        for start in range(agents.start, agents.stop, 5000):
            stop = min(start + 5000, agents.stop)
            body = {"observations": [obs(f"{prefix}-{k:05d}", t, 0.1 * k, 1.0) for k in range(start, stop)]}
            assert c.post("/v1/ab/predict", json=body).status_code == 200


def test_metrics_have_no_per_agent_labels(make_client: MakeClient):
    c = make_client(scoring_min_steps=1)
    _two_frames(c, range(100), "warm")
    c.get("/metrics")  # the scrape route's own duration series exists from the second scrape on
    baseline = _series(c.get("/metrics").text)
    n = 10_000
    _two_frames(c, range(n), "agent")
    text = c.get("/metrics").text
    after = _series(text)
    grown = Counter(name for name, _ in after - baseline)
    print(
        f"/metrics series: {len(baseline)} after 100 agents, {len(after)} after {n} more; new: {dict(grown)}"
    )
    # 100 times more agents, (almost) no more series: nothing is labelled per agent
    assert len(after) <= len(baseline) + 5, grown
    assert len(after) < 1000
    assert "agent-0" not in text and "warm-0" not in text
    label_values = {v for _, labels in after for _, v in labels}
    assert len(label_values) < 150


def test_service_code_never_unpickles():
    for path in sorted((REPO / "service").glob("*.py")):
        text = path.read_text()
        assert not re.search(r"\b(pickle|marshal|shelve|dill)\b", text.replace("no pickle", "")), path.name
        assert "torch.load" not in text, path.name  # checkpoints only through models.checkpoint
    checkpoint = (REPO / "models" / "checkpoint.py").read_text()
    loads = re.findall(r"torch\.load\(.*", checkpoint)
    assert loads and all("weights_only=True" in call for call in loads)


def _asgi_post(
    app, path: str, body_parts: list[bytes], headers: list[tuple[bytes, bytes]], stall: bool = False
):
    """Drive the ASGI app directly: ``receive`` hands out ``body_parts`` (then waits for ever with
    ``stall``) and records how many were read; returns (status, body, parts read)."""
    import asyncio

    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        if read < len(body_parts):
            read += 1
            more = stall or read < len(body_parts)
            return {"type": "http.request", "body": body_parts[read - 1], "more_body": more}
        await asyncio.Event().wait()  # a client that never sends the rest
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "app": app,
    }

    async def run():
        await app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], body, read

    return scope, run


def test_an_unauthenticated_request_is_refused_from_its_headers_before_its_body_is_read(make_settings):
    import asyncio

    from service.app import create_app

    app = create_app(make_settings(api_keys=KEY))

    async def main() -> tuple[int, bytes, int]:
        async with app.router.lifespan_context(app):
            _, run = _asgi_post(
                app, "/v1/predict", [b'{"observ', b'ations": []}'], [(b"x-api-key", b"wrong-key-000")]
            )
            return await run()

    status, body, read = asyncio.run(main())
    assert status == 401 and b"unauthorized" in body
    assert read == 0  # not one byte of the body was read, nor parsed


def test_a_slow_body_holds_its_connection_not_a_processing_slot(make_settings):
    """One processing slot, no queue: a client stalled in the middle of its body must not take the slot
    from a client whose request is complete."""
    import asyncio
    import json

    from service.app import create_app

    app = create_app(
        make_settings(max_concurrent_requests=1, max_queued_requests=1, body_read_timeout_s=30.0)
    )
    body = json.dumps({"observations": [{"agent_id": "a", "timestamp": 1.0, "x": 0.0, "y": 0.0}]}).encode()

    async def main() -> tuple[int, int]:
        async with app.router.lifespan_context(app):
            _, slow = _asgi_post(app, "/v1/predict", [body[:10]], [], stall=True)
            stalled = [asyncio.create_task(slow()) for _ in range(3)]
            await asyncio.sleep(0.1)
            _, fast = _asgi_post(app, "/v1/predict", [body], [])
            status, _, _ = await asyncio.wait_for(fast(), 10)
            for t in stalled:
                t.cancel()
            runtime = app.state.runtime
            return status, int(runtime.metrics.inflight.labels(state="running")._value.get())

    status, running = asyncio.run(main())
    assert status == 200
    assert running == 0
