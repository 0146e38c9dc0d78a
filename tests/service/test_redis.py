"""The Redis store on a real redis-server: same records, optimistic commits, TTL and capacity by Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import httpx
import numpy as np
import pytest
import redis

from clients.processes import redis_server
from service.app import create_app
from service.metrics import Metrics
from service.redis_store import RedisStore
from service.settings import Settings
from service.state import AgentState, new_version
from service.store import Write
from tests.service.conftest import MakeClient
from tests.service.helpers import metric, obs
from tests.service.test_concurrency import _hammer


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def _record(last_t: float, version: int) -> bytes:
    return AgentState(
        np.zeros(7), np.zeros(4, np.float32), last_t, 0.0, 0, 1, version, time.time()
    ).to_bytes()


def test_commit_is_conditional_on_the_loaded_version(redis_url: str):
    async def main() -> None:
        store = RedisStore(redis_url, _prefix(), 60.0, 100, ["ipnet"], Metrics())
        await store.open()
        try:
            key = ("ipnet", "veh:1")
            assert await store.load([key]) == [None]
            v1 = new_version()
            assert await store.commit([Write(key, 0, _record(1.0, v1))])
            assert not await store.commit(
                [Write(key, 0, _record(1.5, new_version()))]
            )  # "absent" is stale now
            (raw,) = await store.load([key])
            assert raw is not None and AgentState.from_bytes(raw).version == v1
            # a racer writes first: the slower writer's commit fails and changes nothing
            assert await store.commit([Write(key, v1, _record(2.0, new_version()))])
            assert not await store.commit(
                [Write(key, v1, _record(3.0, new_version())), Write(("ipnet", "b"), 0, _record(3.0, 5))]
            )
            assert await store.load([("ipnet", "b")]) == [None]
            (raw,) = await store.load([key])
            assert raw is not None and AgentState.from_bytes(raw).last_t == 2.0
            assert await store.delete("veh:1", ["ipnet", "gru"]) == ["ipnet"]
        finally:
            await store.close()

    asyncio.run(main())


def test_redis_holds_the_same_state_records(make_client: MakeClient, redis_url: str, replay):
    prefix = _prefix()
    c = make_client(store=redis_url, redis_key_prefix=prefix)
    for i in range(3):
        assert c.post("/v1/ab/predict", json=replay.body(i)).status_code == 200
    assert c.get("/readyz").json()["store"] == "redis"
    agent = replay.body(2)["observations"][0]["agent_id"]
    r = redis.Redis.from_url(redis_url)
    raw = r.get(f"{prefix}:s:ipnet:{agent}")
    st = AgentState.from_bytes(raw)
    summary = c.get(f"/v1/agents/{agent}").json()["models"]["ipnet"]
    assert st.steps == summary["steps"] and st.last_t == summary["last_timestamp"] == replay.times[2]
    np.testing.assert_allclose(st.memory, summary["neuron_temperatures_k"], rtol=1e-6)
    assert 0 < r.pttl(f"{prefix}:s:ipnet:{agent}") <= 30_000  # TTL by Redis
    n_agents = len({o["agent_id"] for i in range(3) for o in replay.body(i)["observations"]})
    assert r.zcard(f"{prefix}:idx:gru") == n_agents
    assert metric(c, "trajpred_tracked_agents", model="gru") == n_agents
    r.close()


def test_redis_ttl_and_capacity(make_client: MakeClient, redis_url: str):
    prefix = _prefix()
    c = make_client(
        store=redis_url, redis_key_prefix=prefix, state_ttl_s=0.5, max_agents=2, eviction_interval_s=0.1
    )
    for i in range(3):
        assert (
            c.post("/v1/predict", json={"observations": [obs(f"r{i}", 10.0 + i, 0.0, 0.0)]}).status_code
            == 200
        )
    assert [c.get(f"/v1/agents/r{i}").status_code for i in range(3)] == [404, 200, 200]
    assert metric(c, "trajpred_state_evictions_total", reason="capacity") == 1
    time.sleep(0.8)
    assert c.get("/v1/agents/r2").status_code == 404  # expired by Redis
    p = c.post("/v1/predict", json={"observations": [obs("r2", 20.0, 0.0, 0.0)]}).json()["predictions"][0]
    assert p["new_track"] and p["steps"] == 1
    deadline = time.monotonic() + 5
    while metric(c, "trajpred_state_evictions_total", reason="ttl") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(c, "trajpred_state_evictions_total", reason="ttl") >= 1
    assert metric(c, "trajpred_tracked_agents", model="ipnet") == 1


def test_two_apps_on_one_redis_never_lose_an_update(make_settings: Callable[..., Settings], redis_url: str):
    prefix = _prefix()
    apps = [create_app(make_settings(store=redis_url, redis_key_prefix=prefix)) for _ in range(2)]

    async def main() -> None:
        async with apps[0].router.lifespan_context(apps[0]), apps[1].router.lifespan_context(apps[1]):
            clients = [
                httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t") for a in apps
            ]
            try:
                total_ok = 0
                for round_ in range(3):
                    ok, stale = await _hammer(clients, f"shared-{round_}", 30, seed=round_)
                    state = (await clients[round_ % 2].get(f"/v1/agents/shared-{round_}")).json()["models"]
                    assert ok + stale == 30
                    assert state["ipnet"]["steps"] == state["gru"]["steps"] == ok
                    total_ok += ok
                for a in apps:
                    a.state.runtime.engine.flush()  # accounting runs just after each answer
                conflicts = sum(a.state.runtime.metrics.commit_conflicts._value.get() for a in apps)
                observed = sum(
                    a.state.runtime.metrics.observations.labels(model="ipnet")._value.get() for a in apps
                )
                assert observed == total_ok  # no observation counted twice by a retried commit
                print(f"optimistic retries across the two apps: {conflicts:.0f}")
            finally:
                for cl in clients:
                    await cl.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("bad", ["memory://", "http://localhost:6379", "redis:/x"])
def test_store_setting_is_validated(bad: str):
    with pytest.raises(ValueError, match="Redis URL"):
        Settings(store=bad)


def test_redis_outage_answers_503(make_client: MakeClient, tmp_path):
    with redis_server(tmp_path) as url:
        c = make_client(store=url, redis_key_prefix=_prefix())
        assert c.post("/v1/predict", json={"observations": [obs("o", 1.0, 0.0, 0.0)]}).status_code == 200
    r = c.post("/v1/predict", json={"observations": [obs("o", 2.0, 1.0, 0.0)]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
    ready = c.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
    assert c.get("/healthz").status_code == 200
    assert 'trajpred_server_errors_total{reason="store_unavailable"} 1.0' in c.get("/metrics").text
