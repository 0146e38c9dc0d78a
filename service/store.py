"""State stores: where the per-agent, per-model state records live between requests.

Both stores speak the same protocol: load the records of many ``(model, agent_id)`` keys in one round trip,
then commit new records all-or-nothing, conditional on each key still holding the version that was loaded
(optimistic concurrency). A writer that lost the race gets ``False`` and recomputes from fresh state, so
concurrent updates of one agent (same process or another replica) are never lost.

- :class:`MemoryStore`: dicts in this process, TTL and capacity eviction by wall clock, snapshot bytes.
- :class:`RedisStore` (``service.redis_store``): the same records in Redis, shared by replicas.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol

from service.snapshot import Entry
from service.state import version_of

StateKey = tuple[str, str]  # (model name, agent id)


class Write(NamedTuple):
    """Replace the record of ``key`` if it still has version ``expected`` (0: if it is still absent).

    A NamedTuple, not a frozen dataclass: a request builds one per agent and model, and a frozen dataclass
    costs several times as much to construct.
    """

    key: StateKey
    expected: int
    record: bytes


class StoreEvents(Protocol):
    """What a store reports (implemented by the metrics)."""

    def evicted(self, model: str, reason: str, n: int) -> None: ...

    def tracked(self, model: str, n: int) -> None: ...


class StateStore(Protocol):
    """The protocol the engine uses; see the module docstring."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def load(self, keys: Sequence[StateKey]) -> list[bytes | None]: ...

    #: whether scoring entries go to the store (a log every replica follows) rather than to this process
    shared: bool

    async def commit(self, writes: Sequence[Write], log_entry: bytes | None = None) -> bool: ...

    async def delete(
        self, agent_id: str, models: Sequence[str], log_entry: bytes | None = None
    ) -> list[str]: ...

    async def sweep(self) -> None: ...


class MemoryStore:
    """Records in per-model ordered dicts (least recently written first).

    Every method runs on the event loop without awaiting in between its reads and writes, so each call is
    atomic with respect to the others: that is what makes the version check in :meth:`commit` sound.
    """

    shared = False

    def __init__(
        self,
        ttl_s: float,
        max_agents: int,
        events: StoreEvents,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_agents = max_agents
        self.events = events
        self.clock = clock
        # model -> agent -> (record, wall time of the write)
        self._data: dict[str, OrderedDict[str, tuple[bytes, float]]] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    def _table(self, model: str) -> OrderedDict[str, tuple[bytes, float]]:
        return self._data.setdefault(model, OrderedDict())

    async def load(self, keys: Sequence[StateKey]) -> list[bytes | None]:
        now = self.clock()
        out: list[bytes | None] = []
        table, table_model = None, None
        for model, agent in keys:
            if table is None or model != table_model:  # keys come grouped by model: one lookup per group
                table, table_model = self._table(model), model
            hit = table.get(agent)
            if hit is not None and now - hit[1] > self.ttl_s:
                # expired but not yet swept: drop it now so that load and commit agree it is absent
                del table[agent]
                self.events.evicted(model, "ttl", 1)
                self.events.tracked(model, len(table))
                hit = None
            out.append(hit[0] if hit is not None else None)
        return out

    async def commit(self, writes: Sequence[Write], log_entry: bytes | None = None) -> bool:
        # ``log_entry`` is for shared stores: one process scores its own requests (``shared`` is False)
        by_model: dict[str, list[Write]] = {}
        for w in writes:
            by_model.setdefault(w.key[0], []).append(w)
        for model, group in by_model.items():
            table = self._table(model)
            for w in group:
                hit = table.get(w.key[1])
                if version_of(hit[0] if hit else None) != w.expected:
                    return False
        now = self.clock()
        for model, group in by_model.items():
            table = self._table(model)
            for w in group:
                table[w.key[1]] = (w.record, now)
                table.move_to_end(w.key[1])
            over = len(table) - self.max_agents
            for _ in range(max(over, 0)):
                table.popitem(last=False)
            if over > 0:
                self.events.evicted(model, "capacity", over)
            self.events.tracked(model, len(table))
        return True

    async def delete(self, agent_id: str, models: Sequence[str], log_entry: bytes | None = None) -> list[str]:
        deleted = []
        for model in models:
            table = self._table(model)
            if table.pop(agent_id, None) is not None:
                deleted.append(model)
                self.events.tracked(model, len(table))
        return deleted

    async def sweep(self) -> None:
        """Evict every record idle for longer than the TTL."""
        limit = self.clock() - self.ttl_s
        for model, table in self._data.items():
            expired = [agent for agent, (_, wall) in table.items() if wall < limit]
            for agent in expired:
                del table[agent]
            if expired:
                self.events.evicted(model, "ttl", len(expired))
            self.events.tracked(model, len(table))

    def count(self, model: str) -> int:
        return len(self._data.get(model, ()))

    # --- snapshot ---------------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """Every record, oldest write first within each model (taken atomically on the event loop)."""
        return [
            (model, agent, rec) for model, table in self._data.items() for agent, (rec, _) in table.items()
        ]

    def restore(self, entries: Iterable[Entry], wall_of: Callable[[bytes], float]) -> int:
        """Load snapshot entries (replacing nothing that exists); returns how many were kept.

        ``wall_of`` gives a record's last-write wall time, so that the TTL keeps running across a restart.
        """
        now = self.clock()
        kept = 0
        for model, agent, record in sorted(entries, key=lambda e: wall_of(e[2])):
            wall = wall_of(record)
            if now - wall > self.ttl_s:
                continue
            table = self._table(model)
            if agent not in table:
                table[agent] = (record, wall)
                kept += 1
        for model, table in self._data.items():
            while len(table) > self.max_agents:
                table.popitem(last=False)
            self.events.tracked(model, len(table))
        return kept
