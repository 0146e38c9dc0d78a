"""Concurrent requests touching the same agent never lose an update (one process, memory store)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import httpx

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
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                ok, stale = await _hammer([c], "contended", 40, seed=1)
                state = (await c.get("/v1/agents/contended")).json()["models"]
        assert ok + stale == 40 and ok >= 1
        # every accepted observation advanced both models exactly once: none was overwritten by a racer
        assert state["ipnet"]["steps"] == state["gru"]["steps"] == ok
        assert state["ipnet"]["last_timestamp"] == state["gru"]["last_timestamp"]

    asyncio.run(main())
