"""The kinematics of the serving step: the compiled world transform equals numpy's arithmetic exactly."""

from __future__ import annotations

import numpy as np

from models.kinematics import (
    HEADING_MIN_SPEED_MPS,
    N_FEATURES,
    KinState,
    observe,
    to_world,
    to_world_with_prior,
    world_std,
)


def _observe_numpy(
    kin: KinState, xy: np.ndarray, dt: np.ndarray, agent_type: np.ndarray
) -> tuple[KinState, np.ndarray]:
    """``observe`` as numpy expressions (the version the shipped models were trained with): the reference."""
    xy = np.asarray(xy, dtype=np.float64)
    b = xy.shape[0]
    first = kin.n == 0
    dt_safe = np.where(first, 0.1, np.maximum(np.asarray(dt, dtype=np.float64), 1e-3))
    v = np.where(first[:, None], 0.0, (xy - kin.last_xy) / dt_safe[:, None])
    speed = np.linalg.norm(v, axis=1)
    has_prev_v = kin.n >= 2
    prev_speed = np.linalg.norm(kin.last_v, axis=1)

    h = kin.heading
    # components of the new velocity in the previous heading frame
    v_par = v[:, 0] * h[:, 0] + v[:, 1] * h[:, 1]
    v_perp = -v[:, 0] * h[:, 1] + v[:, 1] * h[:, 0]
    moving = speed > HEADING_MIN_SPEED_MPS
    new_heading = np.where(moving[:, None], v / np.maximum(speed, 1e-9)[:, None], h)
    dtheta = np.where(moving & has_prev_v, np.arctan2(v_perp, v_par), 0.0)
    # a turn seen at walking pace is mostly noise: weight it by how clearly both steps were moving
    conf = np.clip(np.minimum(speed, prev_speed) / 2.0, 0.0, 1.0)
    turn_rate = ((dtheta + np.pi) % (2 * np.pi) - np.pi) / dt_safe * conf
    accel = np.where(has_prev_v, (speed - prev_speed) / dt_safe, 0.0)

    feats = np.zeros((b, N_FEATURES), dtype=np.float64)
    feats[:, 0] = speed / 10.0
    feats[:, 1] = np.where(has_prev_v, v_perp, 0.0) / 10.0
    feats[:, 2] = np.clip(accel / 10.0, -2.0, 2.0)
    feats[:, 3] = np.clip(turn_rate / 2.0, -2.0, 2.0)
    feats[:, 4] = np.where(first, 0.0, np.clip(np.log(dt_safe / 0.1) / 2.0, -2.0, 2.0))
    feats[:, 5] = first
    feats[:, 6] = has_prev_v
    feats[np.arange(b), 7 + np.asarray(agent_type, dtype=np.int64)] = 1.0
    feats[:, 0:2] = np.clip(feats[:, 0:2], -5.0, 5.0)

    new = KinState(xy.copy(), v, new_heading, kin.n + 1)
    return new, feats.astype(np.float32)


def test_compiled_observe_is_the_numpy_version_bit_for_bit():
    """Features and state of the compiled ``observe`` equal the numpy expressions' exactly: first sightings,
    slow and fast agents, turns across +-pi, tiny and long intervals, every agent type."""
    rng = np.random.default_rng(9)
    for b in (1, 5, 1000, 20000):
        ang = rng.uniform(-np.pi, np.pi, b)
        n = rng.integers(0, 4, b)
        kin = KinState(
            rng.normal(0.0, 3e4, (b, 2)),
            rng.normal(0.0, 8.0, (b, 2)) * (n >= 1)[:, None],
            np.stack([np.cos(ang), np.sin(ang)], 1),
            n,
        )
        dt = rng.choice([1e-4, 1e-3, 0.05, 0.1, 0.1, 0.2, 0.5, 3.0], b) * rng.uniform(0.9, 1.1, b)
        step = rng.normal(0.0, 1.0, (b, 2)) * rng.choice([0.0, 0.01, 0.1, 1.0, 5.0], b)[:, None]
        step[: b // 10] = -kin.last_v[: b // 10] * dt[: b // 10, None]  # reversals: turns of about pi
        xy = kin.last_xy + step
        types = rng.integers(0, N_FEATURES - 7, b)
        k1, f1 = observe(kin, xy, dt, types)
        k0, f0 = _observe_numpy(kin, xy, dt, types)
        assert f1.dtype == np.float32 and f1.flags.c_contiguous
        np.testing.assert_array_equal(f1, f0)
        for a, e in zip(
            (k1.last_xy, k1.last_v, k1.heading, k1.n), (k0.last_xy, k0.last_v, k0.heading, k0.n), strict=True
        ):
            np.testing.assert_array_equal(a, e)


def test_compiled_world_transform_is_numpys_bit_for_bit():
    """The serving step's compiled rotation + constant-velocity prior equals the numpy expressions exactly."""
    rng = np.random.default_rng(5)
    for b, h in ((1, 1), (7, 30), (1000, 50)):
        ang = rng.uniform(-np.pi, np.pi, b)
        kin = KinState(
            rng.normal(0.0, 3e4, (b, 2)),
            rng.normal(0.0, 10.0, (b, 2)),
            np.stack([np.cos(ang), np.sin(ang)], 1),
            np.full(b, 3),
        )
        corr = rng.normal(0.0, 2.0, (b, h, 2)).astype(np.float32)
        horizons = np.round(np.arange(1, h + 1) * 0.1, 10)
        expected = to_world(kin, corr.astype(np.float64)) + kin.last_v[:, None, :] * horizons[None, :, None]
        np.testing.assert_array_equal(to_world_with_prior(kin, corr, horizons), expected)


def test_world_std_is_the_numpy_expressions_bit_for_bit():
    rng = np.random.default_rng(3)
    for b, k in ((1, 1), (100, 6), (7, 3)):
        ang = rng.uniform(-np.pi, np.pi, b)
        heading = np.stack([np.cos(ang), np.sin(ang)], 1)
        kin = KinState(np.zeros((b, 2)), np.zeros((b, 2)), heading, np.full(b, 3))
        std = np.exp(rng.normal(0.0, 1.0, (b, k, 50, 2)))
        c2, s2 = (heading[:, 0] ** 2)[:, None, None], (heading[:, 1] ** 2)[:, None, None]
        va, vc = std[..., 0] ** 2, std[..., 1] ** 2
        expected = np.sqrt(np.stack([c2 * va + s2 * vc, s2 * va + c2 * vc], axis=-1))
        np.testing.assert_array_equal(world_std(kin, std), expected)
        # the served horizons only: the same values, the later horizons not computed
        np.testing.assert_array_equal(world_std(kin, std, 30), expected[:, :, :30])
        # along the heading, the world x deviation is the along-track one
        if b == 1:
            flat = KinState(kin.last_xy, kin.last_v, np.array([[1.0, 0.0]]), kin.n)
            np.testing.assert_array_equal(world_std(flat, std), std)
