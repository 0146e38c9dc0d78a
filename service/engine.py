"""The data plane: observations in, predictions out. Knows no HTTP.

One request: validate it whole (bounds, duplicates) -> lock its agents in this process -> load every
(model, agent) state in one store round trip and decode them as columns -> reject stale timestamps -> one
batched step per model and per observation rank (in a worker thread, unless the request is small enough
that the hand-off would cost more) -> commit all new states conditionally on the versions loaded (retry
from fresh state if another writer won) -> answer. Just after the answer, on the event loop and in commit
order: metrics, scoring of earlier predictions, keeping the new ones (``service.accounting``). With a shared
store the scoring entry is committed with the state instead, and every replica scores it from the store's
log (``service.scoring_log``). Nothing is written unless the whole request is accepted.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import cast

import anyio.to_thread
import numpy as np
import torch

from models.agent_types import AGENT_TYPES
from models.energy import EnergyMeter
from models.kinematics import TYPE_INDEX, KinState
from models.predictor import Predictor
from service.accounting import Accountant, AccountingSchedule
from service.errors import (
    AnswerTooLarge,
    Conflict,
    InvalidRequest,
    NotFound,
    StaleObservation,
)
from service.frames import Committed, Computed, Frame, Observations, Predictions
from service.metrics import Metrics
from service.scoring import OnlineScorer
from service.scoring_log import LogFollower, ScoringEntry, SharedLog
from service.settings import BASELINE_NAMES, Settings
from service.state import AgentState, StateBatch, StateDecodeError, decode_batch, encode_batch, model_tag
from service.store import StateKey, StateStore, Write
from service.validation import MOTION_SLACK_M, FrameValidator

log = logging.getLogger("service.engine")

#: every model kind whose state an agent may hold (DELETE frees them all, even of a former baseline)
ALL_MODEL_KINDS = ("ipnet", *BASELINE_NAMES)
#: answers' timestamps and intervals are rounded to microseconds (Unix-time float64 sums carry ~1e-7 s noise)
TIME_DECIMALS = 6
_EMPTY_KIN = KinState.empty(1).to_array()[0]  # the kinematic state of an agent never seen


class KeyLocks:
    """Exclusive holds on sets of keys (agent ids) within this process, taken all at once.

    A holder takes its whole key set only when none of the keys is held, in one step on the event loop,
    so there is no hold-and-wait and no deadlock, and an uncontended hold costs two dict passes (no lock
    object or await per key: a frame has hundreds of agents). A waiter sleeps until the holder that
    blocked it finishes, then looks again.
    """

    def __init__(self) -> None:
        self._held: dict[str, asyncio.Future[None]] = {}

    @asynccontextmanager
    async def hold(self, keys: Sequence[str]) -> AsyncIterator[None]:
        wanted = list(dict.fromkeys(keys))
        held = self._held
        while True:
            blocker = next((f for f in map(held.get, wanted) if f is not None), None)
            if blocker is None:
                break
            await asyncio.shield(blocker)  # shielded: a cancelled waiter must not cancel the holder's future
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for k in wanted:
            held[k] = done
        try:
            yield
        finally:
            for k in wanted:
                del held[k]
            done.set_result(None)

    def __len__(self) -> int:
        return len(self._held)


class Engine:
    """Streaming prediction over a state store. ``roles`` maps 'ipnet'/'baseline' to loaded model names."""

    def __init__(
        self,
        settings: Settings,
        predictors: dict[str, Predictor],
        roles: dict[str, str],
        store: StateStore,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.predictors = predictors
        self.roles = roles
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.locks = KeyLocks()
        self.validator = FrameValidator(settings, clock)
        self.tags = {name: model_tag(p.version) for name, p in predictors.items()}
        self.meters = {name: EnergyMeter(p.net, p.cfg) for name, p in predictors.items()}
        any_model = next(iter(predictors.values()))
        self._points_per_trajectory = int(
            np.sum(any_model.horizons_s <= settings.prediction_horizon_s + 1e-9)
        )
        # the memory of a new track, per model: what absent states are filled with on every request
        self._initial_memory = {name: p.initial_memory(1)[0] for name, p in predictors.items()}
        self.scorer = OnlineScorer(
            metrics,
            (roles["ipnet"], roles["baseline"]),
            min_steps=settings.scoring_min_steps,
            max_total=settings.scoring_max_pending,
            max_per_agent=settings.scoring_max_pending_per_agent,
            purge_after_s=settings.state_ttl_s
            + 2 * max(float(p.horizons_s[-1]) for p in predictors.values()),
            clock=clock,
            stride_s=settings.scoring_stride_s,
        )
        # this process, as the origin of its scoring entries: its own predictions feed its metrics
        self.origin = uuid.uuid4().hex[:16]
        self.accountant = Accountant(metrics, self.scorer, predictors, self.origin, store.shared)
        # committed requests whose metrics and scoring are still to do, run after their answers
        self.accounting: AccountingSchedule[Committed] = AccountingSchedule(self.accountant)
        # with a shared store every replica scores every replica's frames, from the store's log
        self.follower = (
            LogFollower(cast(SharedLog, store), self.scorer, self.origin) if store.shared else None
        )
        for name, p in predictors.items():
            metrics.model_info.labels(model=name, version=p.version).set(1)
            h = p.horizons_s
            if settings.prediction_horizon_s > float(h[-1]) + 1e-9:
                raise ValueError(
                    f"prediction_horizon_s={settings.prediction_horizon_s} exceeds model {name}'s "
                    f"longest horizon {float(h[-1]):g} s"
                )

    # --- predict --------------------------------------------------------------------------------------
    async def predict(
        self, observations: Observations, roles: Sequence[str], modes: int | None = None
    ) -> dict[str, Predictions]:
        """Apply the observations to the state of each role's model; one prediction per agent and role.

        ``modes``: also answer the K most probable futures (at most the model's own), with probabilities;
        None: the single trajectory only. Either way the served futures are the ones scored online.
        """
        frame = self.validator(observations)
        self.validator.check_modes(modes)
        models = [self.roles[r] for r in roles]
        agents = frame.agents
        # the single trajectory, and each of the K modes beside it
        per_agent = self._points_per_trajectory * (1 + modes if modes else 1)
        points = len(agents) * len(models) * per_agent
        if points > self.settings.max_answer_points:
            # refused before any work: an answer this large is tens of megabytes held until the client reads it
            raise AnswerTooLarge(
                f"{len(agents)} agents x {len(models)} models x {per_agent} points = {points} "
                f"answer points; the maximum is {self.settings.max_answer_points}: send fewer agents per request",
                field="observations",
            )
        keys: list[StateKey] = [(m, a) for m in models for a in agents]
        n = len(agents)
        async with self.locks.hold(agents):
            for _ in range(self.settings.commit_retries):
                raw = await self.store.load(keys)
                loaded = {m: self._decode(m, agents, raw[j * n : (j + 1) * n]) for j, m in enumerate(models)}
                self._check_stale(models, frame, loaded)
                if len(frame.t) * len(models) <= self.settings.inline_step_max_updates:
                    computed = self._compute_all(
                        models, frame, loaded, modes or 1
                    )  # cheaper than the thread hop
                else:
                    computed = await anyio.to_thread.run_sync(
                        self._compute_all, models, frame, loaded, modes or 1
                    )
                writes = [
                    Write((m, a), expected, record)
                    for m in models
                    for a, expected, record in zip(
                        agents, loaded[m].version.tolist(), computed[m].records, strict=True
                    )
                ]
                entry = None
                if self.store.shared:  # scored from the log, by every replica: committed with the state
                    entry = self.accountant.scoring_entry(Committed(models, frame, computed)).encode(
                        self.scorer.horizon_s
                    )
                if await self.store.commit(writes, entry):
                    break
                self.metrics.commit_conflicts.inc()
            else:
                raise Conflict(
                    f"the agents' state kept changing in {self.settings.commit_retries} attempts; retry",
                    field="agent_id",
                )
        return self._after_commit(models, roles, frame, computed, modes is not None)

    def _decode(self, model: str, agents: list[str], raws: Sequence[bytes | None]) -> StateBatch:
        """The agents' states of one model; records of other weights or unreadable ones count as absent."""

        def unreadable(i: int, why: str) -> None:
            log.warning("state of %s/%s unreadable (%s): starting a new track", model, agents[i], why)

        return decode_batch(
            raws, self.tags[model], _EMPTY_KIN, self._initial_memory[model], TYPE_INDEX["unknown"], unreadable
        )

    def _decode_one(self, key: StateKey, raw: bytes | None) -> AgentState | None:
        """One record as :class:`AgentState`, with the rules of :meth:`_decode`."""
        if raw is None:
            return None
        try:
            st = AgentState.from_bytes(raw)
        except StateDecodeError as e:
            log.warning("state of %s/%s unreadable (%s)", key[0], key[1], e)
            return None
        if st.tag != self.tags[key[0]] or st.memory.size != self.predictors[key[0]].memory_size:
            return None  # written by other weights: its memory means nothing to this model
        return st

    def _check_stale(self, models: Sequence[str], frame: Frame, loaded: dict[str, StateBatch]) -> None:
        """Reject observations not after an agent's last one, and jumps from its last position that no
        plausible speed explains (within the TTL: a longer gap starts a new track anyway)."""
        ttl, vmax = self.settings.state_ttl_s, self.settings.max_speed_mps
        agents = frame.agents
        st = loaded[models[0]]  # every model of an agent saw the same observations
        gap = frame.first_t - st.last_t
        tracked = st.present & (st.kin[:, 6] > 0) & (gap > 0) & (gap <= ttl)
        if tracked.any():
            first_xy = frame.xy[frame.first]
            dist = np.hypot(*(first_xy - st.kin[:, 0:2]).T)
            bad = np.flatnonzero(tracked & (dist > vmax * gap + MOTION_SLACK_M))
            if bad.size:
                i = int(bad[0])
                pos = int(frame.pos[frame.first[i]])
                raise InvalidRequest(
                    f"observations[{pos}].x: agent {agents[i]!r} moved {float(dist[i]):.1f} m in "
                    f"{float(gap[i]):g} s since its last observation: faster than {vmax:g} m/s",
                    field="x",
                    index=pos,
                    code="implausible_motion",
                )
        # a track whose last timestamp is ahead of this server's clock (beyond the skew) came from a clock
        # error: its agent's real-time observations restart it (in _compute) rather than being stale
        ahead = self.clock() + self.settings.max_track_skew_s
        for m in models:
            st = loaded[m]
            stale = np.flatnonzero(st.present & (frame.first_t <= st.last_t) & (st.last_t <= ahead))
            if stale.size:
                i = int(stale[0])
                pos = int(frame.pos[frame.first[i]])
                raise StaleObservation(
                    f"observations[{pos}].timestamp: {float(frame.first_t[i])!r} is not after the last "
                    f"observation of agent {agents[i]!r} ({float(st.last_t[i])!r}, model {m}); send "
                    "observations in time order",
                    field="timestamp",
                    index=pos,
                )

    def _compute_all(
        self, models: Sequence[str], frame: Frame, loaded: dict[str, StateBatch], modes: int
    ) -> dict[str, Computed]:
        # torch's intra-op thread count behaves per OS thread under OpenMP: set it in the worker that runs
        if torch.get_num_threads() != self.settings.torch_threads:
            torch.set_num_threads(self.settings.torch_threads)
        return {m: self._compute(m, frame, loaded[m], modes) for m in models}

    def _compute(self, model: str, frame: Frame, state: StateBatch, modes: int = 1) -> Computed:
        """Blocking: every observation rank is one batched ``Predictor.step`` over the agents that have it;
        the ``modes`` most probable futures (at most the model's own) are kept."""
        pred = self.predictors[model]
        n_modes = min(modes, pred.n_modes)
        n_agents = len(state)
        kin_arr = state.kin.copy()
        memory = state.memory.copy()
        last_t = state.last_t.copy()
        start_t = state.start_t.copy()
        types = state.agent_type.copy()
        # one observation per agent (a perception frame): whole-array slices instead of index arrays, and
        # the step's trajectories taken as they are (fancy-indexed copies of ~0.5 MB at 1,000 agents)
        whole = frame.depth == 1
        shape = (n_agents, n_modes, len(pred.horizons_s), 2)
        # the world-axis deviations only answer (scoring uses those along / across the heading): only the
        # served horizons are computed
        served = self._served_horizons(model)
        modes_xy = np.empty(0) if whole else np.zeros(shape)
        probs = np.empty(0) if whole else np.zeros((n_agents, n_modes))
        std: np.ndarray | None = None
        if not whole and pred.has_uncertainty:
            std = np.zeros((n_agents, n_modes, served, 2))
        std_agent: np.ndarray | None = (
            None if whole or not pred.has_uncertainty else np.zeros(shape[:1] + shape[2:])
        )
        new_track = np.zeros(n_agents, dtype=bool)
        rewound = np.zeros(n_agents, dtype=bool)
        dt_used = np.full(n_agents, np.nan)
        drive_j, rise_rows, updates, new_tracks = 0.0, [], 0, 0
        batch_sizes = []
        intervals: list[np.ndarray] = []
        ttl = self.settings.state_ttl_s
        for k in range(frame.depth):
            at = frame.rank == k if not whole else slice(None)
            idx: np.ndarray | slice = frame.agent[at] if not whole else slice(None)
            t = frame.t[at]
            xy = frame.xy[at]
            named = frame.agent_type[at]
            types[idx] = np.where(named >= 0, named, types[idx])
            kin = KinState.from_array(kin_arr[idx])
            mem = memory[idx]
            gap = t - last_t[idx]
            kin_n_before = kin.n
            # a first observation, a gap longer than the TTL, or a step back from a track that ran ahead of
            # the clock (accepted by _check_stale only then): the old track is over
            reset = (kin.n == 0) | (gap > ttl) | (gap <= 0)
            if reset.any():
                fresh = KinState.empty(int(reset.sum())).to_array()
                arr = kin.to_array()
                arr[reset] = fresh
                kin = KinState.from_array(arr)
                mem[reset] = pred.initial_memory(int(reset.sum()))
                rows = frame.agent[at][reset]
                start_t[rows] = t[reset]
                new_track[rows] = True
                rewound[frame.agent[at][reset & (kin_n_before > 0) & (gap <= 0)]] = True
                new_tracks += int(reset.sum())
            dt = np.where(reset, 0.0, gap)
            res = pred.step(kin, mem, xy, dt, types[idx], n_modes, served)
            kin_arr[idx] = res.kin.to_array()
            memory[idx] = res.memory
            last_t[idx] = t
            dt_used[idx] = np.where(reset, np.nan, dt)
            intervals.append(dt[~reset])
            p_k = res.probs[:, :n_modes]
            p_k = p_k / p_k.sum(axis=1, keepdims=True)  # over the modes served
            if whole:
                modes_xy, probs = res.modes[:, :n_modes], p_k
                std = None if res.std is None else res.std[:, :n_modes]
                std_agent = None if res.std_agent is None else res.std_agent[:, 0]
            else:  # later ranks overwrite: the newest observation wins
                modes_xy[idx] = res.modes[:, :n_modes]
                probs[idx] = p_k
                if std is not None and res.std is not None:
                    std[idx] = res.std[:, :n_modes]
                if std_agent is not None and res.std_agent is not None:
                    std_agent[idx] = res.std_agent[:, 0]
            batch_sizes.append(len(t))
            updates += len(t)
            if pred.is_thermal:  # the step reports the Joule heat of its neurons; their heat is restored next
                drive_j += float(res.energy_j.sum())
                rise_rows.append(res.memory)
        energy = self.meters[model].charge(updates, drive_j, np.concatenate(rise_rows) if rise_rows else None)
        records = encode_batch(kin_arr, memory, last_t, start_t, types, self.tags[model], self.clock())
        return Computed(
            records,
            kin_arr,
            memory,
            last_t,
            types,
            modes_xy,
            probs,
            std,
            std_agent,
            new_track,
            rewound,
            dt_used,
            energy,
            updates,
            batch_sizes,
            new_tracks,
            np.concatenate(intervals) if intervals else np.zeros(0),
        )

    def _after_commit(
        self,
        models: Sequence[str],
        roles: Sequence[str],
        frame: Frame,
        computed: dict[str, Computed],
        show_modes: bool = False,
    ) -> dict[str, Predictions]:
        """The answers now; the accounting (metrics, online scoring) after them (``service.accounting``)."""
        self.accounting.submit(Committed(models, frame, computed))
        return {
            role: self._answers(m, frame.agents, computed[m], show_modes)
            for role, m in zip(roles, models, strict=True)
        }

    def answer_sent(self) -> None:
        """An answer (of any route) has been handed to the transport; call from the event loop."""
        self.accounting.answer_sent()

    def flush(self) -> None:
        """Account every committed request not accounted yet (metrics, online scoring), oldest first."""
        self.accounting.flush()

    def _served_horizons(self, model: str) -> int:
        """How many of the model's horizons (ascending) an answer shows: those up to the prediction horizon."""
        h = self.predictors[model].horizons_s
        return int(np.searchsorted(h, self.settings.prediction_horizon_s + 1e-9, side="right"))

    def _answers(self, model: str, agents: list[str], c: Computed, show_modes: bool = False) -> Predictions:
        h = self.predictors[model].horizons_s  # ascending
        # the horizons served: a leading slice, so the futures are views (a mask copied them, 0.6 MB for a
        # 100-agent frame with six futures and their deviations)
        keep = slice(0, self._served_horizons(model))
        last_t = c.last_t
        return Predictions(
            agent_ids=agents,
            timestamps=last_t,
            steps=c.steps,
            new_track=c.new_track,
            dt_s=np.round(c.dt_s, TIME_DECIMALS),
            agent_types=[AGENT_TYPES[t] for t in c.agent_type.tolist()],
            trajectory_t=np.round(last_t[:, None] + h[keep][None, :], TIME_DECIMALS),
            modes_xy=c.modes_xy[:, :, keep],
            modes_std=None if c.std is None else c.std[:, :, keep],
            probs=c.probs,
            show_modes=show_modes,
        )

    # --- agents ---------------------------------------------------------------------------------------
    async def agent_summary(self, agent_id: str) -> dict[str, dict[str, object]]:
        """Per-model state summary of one agent; :class:`NotFound` when no model tracks it."""
        models = list(self.predictors)
        raw = await self.store.load([(m, agent_id) for m in models])
        now = self.clock()
        out: dict[str, dict[str, object]] = {}
        for m, r in zip(models, raw, strict=True):
            st = self._decode_one((m, agent_id), r)
            if st is None:
                continue
            pred = self.predictors[m]
            is_ipnet = pred.is_thermal
            out[m] = {
                "model_version": pred.version,
                "steps": st.steps,
                "last_timestamp": st.last_t,
                "track_start": st.track_start_t,
                "age_s": max(0.0, now - st.updated_wall),
                "agent_type": AGENT_TYPES[st.agent_type],
                "neuron_temperatures_k": [float(v) for v in st.memory] if is_ipnet else None,
            }
        if not out:
            raise NotFound(f"no state for agent {agent_id!r}", field="agent_id")
        return out

    async def end_track(self, agent_id: str) -> list[str]:
        """Free the agent's state in every model (end of track)."""
        async with self.locks.hold([agent_id]):
            if self.store.shared:
                # the end of the track enters the scoring log in the same transaction as the deletion: after
                # every commit of the old track, before any of a new track that reuses the id
                ended = ScoringEntry(self.origin, ended=[agent_id]).encode(self.scorer.horizon_s)
                deleted = await self.store.delete(agent_id, ALL_MODEL_KINDS, ended)
            else:
                deleted = await self.store.delete(agent_id, ALL_MODEL_KINDS)
                # a predict of this agent that held the lock before us has committed and queued its
                # accounting: account it now, then forget the track, or its predictions would outlive it
                # and be scored against a new track that reuses the id
                self.flush()
                self.scorer.forget(agent_id)
        if not deleted:
            raise NotFound(f"no state for agent {agent_id!r}", field="agent_id")
        self.metrics.evictions.labels(reason="ended").inc(len(deleted))
        return deleted

    # --- report ---------------------------------------------------------------------------------------
    async def report(self, agent_type: str | None = None, interval: str | None = None) -> dict[str, object]:
        """The online A/B comparison (see ``service.scoring``), optionally of one agent type / interval regime.

        With a shared store it covers every replica's frames up to the call (the log applied up to its newest
        entry, waiting at most ``scoring_catch_up_s``).
        """
        if self.follower is not None and not await self.follower.catch_up(self.settings.scoring_catch_up_s):
            log.warning("A/B report: the scoring log is not applied up to its newest entry yet")
        self.flush()
        r = self.scorer.report(agent_type, interval)
        for role in ("ipnet", "baseline"):
            p = self.predictors[self.roles[role]]
            r[role] = {"model": p.name, "model_version": p.version, **r[role]}  # type: ignore[dict-item]
        return {
            "models": {"ipnet": r["ipnet"], "baseline": r["baseline"]},
            "ade_reduction": r["ade_reduction"],
            "horizons_s": r["horizons_s"],
            "agent_type": agent_type,
            "interval": interval,
            "horizon_s": self.scorer.horizon_s,
            "min_steps": self.scorer.min_steps,
            "pending": self.scorer.pending,
        }

    async def maintain(self) -> None:
        """Periodic housekeeping: TTL sweep of the store, purge of unobserved predictions."""
        self.flush()
        await self.store.sweep()
        self.scorer.purge()
