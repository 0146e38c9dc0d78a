"""Per-agent exclusion within one process: overlapping key sets serialise, disjoint ones do not."""

from __future__ import annotations

import asyncio

import pytest

from service.engine import KeyLocks


async def _run(locks: KeyLocks, keys: list[str], log: list[str], name: str, hold_s: float) -> None:
    async with locks.hold(keys):
        log.append(f"{name}+")
        await asyncio.sleep(hold_s)
        log.append(f"{name}-")


def test_overlapping_holds_serialise_and_disjoint_ones_overlap() -> None:
    async def main() -> list[str]:
        locks, log = KeyLocks(), []
        await asyncio.gather(
            _run(locks, ["a", "b"], log, "A", 0.05),
            _run(locks, ["b", "c"], log, "B", 0.01),  # shares b with A: waits for A
            _run(locks, ["x"], log, "X", 0.01),  # disjoint: runs at once
            _run(locks, ["c", "a"], log, "C", 0.01),  # shares a with A and c with B
        )
        assert len(locks) == 0  # every key freed
        return log

    log = asyncio.run(main())
    assert log.index("X+") < log.index("A-")  # X did not wait
    for first, second in (("A", "B"), ("A", "C")):
        assert log.index(f"{first}-") < log.index(f"{second}+")
    # B and C share c: never inside at the same time
    b_in, b_out, c_in, c_out = (log.index(e) for e in ("B+", "B-", "C+", "C-"))
    assert b_out < c_in or c_out < b_in


def test_a_cancelled_waiter_and_a_failing_holder_leave_nothing_held() -> None:
    async def main() -> None:
        locks = KeyLocks()
        holder = asyncio.create_task(_run(locks, ["a"], [], "H", 0.05))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(_run(locks, ["a", "b"], [], "W", 0.0))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await holder  # the holder was not cancelled with its waiter
        with pytest.raises(RuntimeError):
            async with locks.hold(["a", "a", "c"]):  # duplicates are one key
                raise RuntimeError("boom")
        assert len(locks) == 0
        async with locks.hold(["a", "b", "c"]):
            assert len(locks) == 3

    asyncio.run(main())
