"""Evaluation protocol: windows, perturbations and the constant-velocity reference figures of the data README."""

from __future__ import annotations

import numpy as np
import pytest

from models.data import Track, load_tracks
from models.evaluate import Protocol, ade_reduction, evaluate
from models.predictor import Predictor
from models.windows import Perturbation, grid_to_times, make_windows, perturb_observed


@pytest.fixture(scope="module")
def av2_tracks(data_root):
    return load_tracks(data_root / "av2" / "normalized" / "av2_sensor_logs_city_frame_10hz.csv")


def test_cv_matches_the_data_readme_reference_on_av2(av2_tracks) -> None:
    # ../shared/data/README.md: AV2 logs, vehicles, 2 s -> 3 s, stride 1 s: 0.54/1.41 (moving only 1.21/3.26)
    cv = {"cv": Predictor.constant_velocity()}
    allw = evaluate(av2_tracks, cv, Protocol())["models"]["cv"]
    moving = evaluate(av2_tracks, cv, Protocol(moving_only=True))["models"]["cv"]
    assert allw["ade_m"] == pytest.approx(0.54, abs=0.02)
    assert allw["fde_m"] == pytest.approx(1.41, abs=0.05)
    assert moving["ade_m"] == pytest.approx(1.21, abs=0.05)
    assert moving["fde_m"] == pytest.approx(3.26, abs=0.15)


@pytest.mark.parametrize(
    ("scene", "ade", "fde"),
    [("biwi_eth", 1.08, 2.28), ("biwi_hotel", 0.32, 0.61), ("crowds_zara01", 0.43, 0.95)],
)
def test_cv_matches_the_data_readme_reference_on_ethucy(data_root, scene, ade, fde) -> None:
    tracks = load_tracks(data_root / "ethucy" / "raw" / f"{scene}.txt")
    res = evaluate(
        tracks,
        {"cv": Predictor.constant_velocity()},
        Protocol(obs_s=3.2, pred_s=4.8, stride_s=0.4, agent_types=None),
    )["models"]["cv"]
    assert res["ade_m"] == pytest.approx(ade, abs=0.01)
    assert res["fde_m"] == pytest.approx(fde, abs=0.02)


def _line_track(n: int = 60, dt: float = 0.1, speed: float = 10.0) -> Track:
    t = np.arange(n) * dt
    return Track("s", "a", "vehicle", t, np.stack([t * speed, np.zeros(n)], 1))


def test_windows_are_complete_and_strided() -> None:
    tr = _line_track()
    wins = make_windows([tr], obs_s=2.0, pred_s=3.0, stride_s=1.0)
    assert len(wins) == 2  # anchors at 1.9 s and 2.9 s; 3.9 s would need 6.9 s of track
    for w in wins:
        assert len(w.obs_t) == 20 and len(w.target_t) == 30
        np.testing.assert_allclose(w.target_t, np.arange(1, 31) * 0.1)
    gappy = Track("s", "b", "vehicle", np.delete(tr.t, 25), np.delete(tr.xy, 25, axis=0))
    assert all(
        not (w.obs_t[0] <= 2.5 <= w.obs_t[-1] + w.target_t[-1]) for w in make_windows([gappy], 2.0, 3.0, 1.0)
    )


def test_cv_is_exact_on_straight_lines_at_any_rate() -> None:
    tr = _line_track()
    for pert in (Perturbation(), Perturbation(resample_hz=2.0), Perturbation(drop_rate=0.5, seed=3)):
        res = evaluate([tr], {"cv": Predictor.constant_velocity()}, Protocol(perturbation=pert))
        assert res["models"]["cv"]["ade_m"] == pytest.approx(0.0, abs=1e-9)


def test_perturbations_keep_the_anchor_and_order() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(20) * 0.1 + 100.0
    xy = np.stack([t, t], 1)
    for pert in (
        Perturbation(resample_hz=2.0),
        Perturbation(drop_rate=0.6),
        Perturbation(jitter_s=0.02),
        Perturbation(noise_m=0.3),
    ):
        t2, xy2 = perturb_observed(t, xy, pert, rng)
        assert t2[-1] == t[-1]
        assert np.all(np.diff(t2) > 0) and len(t2) >= 2 and len(t2) == len(xy2)
    t2, _ = perturb_observed(t, xy, Perturbation(resample_hz=2.0), rng)
    np.testing.assert_allclose(np.diff(t2), 0.5, atol=1e-9)


def test_grid_interpolation() -> None:
    grid = np.arange(1, 51, dtype=float)[None, :, None] * np.array(
        [1.0, -2.0]
    )  # offset = (k, -2k) at 0.1 k s
    q = np.array([[0.0, 0.05, 0.1, 0.4, 4.8, 5.5]])
    out = grid_to_times(grid, 0.1, q)
    np.testing.assert_allclose(out[0, :, 0], [0, 0.5, 1, 4, 48, 55])
    np.testing.assert_allclose(out[0, :, 1], [0, -1, -2, -8, -96, -110])


def test_ade_reduction() -> None:
    res = {
        "models": {
            "ipnet": {"ade_m": 0.8},
            "gru": {"ade_m": 1.0},
            "lstm": {"ade_m": 1.2},
            "cv": {"ade_m": 2.0},
        }
    }
    assert ade_reduction(res) == pytest.approx(0.2)
    assert ade_reduction(res, against=("cv",)) == pytest.approx(0.6)
