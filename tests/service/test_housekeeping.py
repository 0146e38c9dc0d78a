"""The app's housekeeping loop (TTL sweep, periodic snapshot) and how it stops."""

from __future__ import annotations

import asyncio
import logging

import pytest

from service.app import _every


def test_a_round_under_way_finishes_when_the_loop_stops() -> None:
    # cancelling a round in the middle of a Redis command can leave a connection whose close never returns:
    # stopping lets the round under way end, then the loop returns by itself
    events: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()
        in_round = asyncio.Event()

        async def job() -> None:
            events.append("start")
            in_round.set()
            await asyncio.sleep(0.2)
            events.append("end")

        task = asyncio.create_task(_every(0.01, job, "test", stop))
        await in_round.wait()
        stop.set()
        await asyncio.wait_for(task, 5.0)
        assert not task.cancelled()

    asyncio.run(main())
    assert events == ["start", "end"]


def test_a_failing_round_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    rounds = {"n": 0}

    async def main() -> None:
        stop = asyncio.Event()

        async def job() -> None:
            rounds["n"] += 1
            if rounds["n"] == 1:
                raise RuntimeError("housekeeping bug")
            if rounds["n"] == 3:
                stop.set()

        await asyncio.wait_for(_every(0.01, job, "maintenance", stop), 5.0)

    with caplog.at_level(logging.ERROR, logger="service.app"):
        asyncio.run(main())
    assert rounds["n"] == 3
    assert "maintenance failed" in caplog.text
