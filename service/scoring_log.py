"""The scoring log: what online scoring needs from one committed request, as one entry.

Scoring a prediction needs the agent's later observations, and behind a load balancer those may reach
another replica. So scoring is fed by entries, one per committed request (:class:`ScoringEntry`): the
tracks that ended or restarted, the observations applied, and the predictions worth keeping (those made
after ``scoring_min_steps`` observations of their track).

- With the memory store (one process) the engine applies each entry to its scorer after the answer.
- With Redis the entry is appended to a Redis stream by the same atomic script that commits the request's
  state (``RedisStore.commit``), so the stream's order is the commit order of every replica, and each
  replica's :class:`LogFollower` applies every entry, its own and the others', to its scorer. Every
  replica then scores every prediction of the fleet on every observation, whichever replica received
  them: any replica's A/B report is the report of one server fed the whole stream. A prediction is *own*
  on the replica that made it, and only own predictions feed a process's Prometheus series, so the sum
  over replicas counts each prediction once.

The stream keeps ``scoring_log_retention_s`` of entries (a replica that starts catches up on them). An
entry costs about 670 bytes per agent update (a replayed AV2 log, 61 agents per frame), nearly all of it
the trajectories of the predictions that may be kept: the stride rule is applied by each follower, so every
eligible prediction travels.
Trajectories travel as float32 offsets from their anchor (sub-millimetre), up to one second past the
scoring horizon (enough to interpolate at every observation of a stream of 1 Hz or faster).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson

from service.errors import StoreUnavailable
from service.scoring import OnlineScorer

log = logging.getLogger("service.scoring_log")

FORMAT_VERSION = 2
_HEADER_LEN = struct.Struct("<I")
#: trajectory points shipped past the scoring horizon (s): interpolation at an observation up to half an
#: interval beyond the horizon needs the grid point after it
SHIPPED_BEYOND_HORIZON_S = 1.0


class EntryDecodeError(ValueError):
    """A log entry that cannot be read (another format version, or damaged)."""


@dataclass
class ScoringEntry:
    """One committed request, as the scorer consumes it (:meth:`apply`)."""

    origin: str  # the process that committed it (``Engine.origin``)
    ended: list[str] = field(default_factory=list)  # tracks that ended or restarted: forgotten first
    observations: list[tuple[str, float, float, float]] = field(default_factory=list)  # (agent, t, x, y)
    # predictions to keep, one row each: made from each agent's newest observation of the request
    agents: list[str] = field(default_factory=list)
    agent_types: list[str] = field(default_factory=list)
    anchor_t: list[float] = field(default_factory=list)
    anchor_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (K, 2)
    steps: list[int] = field(default_factory=list)
    step_s: list[float | None] = field(default_factory=list)
    horizons_s: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (H,)
    trajectories: dict[str, np.ndarray] = field(default_factory=dict)  # model -> (K, H, 2) world metres
    # model -> (K, 1 + H, 2): the heading (row 0), then the deviations along / across it (models with them)
    deviations: dict[str, np.ndarray] = field(default_factory=dict)

    def apply(self, scorer: OnlineScorer, own: bool) -> None:
        """Feed the entry to ``scorer``: forget ended tracks, score on the observations, keep the predictions."""
        for agent in self.ended:
            scorer.forget(agent)
        if self.observations:
            scorer.observe_many(self.observations)
        if self.agents and self.trajectories:
            scorer.add_many(
                self.agents,
                self.agent_types,
                self.anchor_t,
                self.anchor_xy,
                self.steps,
                self.horizons_s,
                self.trajectories,
                self.step_s,
                own=own,
                deviations=self.deviations,
            )

    # --- wire format: a JSON header, then little-endian arrays ------------------------------------------
    def encode(self, scoring_horizon_s: float) -> bytes:
        """The entry as bytes; trajectories cut ``SHIPPED_BEYOND_HORIZON_S`` past ``scoring_horizon_s``."""
        keep = self.horizons_s <= scoring_horizon_s + SHIPPED_BEYOND_HORIZON_S + 1e-9
        horizons = np.ascontiguousarray(self.horizons_s[keep], dtype="<f8")
        models = list(self.trajectories) if self.agents else []
        header: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "o": self.origin,
            "e": self.ended,
            "oa": [o[0] for o in self.observations],
            "a": self.agents,
            "at": self.agent_types,
            "st": self.steps,
            "dt": self.step_s,
            "m": models,
            "d": [m for m in self.deviations if m in models],
        }
        head = orjson.dumps(header)
        obs = np.array([o[1:] for o in self.observations], dtype="<f8").reshape(-1, 3)
        anchors = np.column_stack([np.asarray(self.anchor_t, dtype="<f8"), self.anchor_xy]).astype("<f8")
        parts = [_HEADER_LEN.pack(len(head)), head, struct.pack("<I", len(horizons)), obs.tobytes()]
        parts += [anchors.tobytes(), horizons.tobytes()]
        for m in models:
            offsets = self.trajectories[m][:, keep] - self.anchor_xy[:, None, :]
            parts.append(offsets.astype("<f4").tobytes())
        for m in header["d"]:
            dev = self.deviations[m]
            parts.append(np.concatenate([dev[:, :1], dev[:, 1:][:, keep]], axis=1).astype("<f4").tobytes())
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> ScoringEntry:
        """The entry :meth:`encode` wrote; :class:`EntryDecodeError` when it cannot be read."""
        try:
            (n_head,) = _HEADER_LEN.unpack_from(data, 0)
            at = _HEADER_LEN.size
            header = orjson.loads(data[at : at + n_head])
            at += n_head
            if header.get("v") != FORMAT_VERSION:
                raise EntryDecodeError(f"format version {header.get('v')!r}, expected {FORMAT_VERSION}")
            (n_h,) = struct.unpack_from("<I", data, at)
            at += 4
            n_obs, n_rows, models = len(header["oa"]), len(header["a"]), header["m"]

            def take(count: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
                nonlocal at
                size = count * np.dtype(dtype).itemsize
                if at + size > len(data):
                    raise EntryDecodeError("entry shorter than its header says")
                out = np.frombuffer(data, dtype=dtype, count=count, offset=at).reshape(shape)
                at += size
                return out

            obs = take(n_obs * 3, "<f8", (n_obs, 3))
            anchors = take(n_rows * 3, "<f8", (n_rows, 3))
            horizons = take(n_h, "<f8", (n_h,)).astype(np.float64)
            anchor_xy = anchors[:, 1:].astype(np.float64)
            trajectories = {
                m: anchor_xy[:, None, :] + take(n_rows * n_h * 2, "<f4", (n_rows, n_h, 2)).astype(np.float64)
                for m in models
            }
            deviations = {
                m: take(n_rows * (n_h + 1) * 2, "<f4", (n_rows, n_h + 1, 2)).astype(np.float64)
                for m in header["d"]
            }
            if at != len(data):
                raise EntryDecodeError(f"{len(data) - at} bytes past the entry's end")
            return cls(
                origin=str(header["o"]),
                ended=[str(a) for a in header["e"]],
                observations=[
                    (str(a), float(t), float(x), float(y))
                    for a, (t, x, y) in zip(header["oa"], obs.tolist(), strict=True)
                ],
                agents=[str(a) for a in header["a"]],
                agent_types=[str(a) for a in header["at"]],
                anchor_t=anchors[:, 0].tolist(),
                anchor_xy=anchor_xy,
                steps=[int(s) for s in header["st"]],
                step_s=[None if d is None else float(d) for d in header["dt"]],
                horizons_s=horizons,
                trajectories=trajectories,
                deviations=deviations,
            )
        except EntryDecodeError:
            raise
        except (ValueError, KeyError, TypeError, struct.error) as e:
            raise EntryDecodeError(f"unreadable scoring log entry: {e}") from e


def frame_entry(
    origin: str,
    rewound: Sequence[str],
    observations: list[tuple[str, float, float, float]],
    agents: list[str],
    agent_types: list[str],
    anchor_t: list[float],
    anchor_xy: np.ndarray,
    steps: list[int],
    step_s: list[float | None],
    horizons_s: np.ndarray | None,
    trajectories: dict[str, np.ndarray],
    min_steps: int,
    deviations: dict[str, np.ndarray] | None = None,
) -> ScoringEntry:
    """The entry of one committed request; only rows with at least ``min_steps`` observations are kept
    (the scorer would drop the others), and none when the models predict on different grids."""
    rows = [i for i, s in enumerate(steps) if s >= min_steps] if horizons_s is not None else []
    idx = np.array(rows, dtype=np.intp)
    return ScoringEntry(
        origin=origin,
        ended=list(rewound),
        observations=observations,
        agents=[agents[i] for i in rows],
        agent_types=[agent_types[i] for i in rows],
        anchor_t=[anchor_t[i] for i in rows],
        anchor_xy=np.asarray(anchor_xy, np.float64).reshape(-1, 2)[idx],
        steps=[steps[i] for i in rows],
        step_s=[step_s[i] for i in rows],
        horizons_s=horizons_s if horizons_s is not None else np.zeros(0),
        trajectories={m: np.asarray(tr)[idx] for m, tr in trajectories.items()} if rows else {},
        deviations={m: np.asarray(d)[idx] for m, d in (deviations or {}).items()} if rows else {},
    )


class SharedLog(Protocol):
    """The part of a shared store the follower reads (``service.redis_store.RedisStore``)."""

    async def read_log(self, after: str, count: int, block_ms: int) -> list[tuple[str, bytes]]: ...

    async def log_tail(self) -> str | None: ...


def _id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class LogFollower:
    """Applies every entry of the shared scoring log to this process's scorer, in log order.

    Runs as a background task of the lifespan (:meth:`run`); :meth:`catch_up` waits until every entry
    appended before the call is applied (the A/B report reads the scorer after it).
    """

    def __init__(self, shared: SharedLog, scorer: OnlineScorer, origin: str, batch: int = 256) -> None:
        self.shared = shared
        self.scorer = scorer
        self.origin = origin
        self.batch = batch
        self.last_id = "0-0"  # start from the oldest retained entry: a new replica catches up on them
        self.applied = 0
        self.unreadable = 0
        self._advanced = asyncio.Event()

    async def step(self, block_ms: int) -> int:
        """Read and apply the next entries (waiting up to ``block_ms`` for one); how many were read."""
        entries = await self.shared.read_log(self.last_id, self.batch, block_ms)
        for stream_id, data in entries:
            try:
                entry = ScoringEntry.decode(data)
            except EntryDecodeError as e:
                self.unreadable += 1
                log.warning("scoring log entry %s skipped: %s", stream_id, e)
            else:
                try:
                    entry.apply(self.scorer, own=entry.origin == self.origin)
                except Exception:  # a scoring bug must not stop the follower, nor vanish silently
                    log.exception("scoring log entry %s could not be applied", stream_id)
                self.applied += 1
            self.last_id = stream_id
        if entries:
            self._advanced.set()
            self._advanced = asyncio.Event()
        return len(entries)

    async def run(self, stop: asyncio.Event, block_ms: int = 500, retry_s: float = 1.0) -> None:
        """Follow the log until ``stop`` is set; an unreachable store is retried, not fatal."""
        while not stop.is_set():
            try:
                await self.step(block_ms)
            except StoreUnavailable as e:
                log.warning("scoring log unreadable, retrying in %g s: %s", retry_s, e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), retry_s)

    async def catch_up(self, timeout_s: float) -> bool:
        """Wait until every entry appended before this call is applied; False when ``timeout_s`` passed."""
        tail = await self.shared.log_tail()
        if tail is None:
            return True
        deadline = asyncio.get_running_loop().time() + timeout_s
        while _id(self.last_id) < _id(tail):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0 or not math.isfinite(left):
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), left)
        return True
