"""Redis faults on a real redis-server: outage -> 503 + Retry-After, recovery by itself, nothing corrupted;
two replicas hammering the same agents apply every observation exactly once."""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from clients.processes import start_redis, stop_process
from service.app import create_app
from service.settings import Settings
from tests.service.conftest import MakeClient
from tests.service.helpers import metric
from tests.support import Replay, free_port


@contextmanager
def redis_process(
    port: int, data_dir: Path, *extra: str, password: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """redis-server on ``port`` with an fsync-always append-only file in ``data_dir`` (survives a kill -9)."""
    proc = start_redis(
        port,
        data_dir,
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        *extra,
        password=password,
    )
    try:
        yield proc
    finally:
        stop_process(proc, 10)


def _trajectories(answer: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        p["agent_id"]: np.array([[q["x"], q["y"]] for q in p["trajectory"]]) for p in answer["predictions"]
    }


def test_redis_outage_then_recovery_without_restart(make_client: MakeClient, replay: Replay, tmp_path: Path):
    port = free_port()
    reference = make_client()  # memory store, never interrupted: what the Redis-backed app must match
    url = f"redis://127.0.0.1:{port}/0"
    with redis_process(port, tmp_path) as first:
        c = make_client(store=url, redis_key_prefix="outage", retry_after_s=3)
        for i in range(10):
            want, got = (
                reference.post("/v1/predict", json=replay.body(i)),
                c.post("/v1/predict", json=replay.body(i)),
            )
            assert got.status_code == want.status_code == 200
        first.kill()  # mid-stream, no goodbye
        first.wait(10)

        # the outage: every request refused with 503 + Retry-After, readiness down, liveness up
        for i in range(10, 13):
            r = c.post("/v1/predict", json=replay.body(i))
            assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
            assert r.headers["retry-after"] == "3"
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "3"
        assert c.get("/healthz").status_code == 200
        assert metric(c, "trajpred_server_errors_total", reason="store_unavailable") >= 3

    # Redis comes back on the same port with its data: the app recovers without being restarted
    with redis_process(port, tmp_path):
        deadline = time.monotonic() + 15
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the app did not recover from the Redis restart"
            time.sleep(0.1)
        # the refused frames changed nothing: the stream continues exactly as on the uninterrupted server
        for i in range(13, 25):
            want, got = (
                reference.post("/v1/predict", json=replay.body(i)),
                c.post("/v1/predict", json=replay.body(i)),
            )
            assert got.status_code == want.status_code == 200, got.text
            w, g = _trajectories(want.json()), _trajectories(got.json())
            assert w.keys() == g.keys()
            for agent in w:
                np.testing.assert_allclose(g[agent], w[agent], rtol=0, atol=1e-9)
            assert [p["steps"] for p in got.json()["predictions"]] == [
                p["steps"] for p in want.json()["predictions"]
            ]


AGENTS = [f"hammer-{k}" for k in range(6)]
FRAMES = 48
WAVE = 4


def _frame(i: int) -> dict[str, Any]:
    # one frame: every agent at the same timestamp, so a request is accepted or refused as a whole
    t = 500.0 + 0.1 * i
    return {
        "observations": [
            {"agent_id": a, "timestamp": t, "x": 1.5 * i + k, "y": 0.2 * i * k, "agent_type": "vehicle"}
            for k, a in enumerate(AGENTS)
        ]
    }


def test_two_replicas_hammering_the_same_agents_equal_a_sequential_run(
    make_settings: Callable[..., Settings], redis_url: str
):
    prefix = f"h{uuid.uuid4().hex[:8]}"
    replicas = [create_app(make_settings(store=redis_url, redis_key_prefix=prefix)) for _ in range(2)]
    sequential = create_app(make_settings())

    async def main() -> None:
        async with (
            replicas[0].router.lifespan_context(replicas[0]),
            replicas[1].router.lifespan_context(replicas[1]),
            sequential.router.lifespan_context(sequential),
        ):
            clients = [
                httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t")
                for a in (*replicas, sequential)
            ]
            try:
                # waves of concurrent frames, shuffled within a wave: a whole-stream shuffle would leave
                # few frames fresh, waves keep both replicas racing on accepted frames all along
                rng = random.Random(7)
                waves = [list(range(w, min(w + WAVE, FRAMES))) for w in range(0, FRAMES, WAVE)]
                for wave in waves:
                    rng.shuffle(wave)

                async def send(k: int, i: int) -> tuple[int, int]:
                    r = await clients[k % 2].post("/v1/ab/predict", json=_frame(i))
                    assert r.status_code in (200, 409), r.text
                    return i, r.status_code

                results = []
                for wave in waves:
                    results += await asyncio.gather(*(send(k, i) for k, i in enumerate(wave)))
                accepted = sorted(i for i, code in results if code == 200)
                assert accepted, "no frame was accepted"
                # the sequential run: the accepted frames, one at a time, in time order
                for i in accepted:
                    assert (await clients[2].post("/v1/ab/predict", json=_frame(i))).status_code == 200

                for agent in AGENTS:
                    got = (await clients[0].get(f"/v1/agents/{agent}")).json()["models"]
                    want = (await clients[2].get(f"/v1/agents/{agent}")).json()["models"]
                    for model in ("ipnet", "gru"):
                        assert got[model]["steps"] == want[model]["steps"] == len(accepted)
                        assert got[model]["last_timestamp"] == want[model]["last_timestamp"]
                    np.testing.assert_allclose(
                        got["ipnet"]["neuron_temperatures_k"], want["ipnet"]["neuron_temperatures_k"], atol=0
                    )
                # the next prediction from the final states is the same too
                nxt = _frame(FRAMES + 1)
                a = (await clients[1].post("/v1/ab/predict", json=nxt)).json()["predictions"]
                b = (await clients[2].post("/v1/ab/predict", json=nxt)).json()["predictions"]
                for role in ("ipnet", "baseline"):
                    ta, tb = _trajectories({"predictions": a[role]}), _trajectories({"predictions": b[role]})
                    for agent in AGENTS:
                        np.testing.assert_allclose(ta[agent], tb[agent], rtol=0, atol=1e-9)

                def observed(app: Any) -> float:
                    app.state.runtime.engine.flush()  # accounting runs just after each answer
                    return float(app.state.runtime.metrics.observations.labels(model="ipnet")._value.get())

                # exactly once: no retried commit counted or applied an observation twice
                assert sum(observed(a) for a in replicas) == observed(sequential)
                conflicts = sum(a.state.runtime.metrics.commit_conflicts._value.get() for a in replicas)
                print(f"{len(accepted)} of {FRAMES} frames accepted, {conflicts:.0f} optimistic retries")
            finally:
                for cl in clients:
                    await cl.aclose()

    asyncio.run(main())
