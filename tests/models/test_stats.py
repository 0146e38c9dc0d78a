"""Intervals over scenes and seeds: what they resample, that comparisons are paired, and the evaluate output."""

from __future__ import annotations

import numpy as np
import pytest

from models.data import Track
from models.evaluate import Protocol, evaluate
from models.predictor import Predictor
from models.stats import Clustered, change_ci, mean_ci, reduction_ci, significant


def _clustered(values: np.ndarray, scenes: np.ndarray) -> Clustered:
    return Clustered.of(values, scenes, int(scenes.max()) + 1)


def test_the_scene_is_the_unit_of_resampling() -> None:
    rng = np.random.default_rng(0)
    # six scenes whose windows share a scene-level offset: 600 windows, but only six independent draws
    scenes = np.repeat(np.arange(6), 100)
    offsets = rng.normal(0.0, 1.0, 6)
    values = 5.0 + offsets[scenes] + rng.normal(0.0, 0.01, 600)
    c = _clustered(values, scenes)
    lo, hi = mean_ci(c)
    assert lo < c.mean < hi
    # a bootstrap of windows would be ~sqrt(100) times narrower; over scenes it is of the scene spread
    assert hi - lo > 0.5 * offsets.std() * 2 * 1.96 / np.sqrt(6)
    # the same windows as one scene per window: far narrower
    lo_w, hi_w = mean_ci(_clustered(values, np.arange(600)))
    assert (hi_w - lo_w) < 0.3 * (hi - lo)


def test_a_comparison_is_paired_over_scenes() -> None:
    rng = np.random.default_rng(1)
    scenes = np.repeat(np.arange(5), 50)
    base = rng.uniform(0.2, 3.0, 250)  # scenes of very different difficulty
    better = _clustered(0.8 * base, scenes)
    ref = _clustered(base, scenes)
    lo, hi = reduction_ci(better, ref)
    # every window 20% better: whatever scenes are drawn, the reduction is 20%
    assert lo == pytest.approx(0.2) and hi == pytest.approx(0.2)
    assert significant((lo, hi))
    lo, hi = change_ci(ref, better)  # ADE(ref) / ADE(better) - 1 = 25%
    assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same windows"):
        reduction_ci(better, _clustered(base[:200], scenes[:200]))


def test_seeds_widen_the_interval() -> None:
    rng = np.random.default_rng(2)
    scenes = np.repeat(np.arange(8), 30)
    one = rng.uniform(0.5, 1.5, 240)
    same_seeds = _clustered(np.stack([one, one, one]), scenes)
    spread_seeds = _clustered(np.stack([one, one * 1.3, one * 0.7]), scenes)
    assert same_seeds.mean == pytest.approx(spread_seeds.mean)
    w_same = np.diff(mean_ci(same_seeds))[0]
    w_spread = np.diff(mean_ci(spread_seeds))[0]
    assert w_spread > 1.5 * w_same
    assert not significant((-0.01, 0.02)) and significant((0.01, 0.02)) and significant((-0.02, -0.01))


def test_evaluate_reports_intervals_and_scenes() -> None:
    tracks = []
    for s in range(4):
        t = np.arange(60) * 0.1
        y = 0.3 * s * np.sin(t)  # each scene curves differently: CV errs by a different amount
        for a in range(2):
            tracks.append(Track(f"scene{s}", f"a{a}", "vehicle", t, np.stack([8 * t + a, y + 5 * a], 1)))
    res = evaluate(tracks, {"cv": Predictor.constant_velocity()}, Protocol())["models"]["cv"]
    assert res["n_scenes"] == 4 and res["n_seeds"] == 1 and res["n_windows"] > 0
    lo, hi = res["ade_ci95_m"]
    assert lo <= res["ade_m"] <= hi and lo < hi
    lo, hi = res["fde_ci95_m"]
    assert lo <= res["fde_m"] <= hi
