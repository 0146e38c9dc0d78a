"""The non-learned baselines: constant acceleration and constant turn rate are exact where their model holds,
stop rather than reverse, and stream as they evaluate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.data import Track
from models.evaluate import Protocol, evaluate, predict_windows
from models.kinematics import KinState
from models.motion import SMOOTHING_S, MotionConfig, MotionModel
from models.predictor import Predictor
from models.windows import Window


def _track(xy: np.ndarray, dt: float = 0.1) -> Track:
    return Track("s", "a", "vehicle", np.arange(len(xy)) * dt, xy)


def _ade(track: Track, **models: Predictor) -> dict[str, float]:
    res = evaluate([track], models, Protocol(stride_s=1.0))
    return {k: v["ade_m"] for k, v in res["models"].items()}


def test_constant_acceleration_follows_an_accelerating_car_and_cv_does_not() -> None:
    t = np.arange(80) * 0.1
    x = 5.0 * t + 0.5 * 2.0 * t**2  # 2 m/s^2 from 5 m/s
    tr = _track(np.stack([x, 0.5 * x], 1))
    ade = _ade(
        tr,
        ca=Predictor.motion(MotionConfig(kind="ca", smoothing_s=0.0)),
        cv=Predictor.constant_velocity(),
    )
    # CA lags by half a step of acceleration (a finite difference is the velocity at the interval's middle)
    assert ade["ca"] < 0.1 * ade["cv"]
    assert ade["ca"] < 0.2


def test_constant_turn_rate_follows_a_circle() -> None:
    t = np.arange(80) * 0.1
    r, w = 30.0, 0.3  # 9 m/s on a 30 m circle
    tr = _track(np.stack([r * np.sin(w * t), r * (1 - np.cos(w * t))], 1))
    ade = _ade(
        tr,
        ctrv=Predictor.motion(MotionConfig(kind="ctrv", smoothing_s=0.0)),
        cv=Predictor.constant_velocity(),
    )
    assert ade["ctrv"] < 0.1 * ade["cv"]


def test_a_braking_car_stops_instead_of_reversing() -> None:
    model = MotionModel(MotionConfig(kind="ca"))
    f64 = torch.float64
    corr = model.correction(
        torch.tensor([4.0], dtype=f64), torch.tensor([-4.0], dtype=f64), torch.zeros(1, dtype=f64)
    )
    along = corr[0, :, 0].numpy() + 4.0 * np.asarray(model.cfg.horizons_s)  # the path along the heading
    assert np.all(np.diff(along) >= -1e-9)  # never backwards
    assert along[-1] == pytest.approx(2.0, abs=0.02)  # 4 m/s braking at 4 m/s^2 stops after 2 m


@pytest.mark.parametrize("kind", ["ca", "ctrv"])
def test_streaming_equals_the_evaluation(kind: str) -> None:
    t = np.arange(40) * 0.1
    xy = np.stack([10 * t + 0.4 * t**2, 3 * np.sin(0.5 * t)], 1)
    pred = Predictor.motion(MotionConfig.of(kind))
    assert pred.memory_size == 2 and SMOOTHING_S[kind] > 0
    kin, mem = KinState.empty(1), pred.initial_memory(1)
    for k in range(len(t)):
        res = pred.step(kin, mem, xy[k : k + 1], np.array([0.1 if k else 0.0]), np.array([0]))
        kin, mem = res.kin, res.memory
    w = Window("s", "a", "vehicle", t, xy, np.array([1.0, 2.0]), np.zeros((2, 2)))
    offline = predict_windows(pred, [w], Protocol())[0].trajectory
    streamed = res.trajectory[0, [9, 19]]
    np.testing.assert_allclose(offline, streamed, atol=1e-4)
