"""Online scoring rules: interpolation at true timestamps, maturity, gaps, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from service.metrics import Metrics
from service.scoring import OnlineScorer

HORIZONS = np.round(np.arange(1, 51) * 0.1, 10)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _scorer(clock: Clock | None = None, **kw) -> tuple[OnlineScorer, Metrics]:
    m = Metrics()
    args = {"min_steps": 1, "max_total": 1000, "max_per_agent": 64, "purge_after_s": 60.0}
    return OnlineScorer(m, ("ipnet", "gru"), clock=clock or Clock(), **{**args, **kw}), m


def _value(m: Metrics, name: str, **labels: str) -> float:
    """The sum over the samples of ``name`` carrying ``labels`` (others, such as ``interval``, summed over)."""
    want = set(labels.items())
    return sum(
        s.value
        for fam in m.registry.collect()
        for s in fam.samples
        if s.name == name and want <= set(s.labels.items())
    )


def test_errors_are_interpolated_at_the_true_timestamps():
    s, m = _scorer()
    # ipnet predicts 1 m/s along x, gru 2 m/s; the agent really moves at 1 m/s, observed at jittered times
    s.add(
        "a",
        "vehicle",
        10.0,
        np.zeros(2),
        20,
        HORIZONS,
        {"ipnet": np.stack([HORIZONS, 0 * HORIZONS], 1), "gru": np.stack([2 * HORIZONS, 0 * HORIZONS], 1)},
        step_s=0.1,
    )
    rel = np.round(np.arange(1, 31) * 0.1, 10) + np.tile([0.013, -0.017], 15)
    for r in rel:
        s.observe("a", 10.0 + r, np.array([r, 0.0]))
    assert s.pending == 0
    assert _value(m, "trajpred_ade_meters_sum", model="ipnet") == pytest.approx(0.0, abs=1e-9)
    # gru is off by exactly the elapsed time (1 m/s too fast): mean over the observed times, last one for FDE
    assert _value(m, "trajpred_ade_meters_sum", model="gru") == pytest.approx(rel.mean(), rel=1e-9)
    assert _value(m, "trajpred_fde_meters_sum", model="gru") == pytest.approx(rel[-1], rel=1e-9)
    for h in (1, 2, 3):
        j = int(np.argmin(np.abs(rel - h)))
        got = _value(m, "trajpred_displacement_error_meters_sum", model="gru", horizon_s=str(h))
        assert got == pytest.approx(rel[j], rel=1e-9)
    rep = s.report("vehicle")
    assert rep["ipnet"]["n"] == rep["baseline"]["n"] == 1
    assert rep["ade_reduction"] == pytest.approx(1.0)
    assert s.report("pedestrian")["ipnet"]["n"] == 0


def test_gaps_short_history_and_unpaired_predictions_stay_out_of_the_report():
    s, m = _scorer(min_steps=5)
    line = {"ipnet": np.stack([HORIZONS, 0 * HORIZONS], 1), "gru": np.stack([HORIZONS, 0 * HORIZONS], 1)}
    s.add("short", "vehicle", 0.0, np.zeros(2), 4, HORIZONS, line, step_s=0.1)  # too little history
    s.add("gap", "vehicle", 0.0, np.zeros(2), 9, HORIZONS, line, step_s=0.1)
    s.add("solo", "vehicle", 0.0, np.zeros(2), 9, HORIZONS, {"ipnet": line["ipnet"]}, step_s=0.1)
    assert s.pending == 2
    for k in range(1, 31):
        t = round(0.1 * k, 10)
        if not 10 <= k <= 13:  # a 0.5 s hole in the observed future
            s.observe("gap", t, np.array([t, 0.0]))
        s.observe("solo", t, np.array([t, 0.0]))
    assert _value(m, "trajpred_scored_predictions_total", outcome="incomplete") == 1
    assert _value(m, "trajpred_scored_predictions_total", outcome="matured") == 1
    assert (
        _value(m, "trajpred_ade_meters_count", model="ipnet") == 1
    )  # the unpaired one still feeds histograms
    assert s.report()["ipnet"]["n"] == 0


def test_memory_is_bounded_per_agent_in_total_and_in_time():
    clock = Clock()
    s, m = _scorer(clock, max_total=10, max_per_agent=4, purge_after_s=5.0)
    line = {"ipnet": np.stack([HORIZONS, 0 * HORIZONS], 1)}
    for k in range(6):
        s.add("one", "vehicle", 0.1 * k, np.zeros(2), 30, HORIZONS, line, step_s=0.1)
    assert s.pending == 4
    for a in range(7):
        s.add(f"agent{a}", "vehicle", 0.0, np.zeros(2), 30, HORIZONS, line, step_s=0.1)
    assert s.pending == 10
    assert _value(m, "trajpred_scored_predictions_total", outcome="dropped") == 3
    clock.now += 6.0
    s.purge()
    assert s.pending == 0 and _value(m, "trajpred_pending_predictions") == 0
    assert _value(m, "trajpred_scored_predictions_total", outcome="unobserved") == 10


def test_a_single_slot_per_agent_keeps_the_newest_prediction():
    s, m = _scorer(max_per_agent=1)
    line = {"ipnet": np.stack([HORIZONS, 0 * HORIZONS], 1)}
    for k in range(3):
        s.add("a", "vehicle", 0.1 * k, np.array([0.1 * k, 0.0]), 30, HORIZONS, line, step_s=0.1)
    assert s.pending == 1
    for k in range(3, 33):
        s.observe("a", 0.1 * k, np.array([0.1 * k, 0.0]))
    assert _value(m, "trajpred_scored_predictions_total", outcome="matured") == 1
    assert _value(m, "trajpred_scored_predictions_total", outcome="dropped") == 2


def test_stride_keeps_one_prediction_per_agent_and_stride():
    s, _ = _scorer(stride_s=1.0)
    for k in range(40):  # a prediction every 0.1 s for 4 s, for two agents
        for agent in ("a", "b"):
            s.add(
                agent, "vehicle", 10.0 + 0.1 * k, np.zeros(2), 1, HORIZONS, {"ipnet": np.zeros((50, 2))}, 0.1
            )
    # anchors kept at 10.0, 11.0, 12.0, 13.0 for each agent (float steps of 0.1 land within the slack)
    assert s.pending == 8
    s.forget("a")
    assert s.pending == 4
    s.add("a", "vehicle", 14.05, np.zeros(2), 1, HORIZONS, {"ipnet": np.zeros((50, 2))}, 0.1)
    assert s.pending == 5  # a forgotten agent starts afresh
    every, _ = _scorer(stride_s=0.0)
    for k in range(40):
        every.add("a", "vehicle", 10.0 + 0.1 * k, np.zeros(2), 1, HORIZONS, {"ipnet": np.zeros((50, 2))}, 0.1)
    assert every.pending == 40


def test_interval_regimes_label_the_scores_and_filter_the_report():
    from typing import get_args

    from service.schemas import IntervalRegime
    from service.scoring import REGIME_NAMES, interval_regime

    # the API's literal and the scorer's regimes are one list
    assert set(get_args(IntervalRegime)) == {*REGIME_NAMES, "unknown"}
    assert [interval_regime(x) for x in (0.1, 0.13, 0.2, 0.5, 0.75, 0.8, 30.0, None, 0.0)] == [
        "10hz",
        "10hz",
        "5hz",
        "2hz",
        "2hz",
        "slower",
        "slower",
        "unknown",
        "unknown",
    ]
    s, m = _scorer()
    for agent, step in (("fast", 0.1), ("slow", 0.5)):
        grid = HORIZONS
        s.add(
            agent,
            "vehicle",
            0.0,
            np.zeros(2),
            20,
            grid,
            {"ipnet": 0 * np.stack([grid, grid], 1), "gru": np.stack([grid, 0 * grid], 1)},
            step_s=step,
        )
        for k in range(1, round(3.0 / step) + 1):
            s.observe(agent, k * step, np.zeros(2))
    assert s.pending == 0
    for regime in ("10hz", "2hz"):
        rep = s.report(interval=regime)
        assert rep["ipnet"]["n"] == 1 and rep["ipnet"]["ade_m"] == pytest.approx(0.0)
        assert _value(m, "trajpred_ade_meters_count", model="gru", interval=regime) == 1
    # gru's error grows 1 m per second of horizon: its ADE is the mean observed time of each regime's points
    assert s.report(interval="10hz")["baseline"]["ade_m"] == pytest.approx(np.mean(np.arange(1, 31) * 0.1))
    assert s.report(interval="2hz")["baseline"]["ade_m"] == pytest.approx(np.mean(np.arange(1, 7) * 0.5))
    assert s.report()["ipnet"]["n"] == 2 and s.report(interval="5hz")["ipnet"]["n"] == 0


def test_observations_are_buffered_only_while_a_prediction_needs_them():
    """Scoring is deferred to the horizon: the per-agent observation buffer must stay bounded by it."""
    s, m = _scorer(stride_s=1.0)
    line = {"ipnet": np.stack([HORIZONS, 0 * HORIZONS], 1), "gru": np.stack([HORIZONS, 0 * HORIZONS], 1)}
    # an agent with nothing kept: its observations are not remembered
    for k in range(50):
        s.observe("idle", 0.1 * k, np.zeros(2))
    assert "idle" not in s._tracks
    # a streaming agent that predicts at every step (one kept per stride): the buffer never holds more
    # than the horizon plus a stride of observations, and is empty once nothing is pending
    longest = 0
    for k in range(200):
        t = 0.1 * k
        s.observe("a", t, np.array([t, 0.0]))
        s.add("a", "vehicle", t, np.array([t, 0.0]), 30, HORIZONS, line, step_s=0.1)
        longest = max(longest, len(s._tracks["a"].obs_t))
    assert longest <= 41, longest  # 3 s horizon + 1 s stride at 10 Hz
    assert (
        _value(m, "trajpred_scored_predictions_total", outcome="matured") == 17
    )  # anchors 0, 1, .., 16 s: 3 s observed
    s.forget("a")
    assert "a" not in s._tracks and s.pending == 0
    # a gap in the observed future settles the prediction as incomplete, whatever comes after
    s.add("b", "vehicle", 0.0, np.zeros(2), 30, HORIZONS, line, step_s=0.1)
    for t in (0.1, 0.2, 0.9, 1.0, 3.0, 3.1):
        s.observe("b", t, np.zeros(2))
    assert _value(m, "trajpred_scored_predictions_total", outcome="incomplete") == 1
    assert "b" not in s._tracks


def test_predictions_maturing_together_score_as_np_interp_each():
    """Many agents' predictions mature in one call (a frame) and are scored in one batch: each one's errors
    are those of ``np.interp`` on its own grid at its own observation times, curved trajectories included."""
    rng = np.random.default_rng(11)
    s, m = _scorer()
    n_agents = 40
    expected_ade: dict[str, float] = {"ipnet": 0.0, "gru": 0.0}
    expected_fde: dict[str, float] = {"ipnet": 0.0, "gru": 0.0}
    tracks = []
    for i in range(n_agents):
        anchor = 100.0 + rng.random()
        step = 0.1 * (1.0 + 0.2 * rng.random())  # per-agent rate, jittered observations below
        preds = {mdl: np.cumsum(rng.normal(0.0, 0.3, (len(HORIZONS), 2)), axis=0) for mdl in ("ipnet", "gru")}
        s.add(f"a{i}", "vehicle", anchor, np.zeros(2), 20, HORIZONS, preds, step_s=step)
        n_obs = int(np.ceil(3.0 / step)) + 1
        rel = step * np.arange(1, n_obs + 1) + rng.uniform(-0.02, 0.02, n_obs) * step
        rel = rel[rel <= 3.0 + 0.5 * rel[0]]  # up to the horizon, within half the first interval
        xy = rng.normal(0.0, 1.0, (len(rel), 2))
        times = np.concatenate([[0.0], HORIZONS])
        for mdl, pr in preds.items():
            full = np.concatenate([np.zeros((1, 2)), pr])
            e = np.hypot(
                np.interp(rel, times, full[:, 0]) - xy[:, 0], np.interp(rel, times, full[:, 1]) - xy[:, 1]
            )
            expected_ade[mdl] += float(e.mean())
            expected_fde[mdl] += float(e[-1])
        tracks.append((f"a{i}", anchor, rel, xy))
    # frames: every agent's k-th observation in one call, so the horizons are reached in the same calls
    for k in range(max(len(r) for _, _, r, _ in tracks)):
        s.observe_many(
            [(a, t0 + r[k], float(xy[k, 0]), float(xy[k, 1])) for a, t0, r, xy in tracks if k < len(r)]
        )
    assert s.pending == 0
    assert _value(m, "trajpred_scored_predictions_total", outcome="matured") == n_agents
    for mdl in ("ipnet", "gru"):
        assert _value(m, "trajpred_ade_meters_sum", model=mdl) == pytest.approx(expected_ade[mdl], rel=1e-12)
        assert _value(m, "trajpred_fde_meters_sum", model=mdl) == pytest.approx(expected_fde[mdl], rel=1e-12)
    assert s.report()["ipnet"]["n"] == n_agents


def test_predictions_kept_from_frames_score_each_on_its_own_row():
    """``add_many`` keeps a frame's predictions as rows of one shared array per model. Predictions from
    two frames (some rows not kept, some dropped before they mature) maturing in one call must each be
    scored on its own row: the errors equal ``np.interp`` of that agent's own prediction."""
    rng = np.random.default_rng(5)
    s, m = _scorer(min_steps=3, max_per_agent=1)
    agents = [f"a{i}" for i in range(12)]
    truth = {a: rng.normal(0.0, 5.0, 2) for a in agents}  # each agent stands still at its own spot
    kept: dict[str, dict[str, np.ndarray]] = {}
    for frame, t in enumerate((100.0, 100.01)):
        # frame 0: every agent with enough history; frame 1 replaces half of them (max_per_agent=1 drops
        # their frame-0 prediction, whose batch-mates stay) and leaves the first three rows out (steps < 3)
        rows = agents if frame == 0 else agents[::2]
        preds = {mdl: rng.normal(0.0, 1.0, (len(rows), len(HORIZONS), 2)) for mdl in ("ipnet", "gru")}
        steps = [3] * len(rows) if frame == 0 else [1, 1, 1] + [3] * (len(rows) - 3)
        anchors = np.stack([truth[a] for a in rows])
        s.add_many(
            rows, ["vehicle"] * len(rows), [t] * len(rows), anchors, steps, HORIZONS, preds, [0.1] * len(rows)
        )
        for r, a in enumerate(rows):
            if steps[r] >= 3:
                kept[a] = {
                    "t": np.array(t),
                    **{mdl: np.concatenate([anchors[r : r + 1], p[r]]) for mdl, p in preds.items()},
                }
    assert s.pending == len(agents)
    expected = {"ipnet": 0.0, "gru": 0.0}
    times = np.concatenate([[0.0], HORIZONS])
    seen: list[float] = []
    matured_at = set()
    for k in range(1, 32):
        t = 100.05 + 0.1 * k
        seen.append(t)
        s.observe_many([(a, t, *truth[a].tolist()) for a in agents])
        for a, p in list(kept.items()):
            rel = np.array(seen) - float(p["t"])
            if rel[-1] >= 3.0 - 0.5 * rel[0] - 1e-9:  # its horizon reached (within half the first interval)
                del kept[a]
                matured_at.add(k)
                for mdl in expected:
                    pr = p[mdl]
                    dx = np.interp(rel, times, pr[:, 0]) - truth[a][0]
                    expected[mdl] += float(np.hypot(dx, np.interp(rel, times, pr[:, 1]) - truth[a][1]).mean())
    assert not kept and matured_at == {29}  # both frames' predictions in the same call
    assert s.pending == 0
    assert (
        _value(m, "trajpred_scored_predictions_total", outcome="dropped") == 3
    )  # a6, a8, a10's frame-0 ones
    assert _value(m, "trajpred_scored_predictions_total", outcome="matured") == len(agents)
    for mdl in expected:
        assert _value(m, "trajpred_ade_meters_sum", model=mdl) == pytest.approx(expected[mdl], rel=1e-9)


def test_the_report_gives_a_median_and_p90_that_one_far_outlier_does_not_move():
    """100 agents whose GRU prediction is off by a constant offset each (ADE = offset), then one agent whose
    truth jumps 9,999 km: the mean explodes, the median and p90 stay within the histogram's 2% of the truth."""
    s, _ = _scorer()
    offsets = np.linspace(0.1, 10.0, 100)
    agents = [(f"a{i}", off) for i, off in enumerate(offsets)] + [("outlier", 9.999e6)]
    for agent, off in agents:
        s.add(
            agent,
            "vehicle",
            0.0,
            np.zeros(2),
            20,
            HORIZONS,
            {"ipnet": np.zeros((50, 2)), "gru": np.zeros((50, 2))},
            step_s=0.1,
        )
        for k in range(1, 31):
            s.observe(agent, k * 0.1, np.array([off, 0.0]))
    rep = s.report()["baseline"]
    assert rep["n"] == 101 and rep["ade_m"] > 9e4  # the mean is the outlier's
    assert rep["ade_median_m"] == pytest.approx(np.quantile(offsets, 0.5), rel=0.02)
    assert rep["ade_p90_m"] == pytest.approx(np.quantile(np.append(offsets, 9.999e6), 0.9), rel=0.03)
    assert s.report("pedestrian")["baseline"]["ade_median_m"] is None
