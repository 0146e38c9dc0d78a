"""The kinematics of the serving step: the compiled world transform equals numpy's arithmetic exactly."""

from __future__ import annotations

import numpy as np

from models.kinematics import KinState, to_world, to_world_with_prior


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
