"""The typed client against the app (TestClient with lifespan) and against real failures."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clients.client import ApiError, RetryPolicy, TrajpredClient, parse_metrics
from clients.processes import REDIS_NO_PERSISTENCE, start_redis, stop_process
from service.schemas import ABPredictResponse, ABReport, Observation, PredictResponse
from tests.service.conftest import MakeClient
from tests.support import Replay, free_port

KEY = "client-test-key-1"


def _agents(replay: Replay, i: int) -> set[str]:
    return {o["agent_id"] for o in replay.frames[replay.times[i]]}


def test_every_route_answers_typed(make_client: MakeClient, replay: Replay):
    retries: list[tuple[int, str, float]] = []
    c = TrajpredClient(http=make_client(), on_retry=lambda *a: retries.append(a))
    assert c.healthz().status == "ok"
    ready = c.readyz()
    assert ready.status == "ready" and set(ready.models) == {"ipnet", "baseline"} and ready.store == "memory"
    assert c.ping(b'{"observations": []}') == len(b'{"observations": []}')

    frame0 = replay.frames[replay.times[0]]
    p = c.predict(frame0)
    assert isinstance(p, PredictResponse) and p.model == "ipnet"
    assert {x.agent_id for x in p.predictions} == _agents(replay, 0)
    assert all(x.steps == 1 and x.new_track for x in p.predictions)
    b = c.baseline_predict([Observation.model_validate(o) for o in frame0])  # schema objects work too
    assert b.model == "gru" and {x.agent_id for x in b.predictions} == _agents(replay, 0)
    # A/B keeps its own per-model states: the second frame advances both to 2 steps
    ab = c.ab_predict(replay.frames[replay.times[1]])
    assert isinstance(ab, ABPredictResponse)
    assert {x.agent_id for x in ab.predictions.ipnet} == _agents(replay, 1)
    both = _agents(replay, 0) & _agents(replay, 1)
    assert {x.steps for x in ab.predictions.baseline if x.agent_id in both} == {2}
    assert len(ab.predictions.ipnet[0].trajectory) > 10
    # the compact layout: same predictions from a twin server fed the same frames
    twin = TrajpredClient(http=make_client())
    twin.predict(frame0, layout="columns")
    twin.baseline_predict(frame0)
    ab_cols = twin.ab_predict(replay.frames[replay.times[1]], layout="columns")
    assert [x.points() for x in ab_cols.predictions.ipnet] == [x.points() for x in ab.predictions.ipnet]

    agent = sorted(both)[0]
    summary = c.agent(agent)
    assert summary.agent_id == agent and summary.models["ipnet"].steps == 2
    assert summary.models["ipnet"].neuron_temperatures_k
    assert sorted(c.delete_agent(agent).deleted) == ["gru", "ipnet"]
    with pytest.raises(ApiError) as e:
        c.agent(agent)
    assert e.value.status == 404 and e.value.code == "not_found"

    report = c.ab_report()
    assert isinstance(report, ABReport) and set(report.models) == {"ipnet", "baseline"}
    assert c.ab_report(agent_type="pedestrian").agent_type == "pedestrian"
    both_filters = c.ab_report(agent_type="vehicle", interval="10hz")
    assert (both_filters.agent_type, both_filters.interval) == ("vehicle", "10hz")
    m = parse_metrics(c.metrics())
    assert m['trajpred_tracked_agents{model="ipnet"}'] == len(_agents(replay, 0) | _agents(replay, 1)) - 1
    assert retries == []  # nothing here is retryable


def test_errors_are_typed_and_not_retried(make_client: MakeClient):
    retries: list[object] = []
    c = TrajpredClient(http=make_client(), on_retry=lambda *a: retries.append(a))
    c.predict([{"agent_id": "a/b c", "timestamp": 10.0, "x": 1.0, "y": 2.0}])
    with pytest.raises(ApiError) as e:
        c.predict([{"agent_id": "a/b c", "timestamp": 10.0, "x": 1.5, "y": 2.0}])
    assert e.value.status == 409 and e.value.code == "stale_timestamp" and e.value.attempts == 1
    with pytest.raises(ApiError) as e:
        c.predict(
            [
                {"agent_id": "ok", "timestamp": 1.0, "x": 1.0, "y": 2.0},
                {"agent_id": "bad", "timestamp": 1.0, "x": True, "y": 2.0},
            ]
        )
    assert e.value.status == 422 and e.value.error is not None
    assert (e.value.error.field, e.value.error.index) == ("x", 1)
    # an id with a slash and a space reaches the right agent
    assert c.agent("a/b c").models["ipnet"].last_timestamp == 10.0
    assert retries == []


def test_api_key_is_sent(make_client: MakeClient):
    app = make_client(api_keys=KEY)
    with pytest.raises(ApiError) as e:
        TrajpredClient(http=app).ab_report()
    assert e.value.status == 401 and e.value.error is not None and e.value.error.field == "X-API-Key"
    assert TrajpredClient(http=app, api_key=KEY).ab_report().pending == 0
    assert TrajpredClient(http=app).healthz().status == "ok"  # ops routes stay open


class _Redis:
    """A real redis-server on a fixed loopback port that can be stopped and started again."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.port = tmp, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_redis(self.port, self.tmp, *REDIS_NO_PERSISTENCE)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)
            self.proc = None


@pytest.fixture
def restartable_redis(tmp_path: Path) -> Iterator[_Redis]:
    r = _Redis(tmp_path)
    r.start()
    try:
        yield r
    finally:
        r.stop()


def _obs(agent: str, t: float) -> list[dict[str, object]]:
    return [{"agent_id": agent, "timestamp": t, "x": t, "y": 0.0, "agent_type": "vehicle"}]


def test_503_from_a_stopped_redis_is_retried_then_raised_or_recovered(
    make_client: MakeClient, restartable_redis: _Redis
):
    app = make_client(store=restartable_redis.url, redis_key_prefix="clienttest")
    retries: list[tuple[int, str, float]] = []
    policy = RetryPolicy(retries=2, backoff_s=0.01, max_backoff_s=0.05)
    c = TrajpredClient(http=app, retry=policy, on_retry=lambda *a: retries.append(a))
    assert c.predict(_obs("r1", 1.0)).predictions[0].steps == 1

    restartable_redis.stop()
    with pytest.raises(ApiError) as e:
        c.predict(_obs("r1", 1.1))
    assert e.value.status == 503 and e.value.attempts == 3
    assert [r[0] for r in retries] == [1, 2] and all(r[1] == "HTTP 503" for r in retries)
    with pytest.raises(ApiError) as e:
        c.readyz()
    assert e.value.status == 503

    # the store comes back while the client is backing off: the same call then succeeds
    retries.clear()
    patient = TrajpredClient(
        http=app,
        retry=RetryPolicy(retries=40, backoff_s=0.05, max_backoff_s=0.1),
        on_retry=lambda *a: retries.append(a),
    )
    timer = threading.Timer(0.4, restartable_redis.start)
    timer.start()
    try:
        answer = patient.predict(_obs("r2", 1.0))
    finally:
        timer.join()
    assert answer.predictions[0].agent_id == "r2"
    assert 1 <= len(retries) <= 40
    assert patient.readyz().store == "redis"


def test_connection_refused_is_retried_a_bounded_number_of_times():
    retries: list[tuple[int, str, float]] = []
    port = free_port()  # nothing listens there
    c = TrajpredClient(
        f"http://127.0.0.1:{port}",
        retry=RetryPolicy(retries=3, backoff_s=0.01, max_backoff_s=0.02),
        on_retry=lambda *a: retries.append(a),
    )
    with c, pytest.raises(httpx.ConnectError):
        c.predict(_obs("x", 1.0))
    assert [r[0] for r in retries] == [1, 2, 3] and "ConnectError" in retries[0][1]
    with pytest.raises(TimeoutError):
        TrajpredClient(f"http://127.0.0.1:{port}").wait_ready(timeout_s=0.3, poll_s=0.05)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("0.25", 0.25), ("3", 1.0), ("-5", 0.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_replaces_the_backoff_and_is_capped(header: str, expected: float):
    policy = RetryPolicy(backoff_s=0.5, max_backoff_s=1.0)
    assert policy.wait_s(1, header) == pytest.approx(expected)
    # without a hint: exponential with jitter in [base/2, base], capped
    for attempt, base in ((1, 0.5), (2, 1.0), (5, 1.0)):
        assert base / 2 <= policy.wait_s(attempt, None) <= base
    assert 0.25 <= policy.wait_s(1, "not a date") <= 0.5


def test_agent_ids_with_slashes_and_dots_reach_their_own_agent(make_client: MakeClient) -> None:
    """``delete_agent("a/../victim")`` must not delete ``victim``; ids ``.`` and ``..`` are reachable."""
    c = TrajpredClient(http=make_client())
    # (an id with a percent sign is checked against a real server in tests/e2e: the TestClient decodes the
    # path twice)
    ids = ["victim", "a/../victim", ".", "..", "x/./y", "sp ace?#"]
    c.predict(
        [{"agent_id": a, "timestamp": 1_764_000_000.0, "x": float(i), "y": 0.0} for i, a in enumerate(ids)]
    )
    for a in ids:
        assert c.agent(a).agent_id == a
    assert c.delete_agent("a/../victim").deleted
    assert c.agent("victim").agent_id == "victim"  # untouched
    with pytest.raises(ApiError) as e:
        c.agent("a/../victim")
    assert e.value.status == 404
    for a in (".", ".."):
        assert c.delete_agent(a).deleted
    assert c.agent("x/./y").agent_id == "x/./y" and c.agent("sp ace?#").agent_id == "sp ace?#"
