"""Input encoding shared by every model: a stateless differentiator over the last two observations.

An observation is a position and the real time elapsed since the agent's previous one. The encoder turns it
into rotation- and translation-invariant features (speed, lateral speed, acceleration, turn rate, interval,
agent type), so that a model learns motion, not city coordinates. All learned models (IPNet, GRU, LSTM)
receive exactly these features: the comparison isolates the memory mechanism.

The kinematic state kept per agent is plain data: last position, last velocity, heading unit vector and the
step count. It is not learned memory: it is the finite-difference buffer any model needs to turn positions
into velocities. Predictions are made in the agent frame (origin at the newest position, x along the
heading) and rotated back to the world frame.

Everything here is numpy float64: world coordinates reach 1e5 m and float32 would lose centimetres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from models.data import AGENT_TYPES

HEADING_MIN_SPEED_MPS = 0.5  # below this the displacement direction is noise: keep the previous heading
FEATURE_NAMES = (
    "speed_10mps",
    "lateral_speed_10mps",
    "accel_10mps2",
    "turn_rate_2radps",
    "log_dt_rel_100ms",
    "is_first",
    "has_prev_velocity",
    *(f"type_{t}" for t in AGENT_TYPES),
)
N_FEATURES = len(FEATURE_NAMES)
TYPE_INDEX = {t: i for i, t in enumerate(AGENT_TYPES)}


@dataclass
class KinState:
    """Per-agent finite-difference buffer for a batch of B agents (all float64 except ``n``)."""

    last_xy: np.ndarray  # (B, 2) world metres
    last_v: np.ndarray  # (B, 2) world m/s (0 until the second observation)
    heading: np.ndarray  # (B, 2) unit vector of the agent frame's x axis
    n: np.ndarray  # (B,) int64 observations seen in the current track

    @staticmethod
    def empty(b: int) -> KinState:
        heading = np.zeros((b, 2))
        heading[:, 0] = 1.0
        return KinState(np.zeros((b, 2)), np.zeros((b, 2)), heading, np.zeros(b, dtype=np.int64))

    def copy(self) -> KinState:
        return KinState(self.last_xy.copy(), self.last_v.copy(), self.heading.copy(), self.n.copy())

    def to_array(self) -> np.ndarray:
        """(B, 7) float64: last_xy, last_v, heading, n — the serialised form."""
        return np.concatenate(
            [self.last_xy, self.last_v, self.heading, self.n[:, None].astype(np.float64)], 1
        )

    @staticmethod
    def from_array(a: np.ndarray) -> KinState:
        a = np.asarray(a, dtype=np.float64).reshape(-1, 7)
        return KinState(a[:, 0:2].copy(), a[:, 2:4].copy(), a[:, 4:6].copy(), a[:, 6].astype(np.int64))


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


def observe(
    kin: KinState, xy: np.ndarray, dt: np.ndarray, agent_type: np.ndarray
) -> tuple[KinState, np.ndarray]:
    """Advance the buffer by one observation per agent.

    Args:
        kin: state before the observation (B agents).
        xy: (B, 2) observed world positions.
        dt: (B,) seconds since each agent's previous observation (ignored when ``kin.n == 0``).
        agent_type: (B,) int indices into ``AGENT_TYPES``.

    Returns:
        The new state and (B, N_FEATURES) float32 features.
    """
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
    turn_rate = _wrap(dtheta) / dt_safe * conf
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


def rotation(heading: np.ndarray) -> np.ndarray:
    """(B, 2, 2) matrices whose columns are the agent frame axes in world coordinates."""
    c, s = heading[:, 0], heading[:, 1]
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def cv_offsets(kin: KinState, horizons_s: np.ndarray) -> np.ndarray:
    """Constant-velocity future offsets in the agent frame: (B, H, 2)."""
    rot = rotation(kin.heading)
    v_agent = np.einsum("bji,bj->bi", rot, kin.last_v)  # R^T v
    return v_agent[:, None, :] * np.asarray(horizons_s, dtype=np.float64)[None, :, None]


def to_world(kin: KinState, offsets_agent: np.ndarray) -> np.ndarray:
    """Agent-frame offsets (B, H, 2) -> world positions (B, H, 2)."""
    # the rotation written out: einsum on these small shapes cost more than the model step (serving hot path)
    c, s = kin.heading[:, 0:1], kin.heading[:, 1:2]  # (B, 1)
    ox, oy = offsets_agent[..., 0], offsets_agent[..., 1]  # (B, H)
    out = np.empty(offsets_agent.shape, dtype=np.float64)
    out[..., 0] = kin.last_xy[:, 0:1] + c * ox - s * oy
    out[..., 1] = kin.last_xy[:, 1:2] + s * ox + c * oy
    return out


@njit(cache=True, nogil=True)
def _world_with_prior(
    last_xy: np.ndarray, heading: np.ndarray, last_v: np.ndarray, corr: np.ndarray, horizons_s: np.ndarray
) -> np.ndarray:  # pragma: no cover (compiled)
    b, n_h = corr.shape[0], corr.shape[1]
    out = np.empty((b, n_h, 2))
    for i in range(b):
        x0, y0 = last_xy[i, 0], last_xy[i, 1]
        c, s = heading[i, 0], heading[i, 1]
        vx, vy = last_v[i, 0], last_v[i, 1]
        for k in range(n_h):
            ox, oy = np.float64(corr[i, k, 0]), np.float64(corr[i, k, 1])
            h = horizons_s[k]
            out[i, k, 0] = ((x0 + c * ox) - s * oy) + vx * h
            out[i, k, 1] = ((y0 + s * ox) + c * oy) + vy * h
    return out


def to_world_with_prior(kin: KinState, corr: np.ndarray, horizons_s: np.ndarray) -> np.ndarray:
    """``to_world(kin, corr) + last_v * h``: the serving step's world trajectory from the network's
    agent-frame correction ``corr`` (B, H, 2) to constant velocity, in one compiled pass.

    The same operations in the same order as the numpy expressions (no fused multiply-adds: numba
    leaves them off without fastmath), so the same floats, bit for bit (``tests/models`` checks it); about
    ten times faster at 1,000 agents, where numpy's broadcasts over the last axis of 2 ran as 30,000
    two-element loops.
    """
    return _world_with_prior(
        np.ascontiguousarray(kin.last_xy, dtype=np.float64),
        np.ascontiguousarray(kin.heading, dtype=np.float64),
        np.ascontiguousarray(kin.last_v, dtype=np.float64),
        np.ascontiguousarray(corr),
        np.ascontiguousarray(horizons_s, dtype=np.float64),
    )


def to_agent(kin: KinState, world_xy: np.ndarray) -> np.ndarray:
    """World positions (B, H, 2) -> agent-frame offsets (B, H, 2)."""
    rot = rotation(kin.heading)
    return np.einsum("bji,bhj->bhi", rot, world_xy - kin.last_xy[:, None, :])


def type_indices(types: list[str] | tuple[str, ...]) -> np.ndarray:
    """Agent type names -> int indices (unknown names map to 'unknown')."""
    return np.array([TYPE_INDEX.get(t, TYPE_INDEX["unknown"]) for t in types], dtype=np.int64)
