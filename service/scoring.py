"""Online scoring: keep each prediction until its horizon has passed and score it on later observations.

The rules mirror the offline protocol of ``models.evaluate`` (``ipnet evaluate``), so the two agree:

- Only predictions made after at least ``min_steps`` observations of the track are kept (the offline
  window observes 2 s, i.e. 20 observations at 10 Hz).
- Each later observation of the agent scores every kept prediction it falls inside: the prediction is
  interpolated in time at the observation's true timestamp (linear between model horizons, the anchor
  position at time 0), exactly like ``models.windows.grid_to_times``.
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
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.metrics import Metrics

SCORING_HORIZON_S = 3.0
REPORT_HORIZONS_S = (1.0, 2.0, 3.0)
# (label, largest observed interval in s): a few nominal stream rates, bounded so the label set stays small.
# The bounds sit between the rates perception stacks use (10, 5, 2 Hz) so jitter never flips a regime.
INTERVAL_REGIMES: tuple[tuple[str, float], ...] = (
    ("10hz", 0.15),
    ("5hz", 0.3),
    ("2hz", 0.75),
    ("slower", float("inf")),
)
REGIME_NAMES = tuple(name for name, _ in INTERVAL_REGIMES)


def interval_regime(step_s: float | None) -> str:
    """The regime label of an observed interval (``unknown`` before a track has one)."""
    if step_s is None or not step_s > 0:
        return "unknown"
    for name, upper in INTERVAL_REGIMES:
        if step_s <= upper:
            return name
    return "slower"  # unreachable: the last bound is infinite


@dataclass
class _Pending:
    agent_id: str
    agent_type: str
    anchor_t: float
    created_wall: float
    paired: bool  # made by both A/B models from the same observation
    step_s: float | None  # the observed interval of the anchor: the expected spacing of what follows
    regime: str  # interval_regime(step_s)
    times: np.ndarray  # (H+1,) seconds after the anchor, starting at 0
    preds: dict[str, np.ndarray]  # model -> (H+1, 2) world positions, row 0 = the anchor
    rels: list[float] = field(default_factory=list)
    errs: dict[str, list[float]] = field(default_factory=dict)
    done: bool = False


@dataclass
class _Agg:
    n: int = 0
    ade: float = 0.0
    fde: float = 0.0
    h_n: dict[str, int] = field(default_factory=dict)
    h_sum: dict[str, float] = field(default_factory=dict)


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
        self._by_agent: dict[str, deque[_Pending]] = {}
        self._order: deque[_Pending] = deque()  # creation order, lazily cleaned of finished entries
        self._live = 0
        self._grids: dict[bytes, np.ndarray] = {}
        # (agent type, interval regime) -> (ipnet aggregate, baseline aggregate), paired matured predictions
        self._ab: dict[tuple[str, str], tuple[_Agg, _Agg]] = {}

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
        if steps < self.min_steps or not trajectories:
            return
        if self.stride_s > 0:
            last = self._last_anchor.get(agent_id)
            # the same rule as models.windows.make_windows: the next anchor at least a stride later,
            # less a quarter of the sampling interval
            slack = 0.25 * step_s if step_s else 1e-6
            if last is not None and last <= anchor_t < last + self.stride_s - slack:
                return
            self._last_anchor[agent_id] = anchor_t
            self._last_anchor.move_to_end(agent_id)
            if len(self._last_anchor) > self.max_total:
                self._last_anchor.popitem(last=False)
        key = np.asarray(horizons_s, dtype=np.float64).tobytes()
        times = self._grids.get(key)
        if times is None:  # one shared array per grid: predictions on one grid are scored together
            times = self._grids[key] = np.concatenate([[0.0], np.asarray(horizons_s, dtype=np.float64)])
        preds = {
            m: np.concatenate([np.asarray(anchor_xy, np.float64)[None], np.asarray(tr, np.float64)])
            for m, tr in trajectories.items()
        }
        p = _Pending(
            agent_id,
            agent_type,
            anchor_t,
            self.clock(),
            paired=all(m in trajectories for m in self.ab_models),
            step_s=step_s,
            regime=interval_regime(step_s),
            times=times,
            preds=preds,
            errs={m: [] for m in trajectories},
        )
        queue = self._by_agent.get(agent_id)
        if queue is not None and len(queue) >= self.max_per_agent:
            self._finish(queue[0], "dropped")  # may empty and unlink the queue: fetch it again
        self._by_agent.setdefault(agent_id, deque()).append(p)
        self._order.append(p)
        self._live += 1
        while self._live > self.max_total:
            oldest = self._order.popleft()
            if not oldest.done:
                self._finish(oldest, "dropped")
        self.metrics.pending_predictions.set(self._live)

    def observe(self, agent_id: str, t: float, xy: np.ndarray) -> None:
        """Score the kept predictions of ``agent_id`` against its observation at ``t``."""
        self.observe_many([(agent_id, t, float(xy[0]), float(xy[1]))])

    def observe_many(self, observations: list[tuple[str, float, float, float]]) -> None:
        """Score kept predictions against ``(agent_id, t, x, y)`` observations (in time order per agent).

        One observation per agent is scored at a time; several rounds serve several per agent.
        """
        rounds: list[list[tuple[str, float, float, float]]] = []
        seen: dict[str, int] = {}
        for o in observations:
            k = seen.get(o[0], 0)
            seen[o[0]] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(o)
        for batch in rounds:
            self._observe_round(batch)
        self.metrics.pending_predictions.set(self._live)

    def _observe_round(self, observations: list[tuple[str, float, float, float]]) -> None:
        scored: list[_Pending] = []
        where: list[tuple[float, float]] = []
        for agent_id, t, x, y in observations:
            queue = self._by_agent.get(agent_id)
            if queue:
                n = len(scored)
                self._eligible(queue, t, scored)
                where += [(x, y)] * (len(scored) - n)
        if scored:
            self._score(scored, np.asarray(where, dtype=np.float64))
        for p in scored:
            tol = 0.5 * p.rels[0]
            if p.rels[-1] >= self.horizon_s - tol - 1e-9:
                self._mature(p, tol)

    def _eligible(self, queue: deque[_Pending], t: float, scored: list[_Pending]) -> None:
        """Append to ``scored`` the predictions that an observation at ``t`` scores (and record its time)."""
        for p in list(queue):
            rel = t - p.anchor_t
            last = p.rels[-1] if p.rels else 0.0
            if rel <= last + 1e-9:
                continue  # this observation (or an earlier one) was already seen for this prediction
            step = p.step_s or (p.rels[0] if p.rels else rel)
            if rel - last > 1.5 * step + 1e-9 or rel - last < 0.5 * step - 1e-9:
                self._finish(p, "incomplete")
                continue
            # like the offline score: "at h" means the observation nearest h within half the first interval
            tol = 0.5 * (p.rels[0] if p.rels else rel)
            if rel > self.horizon_s + tol + 1e-9:
                self._finish(p, "incomplete")
                continue
            p.rels.append(rel)
            scored.append(p)

    @staticmethod
    def _score(scored: list[_Pending], xy: np.ndarray) -> None:
        """Append the error at each prediction's newest scored time; ``xy[i]`` is what ``scored[i]`` saw.

        Vectorised per (grid, model).
        """
        groups: dict[tuple[int, str], list[int]] = {}
        for i, p in enumerate(scored):
            for m in p.preds:
                groups.setdefault((id(p.times), m), []).append(i)
        for (_, m), members in groups.items():
            ps = [scored[i] for i in members]
            obs = xy[members]
            times = ps[0].times
            rel = np.array([p.rels[-1] for p in ps])
            j = np.clip(np.searchsorted(times, rel, side="right"), 1, len(times) - 1)
            frac = ((rel - times[j - 1]) / (times[j] - times[j - 1]))[:, None]
            pred = np.stack([p.preds[m] for p in ps])  # (P, H+1, 2)
            rows = np.arange(len(ps))
            at = pred[rows, j - 1] + frac * (pred[rows, j] - pred[rows, j - 1])
            err = np.hypot(at[:, 0] - obs[:, 0], at[:, 1] - obs[:, 1])
            for p, e in zip(ps, err.tolist(), strict=True):
                p.errs[m].append(e)

    def forget(self, agent_id: str) -> None:
        """The track ended: its kept predictions will never be observed."""
        for p in list(self._by_agent.get(agent_id, ())):
            self._finish(p, "unobserved")
        self._last_anchor.pop(agent_id, None)
        self.metrics.pending_predictions.set(self._live)

    def purge(self) -> None:
        """Drop predictions whose horizon passed (wall clock) without maturing."""
        limit = self.clock() - self.purge_after_s
        while self._order and (self._order[0].done or self._order[0].created_wall < limit):
            p = self._order.popleft()
            if not p.done:
                self._finish(p, "unobserved")
        self.metrics.pending_predictions.set(self._live)

    # --- outcome ------------------------------------------------------------------------------------
    def _finish(self, p: _Pending, outcome: str) -> None:
        if p.done:
            return
        p.done = True
        self._live -= 1
        queue = self._by_agent.get(p.agent_id)
        if queue is not None:
            queue.remove(p)
            if not queue:
                del self._by_agent[p.agent_id]
        self.metrics.scoring.labels(outcome=outcome).inc()

    def _mature(self, p: _Pending, tol: float) -> None:
        rels = np.asarray(p.rels)
        at_h: dict[str, int] = {}
        for h in REPORT_HORIZONS_S:
            j = int(np.argmin(np.abs(rels - h)))
            if abs(rels[j] - h) <= tol + 1e-9:
                at_h[f"{h:g}"] = j
        summary: dict[str, tuple[float, float]] = {}
        for m, errs in p.errs.items():
            e = np.asarray(errs)
            ade, fde = float(e.mean()), float(e[-1])
            summary[m] = (ade, fde)
            self.metrics.ade.labels(model=m, interval=p.regime).observe(ade)
            self.metrics.fde.labels(model=m, interval=p.regime).observe(fde)
            for label, j in at_h.items():
                self.metrics.displacement_error.labels(model=m, horizon_s=label, interval=p.regime).observe(
                    float(e[j])
                )
        if p.paired:
            aggs = self._ab.setdefault((p.agent_type, p.regime), (_Agg(), _Agg()))
            for agg, m in zip(aggs, self.ab_models, strict=True):
                agg.n += 1
                agg.ade += summary[m][0]
                agg.fde += summary[m][1]
                for label, j in at_h.items():
                    agg.h_n[label] = agg.h_n.get(label, 0) + 1
                    agg.h_sum[label] = agg.h_sum.get(label, 0.0) + p.errs[m][j]
        self._finish(p, "matured")

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
        return {
            "ipnet": {"ade_m": ade_ip, "fde_m": mean(ip.fde, ip.n), "n": ip.n},
            "baseline": {"ade_m": ade_b, "fde_m": mean(base.fde, base.n), "n": base.n},
            "ade_reduction": (1.0 - ade_ip / ade_b) if ade_ip is not None and ade_b else None,
            "horizons_s": horizons,
        }
