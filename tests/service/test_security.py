"""Security: constant-time API key check, namespaced Redis keys, no per-agent metric labels, no pickle."""

from __future__ import annotations

import inspect
import re
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from service import deps
from tests.service.conftest import MakeClient
from tests.service.helpers import obs
from tests.support import REPO, redis_server

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
    source = inspect.getsource(deps.require_api_key)
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
    pattern = re.compile(r"tenant-a:(s:(ipnet|gru):.+|idx:(ipnet|gru))")
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
