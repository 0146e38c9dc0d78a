"""Concurrent requests touching the same agent never lose an update (one process, memory store)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable

import httpx
import pytest

from service.app import create_app
from service.settings import Settings


async def _hammer(clients: list[httpx.AsyncClient], agent: str, n: int, seed: int) -> tuple[int, int]:
    """``n`` concurrent single-observation requests with distinct timestamps, in shuffled order."""
    order = list(range(n))
    random.Random(seed).shuffle(order)

    async def one(k: int, i: int) -> int:
        body = {"observations": [{"agent_id": agent, "timestamp": 100.0 + 0.1 * i, "x": 1.0 * i, "y": 0.0}]}
        r = await clients[k % len(clients)].post("/v1/ab/predict", json=body)
        assert r.status_code in (200, 409), r.text
        return r.status_code

    codes = await asyncio.gather(*(one(k, i) for k, i in enumerate(order)))
    return codes.count(200), codes.count(409)


def test_concurrent_updates_of_one_agent_are_all_kept(make_settings: Callable[..., Settings]):
    app = create_app(make_settings())

    async def main() -> None:
        async with app.router.lifespan_context(app):
            store = app.state.runtime.engine.store
            real_load = store.load

            async def load_then_yield(keys):  # type: ignore[no-untyped-def]
                # the memory store answers without awaiting: yield here, as a network store would, so that
                # racing requests do interleave between reading a state and committing its successor
                records = await real_load(keys)
                await asyncio.sleep(0.002)
                return records

            store.load = load_then_yield
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                ok, stale = await _hammer([c], "contended", 40, seed=1)
                state = (await c.get("/v1/agents/contended")).json()["models"]
        assert ok + stale == 40 and ok >= 1
        # every accepted observation advanced both models exactly once: none was overwritten by a racer
        assert state["ipnet"]["steps"] == state["gru"]["steps"] == ok
        assert state["ipnet"]["last_timestamp"] == state["gru"]["last_timestamp"]

    asyncio.run(main())


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_end_of_track_is_ordered_after_the_accounting_of_a_predict_in_flight(
    make_settings: Callable[..., Settings], store: str, request: pytest.FixtureRequest
):
    """A DELETE that waits for a predict of the same agent must not let that predict's prediction outlive
    the track: a new track under the same id, 10 km away, would mature it into an error of kilometres."""
    extra = {}
    if store == "redis":  # the scoring goes through the shared log: the end of track must be ordered there
        extra = {
            "store": request.getfixturevalue("redis_url"),
            "redis_key_prefix": f"eot-{uuid.uuid4().hex[:8]}",
        }
    app = create_app(make_settings(scoring_min_steps=1, scoring_stride_s=0.0, **extra))

    def frame(t: float, x: float) -> dict:
        return {
            "observations": [
                {"agent_id": "reused", "timestamp": t, "x": x, "y": 0.0, "agent_type": "vehicle"}
            ]
        }

    async def main() -> dict:
        async with app.router.lifespan_context(app):
            engine = app.state.runtime.engine
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                for k in range(30):
                    assert (
                        await c.post("/v1/ab/predict", json=frame(100.0 + 0.1 * k, 1.0 * k))
                    ).status_code == 200
                # the next predict holds the agent's lock, stopped in its commit, while the DELETE waits
                gate, real = asyncio.Event(), engine.store.commit

                async def held(writes, log_entry=None):  # type: ignore[no-untyped-def]
                    await gate.wait()
                    return await real(writes, log_entry)

                engine.store.commit = held
                in_flight = asyncio.create_task(c.post("/v1/ab/predict", json=frame(103.0, 30.0)))
                await asyncio.sleep(0.05)
                ended = asyncio.create_task(c.delete("/v1/agents/reused"))
                await asyncio.sleep(0.05)
                engine.store.commit = real
                gate.set()
                assert (await in_flight).status_code == 200 and (await ended).status_code == 200
                # a new track under the same id, 10 km away, within the old prediction's horizon
                for k in range(40):
                    r = await c.post("/v1/ab/predict", json=frame(103.1 + 0.1 * k, 10_000.0 + k))
                    assert r.status_code == 200, r.text
                return (await c.get("/v1/ab/report")).json()

    report = asyncio.run(main())
    assert report["models"]["ipnet"]["n"] > 0
    # every matured prediction belongs to one track: errors of metres, not of kilometres
    assert report["models"]["ipnet"]["ade_m"] < 10.0 and report["models"]["baseline"]["ade_m"] < 10.0, report
