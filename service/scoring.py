"""Online scoring: keep each prediction until its horizon has passed and score it on later observations.

The rules mirror the offline protocol of ``models.evaluate`` (``ipnet evaluate``), so the two agree:

- Only predictions made after at least ``min_steps`` observations of the track are kept (the offline
  window observes 2 s, i.e. 20 observations at 10 Hz).
- The later observations of the agent score every kept prediction they fall inside: the prediction is
  interpolated in time at each observation's true timestamp (linear between model horizons, the anchor
  position at time 0), exactly like ``models.windows.grid_to_times``. Observations are only buffered
  per agent as they arrive; a prediction is scored once, vectorised, when its horizon has been observed
  (a request then costs an append per observation, not work per kept prediction).
- The observed future must have no gap: each interval within 0.5-1.5 times the anchor's own interval,
  like a complete offline window. A prediction matures when an
  observation within half a step of the horizon (3 s) arrives: its ADE is the mean error over every scored
  point, its FDE the error of that last point, and the errors at 1, 2, 3 s are those of the observation
  nearest each (within half a step). Predictions with a gap, or whose horizon passes unobserved, are
  dropped unscored.
- With ``stride_s`` > 0 at most one prediction per agent and stride is kept, anchors chosen like the
  offline windows' (the next at least a stride after the last kept one).
- Each prediction belongs to the interval regime of its anchor (``interval_regime``): the error histograms
  carry it as the ``interval`` label and the A/B report can be read for one regime, so a rate change or
  a dropping stream shows up as its own series rather than blurring the average.
- Memory is bounded: at most ``max_per_agent`` kept predictions per agent and ``max_total`` overall
  (the oldest go first), and predictions older than the horizon plus the state TTL are purged.
- Several futures (``?modes=K``): the K served are kept (``model`` the most probable, ``model#j`` the others)
  and scored together: ADE/FDE are the most probable one's, minADE_K / minFDE_K the lowest over the K (as
  ``ipnet evaluate`` computes them), a miss a minFDE_K above ``MISS_THRESHOLD_M``.
- Calibration: for a model with deviations, each scored point of the most probable future is inside its 95%
  region or not (the ellipse of the deviations along and across the anchor's heading, interpolated in time
  like the positions); the share inside is the online coverage (``coverage_95`` in ``ipnet evaluate``).
- Replicas (``service.scoring_log``): every replica's scorer is fed the same log of all replicas' frames,
  so each holds the whole A/B report; a prediction is *own* on the replica that made it, and only own
  predictions feed this process's Prometheus series, so their sum over replicas counts each once.
"""

from __future__ import annotations

import bisect
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from service.metrics import Metrics

SCORING_HORIZON_S = 3.0
REPORT_HORIZONS_S = (1.0, 2.0, 3.0)
REPORT_LABELS = tuple(f"{h:g}" for h in REPORT_HORIZONS_S)
# (label, largest observed interval in s): a few nominal stream rates, bounded so the label set stays small.
# The bounds sit between the rates perception stacks use (10, 5, 2 Hz) so jitter never flips a regime.
INTERVAL_REGIMES: tuple[tuple[str, float], ...] = (
    ("10hz", 0.15),
    ("5hz", 0.3),
    ("2hz", 0.75),
    ("slower", float("inf")),
)
REGIME_NAMES = tuple(name for name, _ in INTERVAL_REGIMES)
#: a prediction whose minFDE_K exceeds this is a miss (Argoverse's threshold; ``models.evaluate`` uses it too)
MISS_THRESHOLD_M = 2.0
#: squared Mahalanobis radius of a 2-D Gaussian's 95% region (chi-square, 2 degrees of freedom)
CHI2_2D_95 = 5.991464547107979


def mode_of(key: str) -> str:
    """The model a kept trajectory belongs to: ``ipnet`` for ``ipnet`` and for its other modes ``ipnet#j``."""
    return key.split("#", 1)[0]


def _dev(model: str) -> str:
    """The batch key of a model's deviations along / across the heading ((K, H+1, 2), row 0 = the first)."""
    return f"~dev:{model}"


def _heading(model: str) -> str:
    """The batch key of a model's headings at the anchors ((K, 2) unit vectors)."""
    return f"~heading:{model}"


def interval_regime(step_s: float | None) -> str:
    """The regime label of an observed interval (``unknown`` before a track has one)."""
    if step_s is None or not step_s > 0:
        return "unknown"
    for name, upper in INTERVAL_REGIMES:
        if step_s <= upper:
            return name
    return "slower"  # unreachable: the last bound is infinite


@dataclass(slots=True)
class _Pending:
    agent_id: str
    agent_type: str
    anchor_t: float
    created_wall: float
    paired: bool  # made by both A/B models from the same observation
    step_s: float | None  # the observed interval of the anchor: the expected spacing of what follows
    times: np.ndarray  # (H+1,) seconds after the anchor, starting at 0
    # model -> (K, H+1, 2) world positions, row 0 of each the anchor: the K predictions kept from one frame
    # share it (one array per model and frame, not one per prediction); this one is row ``row``
    batch: dict[str, np.ndarray]
    row: int
    own: bool = True  # made by this process: its outcome and errors feed this process's metrics
    done: bool = False


@dataclass
class _Track:
    """One agent's kept predictions (anchor order) and its observations since the oldest one's anchor."""

    pending: deque[_Pending] = field(default_factory=deque)
    obs_t: list[float] = field(default_factory=list)
    obs_x: list[float] = field(default_factory=list)
    obs_y: list[float] = field(default_factory=list)
    # observations before this time cannot settle the oldest kept prediction (-inf: not known yet)
    due_t: float = float("-inf")

    def trim(self) -> None:
        """Forget observations no kept prediction can use (at or before the oldest anchor)."""
        if not self.pending:
            self.obs_t.clear()
            self.obs_x.clear()
            self.obs_y.clear()
            return
        k = bisect.bisect_right(self.obs_t, self.pending[0].anchor_t)
        if k:
            del self.obs_t[:k], self.obs_x[:k], self.obs_y[:k]


class _Due(NamedTuple):
    """A prediction whose horizon has been observed: to be judged and scored (``OnlineScorer._score``)."""

    p: _Pending
    ts: list[float]  # the observations after the anchor up to the horizon: timestamps, seconds
    xs: list[float]  # the observed positions at those times
    ys: list[float]
    tol: float  # half the first interval: how near an observation must be to a report horizon


#: log-spaced bin edges of the ADE histogram behind the report's median and p90: 1 mm to 100 km, 2% wide
#: (a quantile is read to within one bin); bounded memory whatever the number of predictions
ADE_EDGES_M = np.geomspace(1e-3, 1e5, int(np.log(1e8) / np.log(1.02)) + 1)


@dataclass
class _Agg:
    n: int = 0
    ade: float = 0.0
    fde: float = 0.0
    h_n: dict[str, int] = field(default_factory=dict)
    h_sum: dict[str, float] = field(default_factory=dict)
    min_ade: float = 0.0  # sums of minADE_K, minFDE_K and misses over the n predictions
    min_fde: float = 0.0
    misses: int = 0
    ks: set[int] = field(default_factory=set)  # the K the predictions were served with
    points: int = 0  # scored points of the most probable futures with deviations, and those in the 95% region
    covered: int = 0
    # ADE counts per bin of ADE_EDGES_M (first and last bins also hold what falls outside)
    ade_hist: np.ndarray = field(default_factory=lambda: np.zeros(len(ADE_EDGES_M) + 1, dtype=np.int64))

    def add_ade(self, values: np.ndarray) -> None:
        np.add.at(self.ade_hist, np.searchsorted(ADE_EDGES_M, values), 1)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the ADEs, read off the histogram (the geometric middle of its bin)."""
        total = int(self.ade_hist.sum())
        if not total:
            return None
        k = int(np.searchsorted(np.cumsum(self.ade_hist), q * total, side="left"))
        lo = ADE_EDGES_M[max(k - 1, 0)]
        hi = ADE_EDGES_M[min(k, len(ADE_EDGES_M) - 1)]
        return float(np.sqrt(lo * hi))


def _joined(frames: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    """One key's arrays of several frames' batches, back to back (a view when there is one frame)."""
    parts = [b[key] for b in frames]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class _Interp(NamedTuple):
    """Where every observation falls on its prediction's grid, to interpolate any (rows, G, 2) values there as
    ``np.interp`` does (the same formula, so the same floats)."""

    i0: np.ndarray  # (R,) flat index of the grid point before each observation
    i1: np.ndarray  # (R,) and after it
    ie: np.ndarray  # (R,) the grid point np.interp answers itself (on a grid point, or beyond the ends)
    dx: np.ndarray  # (R, 1) grid step around each observation
    past: np.ndarray  # (R, 1) seconds from the grid point before
    on_grid: np.ndarray  # (R, 1) bool: take ie

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """(rows, G, 2) values -> (R, 2) at the observations."""
        flat = values.reshape(-1, 2)  # (rows * G, 2)
        f0 = np.take(flat, self.i0, axis=0)  # take: several times faster than fancy indexing here
        v = (np.take(flat, self.i1, axis=0) - f0) / self.dx * self.past + f0  # slope * (x - x0) + f0
        return np.where(self.on_grid, np.take(flat, self.ie, axis=0), v)


class OnlineScorer:
    """Keeps predictions, scores them on later observations, feeds the histograms and the A/B report.

    Not thread-safe: called from the event loop only.
    """

    def __init__(
        self,
        metrics: Metrics,
        ab_models: tuple[str, str],
        min_steps: int,
        max_total: int,
        max_per_agent: int,
        purge_after_s: float,
        clock: Callable[[], float],
        horizon_s: float = SCORING_HORIZON_S,
        stride_s: float = 0.0,
    ) -> None:
        self.metrics = metrics
        self.ab_models = ab_models
        self.min_steps = min_steps
        self.max_total = max_total
        self.max_per_agent = max_per_agent
        self.purge_after_s = purge_after_s
        self.clock = clock
        self.horizon_s = horizon_s
        # keep at most one prediction per agent every stride_s (the offline windows' stride): scoring work
        # and memory fall by the same factor while the report stays an unbiased sample of the stream
        self.stride_s = stride_s
        self._last_anchor: OrderedDict[str, float] = OrderedDict()  # LRU, bounded by max_total
        self._tracks: dict[str, _Track] = {}
        self._order: deque[_Pending] = deque()  # creation order, lazily cleaned of finished entries
        self._live = 0
        self._live_own = 0  # of them made by this process (the pending gauge)
        self._grids: dict[bytes, np.ndarray] = {}
        # (agent type, interval regime) -> (ipnet aggregate, baseline aggregate), paired matured predictions
        self._ab: dict[tuple[str, str], tuple[_Agg, _Agg]] = {}
        # errors of predictions matured in the current call, per histogram series: fed in bulk at its end
        self._ade: dict[tuple[str, str], list[float]] = {}
        self._fde: dict[tuple[str, str], list[float]] = {}
        self._at_h: dict[tuple[str, str, str], list[float]] = {}
        self._min_ade: dict[str, list[float]] = {}
        self._min_fde: dict[str, list[float]] = {}
        self._misses: dict[str, int] = {}
        self._points: dict[str, tuple[int, int]] = {}  # model -> (scored points, inside the 95% region)
        self._outcomes: dict[str, Any] = {}  # outcome -> its counter child (labels() costs a lookup per call)

    @property
    def pending(self) -> int:
        return self._live

    # --- intake -------------------------------------------------------------------------------------
    def add(
        self,
        agent_id: str,
        agent_type: str,
        anchor_t: float,
        anchor_xy: np.ndarray,
        steps: int,
        horizons_s: np.ndarray,
        trajectories: dict[str, np.ndarray],
        step_s: float | None = None,
    ) -> None:
        """Keep the prediction(s) made from one observation; ``trajectories``: model -> (H, 2) world.

        ``step_s`` is the interval of the anchor observation (the stream's rate); without it the first
        later observation sets the rate.
        """
        self.add_many(
            [agent_id],
            [agent_type],
            [anchor_t],
            np.asarray(anchor_xy, np.float64)[None],
            [steps],
            horizons_s,
            {m: np.asarray(tr, np.float64)[None] for m, tr in trajectories.items()},
            [step_s],
        )

    def add_many(
        self,
        agent_ids: list[str],
        agent_types: list[str],
        anchor_t: list[float],
        anchor_xy: np.ndarray,
        steps: list[int],
        horizons_s: np.ndarray,
        trajectories: dict[str, np.ndarray],
        step_s: list[float | None],
        own: bool = True,
        deviations: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Keep the predictions of every row of a frame, as :meth:`add` does for one (``trajectories``:
        model -> (A, H, 2)); only kept rows cost array work, and with the stride most rows are not kept.
        ``own``: made by this process (see the module docstring); ``deviations``: model -> (A, 1 + H, 2), the
        heading at the anchor (row 0) and the most probable future's deviations along / across it."""
        if not trajectories:
            return
        kept = [
            i
            for i, agent_id in enumerate(agent_ids)
            if steps[i] >= self.min_steps and self._admit(agent_id, anchor_t[i], step_s[i])
        ]
        if not kept:
            return
        # every kept row's (H+1, 2) prediction, anchor first, built in one operation per model: one
        # (K, H+1, 2) array per model that the K kept predictions share (only kept rows: the frame's other
        # rows are not held). It lives until the last of them finishes; predictions of one frame mature,
        # or are dropped, within the same few frames, so it holds little beyond the live ones.
        anchors = np.asarray(anchor_xy, np.float64)[kept][:, None]
        batch = {
            m: np.concatenate([anchors, np.asarray(tr, np.float64)[kept]], axis=1)
            for m, tr in trajectories.items()
        }
        for m, dev in (deviations or {}).items():
            d = np.asarray(dev, np.float64)[kept]
            batch[_heading(m)] = d[:, 0]
            batch[_dev(m)] = np.concatenate([d[:, 1:2], d[:, 1:]], axis=1)  # the first deviation from time 0
        times = self._grid(horizons_s)
        paired = all(m in batch for m in self.ab_models)
        now = self.clock()
        for r, i in enumerate(kept):
            self._keep(
                _Pending(
                    agent_ids[i], agent_types[i], anchor_t[i], now, paired, step_s[i], times, batch, r, own
                )
            )
        self.metrics.pending_predictions.set(self._live_own)

    def _admit(self, agent_id: str, anchor_t: float, step_s: float | None) -> bool:
        """The stride rule: whether a prediction anchored at ``anchor_t`` is kept (and if so, remember it)."""
        if self.stride_s > 0:
            last = self._last_anchor.get(agent_id)
            # the same rule as models.windows.make_windows: the next anchor at least a stride later,
            # less a quarter of the sampling interval
            slack = 0.25 * step_s if step_s else 1e-6
            if last is not None and last <= anchor_t < last + self.stride_s - slack:
                return False
            self._last_anchor[agent_id] = anchor_t
            self._last_anchor.move_to_end(agent_id)
            if len(self._last_anchor) > self.max_total:
                self._last_anchor.popitem(last=False)
        return True

    def _grid(self, horizons_s: np.ndarray) -> np.ndarray:
        """``[0, *horizons_s]``, one shared array per grid: predictions on one grid are scored together."""
        key = np.asarray(horizons_s, dtype=np.float64).tobytes()
        times = self._grids.get(key)
        if times is None:
            times = self._grids[key] = np.concatenate([[0.0], np.asarray(horizons_s, dtype=np.float64)])
        return times

    def _keep(self, p: _Pending) -> None:
        """Keep one prediction (the caller sets the pending gauge)."""
        agent_id = p.agent_id
        track = self._tracks.get(agent_id)
        if track is not None and len(track.pending) >= self.max_per_agent:
            self._finish(track.pending[0], "dropped")  # may empty and unlink the track: fetch it again
            track = self._tracks.get(agent_id)
        if track is None:  # not setdefault: that would build a _Track (a deque, three lists) every call
            track = self._tracks[agent_id] = _Track()
        track.pending.append(p)
        self._order.append(p)
        self._live += 1
        self._live_own += p.own
        while self._live > self.max_total:
            oldest = self._order.popleft()
            if not oldest.done:
                self._finish(oldest, "dropped")

    def observe(self, agent_id: str, t: float, xy: np.ndarray) -> None:
        """Score the kept predictions of ``agent_id`` against its observation at ``t``."""
        self.observe_many([(agent_id, t, float(xy[0]), float(xy[1]))])

    def observe_many(self, observations: list[tuple[str, float, float, float]]) -> None:
        """Score kept predictions against ``(agent_id, t, x, y)`` observations (in time order per agent)."""
        tracks = self._tracks
        due: list[_Due] = []
        for agent_id, t, x, y in observations:
            track = tracks.get(agent_id)
            if track is None:
                continue  # nothing kept for this agent: nothing to score, nothing to remember
            if track.obs_t and t <= track.obs_t[-1]:
                continue  # already seen (the engine rejects stale observations; this keeps the scorer safe)
            track.obs_t.append(t)
            track.obs_x.append(x)
            track.obs_y.append(y)
            if t < track.due_t:
                continue  # the oldest kept prediction's horizon is not observed yet: the common case
            # anchors are in time order: when the oldest kept prediction is not due yet, none is
            # (a settled prediction leaves its track, which then drops the observations none still needs)
            while track.pending and self._settle(track.pending[0], track, t, due):
                pass
        if due:
            self._score(due)
        self._flush()
        self.metrics.pending_predictions.set(self._live_own)

    def _flush(self) -> None:
        """Feed the errors of this call's matured predictions to the histograms, one bulk call per series."""
        met = self.metrics
        for series, hist in ((self._ade, met.ade), (self._fde, met.fde)):
            for key, values in series.items():
                hist.observe_many(np.asarray(values), key)
            series.clear()
        for key3, values in self._at_h.items():
            met.displacement_error.observe_many(np.asarray(values), key3)
        self._at_h.clear()
        for series1, hist1 in ((self._min_ade, met.min_ade), (self._min_fde, met.min_fde)):
            for model, values in series1.items():
                hist1.observe_many(np.asarray(values), model)
            series1.clear()
        for model, n in self._misses.items():
            # also 0: the miss-rate series exists from the first maturity on
            met.misses.labels(model=model).inc(n)
        self._misses.clear()
        for model, (points, covered) in self._points.items():
            met.scored_points.labels(model=model).inc(points)
            met.covered_points.labels(model=model).inc(covered)
        self._points.clear()

    def _settle(self, p: _Pending, track: _Track, t_new: float, due: list[_Due]) -> bool:
        """True when the observations so far reach ``p``'s horizon: then ``p`` is out of its track and in
        ``due``, to be judged and scored with the others of this call (:meth:`_score`)."""
        first = bisect.bisect_right(track.obs_t, p.anchor_t + 1e-9)
        if first == len(track.obs_t):
            return False
        tol = 0.5 * (track.obs_t[first] - p.anchor_t)
        if t_new - p.anchor_t < self.horizon_s - tol - 1e-9:
            # the horizon is not observed yet: nothing to do before this time (observe_many checks it)
            # (1 us early: Unix-time sums round by ~2e-7 s, and the exact test above decides then)
            track.due_t = p.anchor_t + (self.horizon_s - tol - 1e-9) - 1e-6
            return False
        anchor = p.anchor_t
        obs_t = track.obs_t
        # one past the observation that reaches the horizon (t_new does), by the same test as the check above
        end = bisect.bisect_left(obs_t, self.horizon_s - tol - 1e-9, first, key=lambda t: t - anchor) + 1
        # whether the observed future has a gap is decided with the others due in this call (:meth:`_score`)
        due.append(_Due(p, obs_t[first:end], track.obs_x[first:end], track.obs_y[first:end], tol))
        self._retire(p)
        return True

    def _score(self, due: list[_Due]) -> None:
        """Errors of every prediction that matured in this call, in a few array operations per grid.

        Each prediction is interpolated in time at its observations' timestamps, as ``np.interp`` does
        (the same formula, so the same floats): linear between grid points, the end values beyond them.
        """
        groups: dict[tuple[int, tuple[str, ...]], list[_Due]] = {}
        for d in due:
            groups.setdefault((id(d.p.times), tuple(d.p.batch)), []).append(d)
        for (_, keys), group in groups.items():
            models = tuple(k for k in keys if not k.startswith("~"))
            lens, rel = self._times(group)
            complete = self._complete(group, lens, rel)
            if not complete.all():
                flags = complete.tolist()
                self._count("incomplete", sum(d.p.own for d, ok in zip(group, flags, strict=True) if not ok))
                group = [d for d, ok in zip(group, flags, strict=True) if ok]
                if not group:
                    continue
                lens, rel = self._times(group)
            times = group[0].p.times  # (G,) shared by the group
            g = len(times)
            # the group's predictions as rows of one (rows * G, 2) array per model: their frames' batches
            # back to back (a maturing frame's predictions were mostly kept together: then one batch, a view)
            batches: dict[int, tuple[int, dict[str, np.ndarray]]] = {}  # id -> (first row, batch)
            rows: list[int] = []
            total = 0
            for d in group:
                at = batches.get(id(d.p.batch))
                if at is None:
                    at = batches[id(d.p.batch)] = (total, d.p.batch)
                    total += len(d.p.batch[models[0]])
                rows.append(at[0] + d.p.row)
            ends = np.cumsum(lens)
            ox = np.fromiter(itertools.chain.from_iterable(d.xs for d in group), np.float64, len(rel))
            oy = np.fromiter(itertools.chain.from_iterable(d.ys for d in group), np.float64, len(rel))
            j = np.clip(np.searchsorted(times, rel, side="right") - 1, 0, g - 2)
            x0 = times[j]
            dx, past = (times[j + 1] - x0)[:, None], (rel - x0)[:, None]
            # where np.interp answers a grid value itself: on a grid point, and the ends beyond the grid
            exact = np.where(rel >= times[-1], g - 1, np.where(rel == x0, j, -1))
            exact = np.where(rel < times[0], 0, exact)
            base = np.repeat(np.array(rows, np.intp) * g, lens)  # (R,) each observation's prediction
            interp = _Interp(
                base + j, base + j + 1, base + np.maximum(exact, 0), dx, past, (exact >= 0)[:, None]
            )
            frames = [b for _, b in batches.values()]
            errs: dict[str, np.ndarray] = {}
            inside: dict[str, np.ndarray] = {}
            for m in models:
                v = interp(_joined(frames, m))
                ex, ey = v[:, 0] - ox, v[:, 1] - oy
                errs[m] = np.hypot(ex, ey)
                if _dev(m) in keys:
                    sd = interp(_joined(frames, _dev(m)))
                    head = np.take(
                        _joined(frames, _heading(m)), np.repeat(np.array(rows, np.intp), lens), axis=0
                    )
                    along = head[:, 0] * ex + head[:, 1] * ey
                    across = -head[:, 1] * ex + head[:, 0] * ey
                    inside[m] = (along / sd[:, 0]) ** 2 + (across / sd[:, 1]) ** 2 <= CHI2_2D_95
            self._book(group, models, rel, ends - lens, lens, errs, inside)

    @staticmethod
    def _times(group: list[_Due]) -> tuple[np.ndarray, np.ndarray]:
        """Each prediction's observation count, and all their times after the anchor back to back."""
        n = len(group)
        lens = np.fromiter((len(d.ts) for d in group), np.intp, n)
        ts = np.fromiter(itertools.chain.from_iterable(d.ts for d in group), np.float64, int(lens.sum()))
        anchors = np.fromiter((d.p.anchor_t for d in group), np.float64, n)
        return lens, ts - np.repeat(anchors, lens)  # the same doubles as t - anchor one by one

    def _complete(self, group: list[_Due], lens: np.ndarray, rel: np.ndarray) -> np.ndarray:
        """Which predictions have an observed future without a gap (bool per prediction).

        The offline windows' rule: every interval from the anchor on within 0.5-1.5 times the anchor's own
        interval (or, without one, the first observed), and the horizon reached within half the first.
        """
        starts = np.cumsum(lens) - lens
        step = np.array([d.p.step_s or 0.0 for d in group])
        step = np.where(step != 0.0, step, rel[starts])  # ``step_s or`` the first observed interval
        prev = np.empty_like(rel)
        prev[1:] = rel[:-1]
        prev[starts] = 0.0
        gap = rel - prev
        lo = np.repeat(0.5 * step - 1e-9, lens)
        hi = np.repeat(1.5 * step + 1e-9, lens)
        regular = np.logical_and.reduceat((lo <= gap) & (gap <= hi), starts)
        tol = np.array([d.tol for d in group])
        complete: np.ndarray = regular & (rel[starts + lens - 1] <= self.horizon_s + tol + 1e-9)
        return complete

    def _book(
        self,
        group: list[_Due],
        models: tuple[str, ...],
        rel: np.ndarray,
        starts: np.ndarray,
        lens: np.ndarray,
        errs: dict[str, np.ndarray],
        inside: dict[str, np.ndarray],
    ) -> None:
        """Histograms and A/B sums of a batch of matured predictions, by whole-batch array operations.

        ``rel`` holds every prediction's observation times back to back (prediction ``i`` at
        ``starts[i]:starts[i] + lens[i]``, increasing), ``errs`` the errors there per model. A prediction's
        ADE is its mean error, its FDE the last one; its error at 1, 2, 3 s that of the observation nearest
        each (the earlier on a tie, as ``bisect`` finds it), within half its first interval.
        """
        ends = starts + lens
        ade = {m: np.add.reduceat(e, starts) / lens for m, e in errs.items()}
        fde = {m: e[ends - 1] for m, e in errs.items()}
        bases = [m for m in models if mode_of(m) == m]
        keys_of = {b: [k for k in models if mode_of(k) == b] for b in bases}
        min_ade = {b: np.min([ade[k] for k in keys], axis=0) for b, keys in keys_of.items()}
        min_fde = {b: np.min([fde[k] for k in keys], axis=0) for b, keys in keys_of.items()}
        tol = np.array([d.tol for d in group]) + 1e-9
        # report horizon label -> (index of the nearest observation, found within tol) per prediction
        at_h: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for h, label in zip(REPORT_HORIZONS_S, REPORT_LABELS, strict=True):
            j = np.add.reduceat((rel < h).astype(np.intp), starts)  # bisect_left in each prediction's times
            at = starts + np.minimum(j, lens - 1)
            before = starts + np.maximum(j - 1, 0)
            earlier = (j == lens) | ((j > 0) & (h - rel[before] <= rel[at] - h))
            nearest = np.where(earlier, before, at)
            at_h[label] = (nearest, np.abs(rel[nearest] - h) <= tol)
        by_regime: dict[str, list[int]] = {}
        by_pair: dict[tuple[str, str], list[int]] = {}
        own = 0
        for i, d in enumerate(group):
            regime = interval_regime(d.p.step_s)
            if d.p.own:  # the histograms: this process's predictions only (the A/B report: every one)
                by_regime.setdefault(regime, []).append(i)
                own += 1
            if d.p.paired:
                by_pair.setdefault((d.p.agent_type, regime), []).append(i)
        # per prediction: its scored points inside the 95% region (models with deviations)
        covered = {m: np.add.reduceat(flags.astype(np.intp), starts) for m, flags in inside.items()}
        if own:
            mine = np.array([i for i, d in enumerate(group) if d.p.own])
            for b in bases:
                self._min_ade.setdefault(b, []).extend(min_ade[b][mine].tolist())
                self._min_fde.setdefault(b, []).extend(min_fde[b][mine].tolist())
                self._misses[b] = self._misses.get(b, 0) + int((min_fde[b][mine] > MISS_THRESHOLD_M).sum())
            for m, cov in covered.items():
                n_pts, n_in = self._points.get(m, (0, 0))
                self._points[m] = (n_pts + int(lens[mine].sum()), n_in + int(cov[mine].sum()))
        for regime, rows in by_regime.items():
            idx = np.array(rows)
            for m in bases:
                self._ade.setdefault((m, regime), []).extend(ade[m][idx].tolist())
                self._fde.setdefault((m, regime), []).extend(fde[m][idx].tolist())
                for label, (nearest, ok) in at_h.items():
                    sel = nearest[idx[ok[idx]]]
                    if sel.size:
                        self._at_h.setdefault((m, label, regime), []).extend(errs[m][sel].tolist())
        for key, rows in by_pair.items():
            idx = np.array(rows)
            aggs = self._ab.setdefault(key, (_Agg(), _Agg()))
            for agg, m in zip(aggs, self.ab_models, strict=True):
                agg.n += len(idx)
                agg.ade += float(ade[m][idx].sum())
                agg.add_ade(ade[m][idx])
                agg.fde += float(fde[m][idx].sum())
                agg.min_ade += float(min_ade[m][idx].sum())
                agg.min_fde += float(min_fde[m][idx].sum())
                agg.misses += int((min_fde[m][idx] > MISS_THRESHOLD_M).sum())
                agg.ks.add(len(keys_of[m]))
                if m in covered:
                    agg.points += int(lens[idx].sum())
                    agg.covered += int(covered[m][idx].sum())
                for label, (nearest, ok) in at_h.items():
                    sel = nearest[idx[ok[idx]]]
                    if sel.size:
                        agg.h_n[label] = agg.h_n.get(label, 0) + len(sel)
                        agg.h_sum[label] = agg.h_sum.get(label, 0.0) + float(errs[m][sel].sum())
        self._count("matured", own)

    def forget(self, agent_id: str) -> None:
        """The track ended: its kept predictions will never be observed."""
        track = self._tracks.get(agent_id)
        for p in list(track.pending) if track is not None else ():
            self._finish(p, "unobserved")
        self._last_anchor.pop(agent_id, None)
        self.metrics.pending_predictions.set(self._live_own)

    def purge(self) -> None:
        """Drop predictions whose horizon passed (wall clock) without maturing."""
        limit = self.clock() - self.purge_after_s
        while self._order and (self._order[0].done or self._order[0].created_wall < limit):
            p = self._order.popleft()
            if not p.done:
                self._finish(p, "unobserved")
        self.metrics.pending_predictions.set(self._live_own)

    # --- outcome ------------------------------------------------------------------------------------
    def _finish(self, p: _Pending, outcome: str) -> None:
        if p.done:
            return
        self._retire(p)
        self._count(outcome, int(p.own))

    def _count(self, outcome: str, n: int = 1) -> None:
        if not n:
            return
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._outcomes[outcome] = self.metrics.scoring.labels(outcome=outcome)
        counter.inc(n)

    def _retire(self, p: _Pending) -> None:
        """``p`` leaves its track and the live count (its outcome is counted by the caller)."""
        p.done = True
        self._live -= 1
        self._live_own -= p.own
        track = self._tracks.get(p.agent_id)
        if track is not None:
            if track.pending and track.pending[0] is p:
                track.pending.popleft()
            else:
                track.pending.remove(p)
            track.due_t = float("-inf")  # of the new oldest prediction: not known yet
            if track.pending:
                track.trim()
            else:
                del self._tracks[p.agent_id]

    # --- report -------------------------------------------------------------------------------------
    def report(self, agent_type: str | None = None, interval: str | None = None) -> dict[str, object]:
        """A/B means over paired matured predictions, optionally of one agent type and interval regime."""
        ip, base = _Agg(), _Agg()
        for (t, regime), (a, b) in self._ab.items():
            if agent_type is not None and t != agent_type:
                continue
            if interval is not None and regime != interval:
                continue
            for dst, src in ((ip, a), (base, b)):
                dst.n += src.n
                dst.ade += src.ade
                dst.fde += src.fde
                dst.ade_hist += src.ade_hist
                dst.min_ade += src.min_ade
                dst.min_fde += src.min_fde
                dst.misses += src.misses
                dst.ks |= src.ks
                dst.points += src.points
                dst.covered += src.covered
                for h in src.h_n:
                    dst.h_n[h] = dst.h_n.get(h, 0) + src.h_n[h]
                    dst.h_sum[h] = dst.h_sum.get(h, 0.0) + src.h_sum[h]

        def mean(total: float, n: int) -> float | None:
            return total / n if n else None

        horizons = {}
        for h in (f"{x:g}" for x in REPORT_HORIZONS_S):
            n = ip.h_n.get(h, 0)
            horizons[h] = {
                "ipnet": mean(ip.h_sum.get(h, 0.0), n),
                "baseline": mean(base.h_sum.get(h, 0.0), n),
                "n": n,
            }
        ade_ip, ade_b = mean(ip.ade, ip.n), mean(base.ade, base.n)

        def summary(agg: _Agg, ade: float | None) -> dict[str, object]:
            # the median and p90 beside the mean: one far outlier moves a mean, not them
            return {
                "ade_m": ade,
                "fde_m": mean(agg.fde, agg.n),
                "ade_median_m": agg.quantile(0.5),
                "ade_p90_m": agg.quantile(0.9),
                # over the K futures served (K = 1: the single trajectory's ADE and FDE); k is None when the
                # predictions were served with different K
                "k": next(iter(agg.ks)) if len(agg.ks) == 1 else None,
                "min_ade_k_m": mean(agg.min_ade, agg.n),
                "min_fde_k_m": mean(agg.min_fde, agg.n),
                "miss_rate_2m": mean(float(agg.misses), agg.n),
                "coverage_95": mean(float(agg.covered), agg.points),
                "n": agg.n,
            }

        return {
            "ipnet": summary(ip, ade_ip),
            "baseline": summary(base, ade_b),
            "ade_reduction": (1.0 - ade_ip / ade_b) if ade_ip is not None and ade_b else None,
            "horizons_s": horizons,
        }
