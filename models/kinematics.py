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

from models.agent_types import AGENT_TYPES

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

    Two compiled passes over the agents around numpy's ``arctan2`` and ``log``: numpy's vectorised
    versions differ from the C library's in the last bit for some inputs, and training encoded its windows
    with numpy's. Everything else is plain IEEE arithmetic in the same order as numpy's expressions, so the
    features are the same bits (``tests/models/test_kinematics.py`` checks it against the numpy version).
    """
    xy = np.ascontiguousarray(xy, dtype=np.float64)
    dt = np.ascontiguousarray(np.broadcast_to(np.asarray(dt, dtype=np.float64), (xy.shape[0],)))
    n = np.ascontiguousarray(kin.n, dtype=np.int64)
    v, heading, speed, prev_speed, v_par, v_perp, dt_safe = _motion(
        np.ascontiguousarray(kin.last_xy, dtype=np.float64),
        np.ascontiguousarray(kin.last_v, dtype=np.float64),
        np.ascontiguousarray(kin.heading, dtype=np.float64),
        n,
        xy,
        dt,
    )
    feats = _features(
        n,
        speed,
        prev_speed,
        v_perp,
        dt_safe,
        np.arctan2(v_perp, v_par),
        np.log(dt_safe / 0.1),
        np.ascontiguousarray(agent_type, dtype=np.int64),
    )
    return KinState(xy.copy(), v, heading, n + 1), feats


@njit(cache=True, nogil=True)
def _motion(
    last_xy: np.ndarray, last_v: np.ndarray, h: np.ndarray, n: np.ndarray, xy: np.ndarray, dt: np.ndarray
) -> tuple[np.ndarray, ...]:  # pragma: no cover (compiled)
    """Velocity, heading and the speeds of each agent's new observation (see :func:`observe`)."""
    b = xy.shape[0]
    v = np.empty((b, 2))
    heading = np.empty((b, 2))
    speed, prev_speed = np.empty(b), np.empty(b)
    v_par, v_perp, dt_safe = np.empty(b), np.empty(b), np.empty(b)
    for i in range(b):
        first = n[i] == 0
        d = dt[i]
        ds = 0.1 if first else (d if (d >= 1e-3 or d != d) else 1e-3)  # np.maximum(dt, 1e-3)
        vx = 0.0 if first else (xy[i, 0] - last_xy[i, 0]) / ds
        vy = 0.0 if first else (xy[i, 1] - last_xy[i, 1]) / ds
        sp = np.sqrt(vx * vx + vy * vy)  # np.linalg.norm over two components
        h0, h1 = h[i, 0], h[i, 1]
        v[i, 0], v[i, 1] = vx, vy
        speed[i] = sp
        prev_speed[i] = np.sqrt(last_v[i, 0] * last_v[i, 0] + last_v[i, 1] * last_v[i, 1])
        v_par[i] = vx * h0 + vy * h1
        v_perp[i] = -vx * h1 + vy * h0
        dt_safe[i] = ds
        if sp > HEADING_MIN_SPEED_MPS:
            norm = sp if (sp >= 1e-9 or sp != sp) else 1e-9
            heading[i, 0], heading[i, 1] = vx / norm, vy / norm
        else:
            heading[i, 0], heading[i, 1] = h0, h1
    return v, heading, speed, prev_speed, v_par, v_perp, dt_safe


@njit(cache=True, nogil=True, inline="always")
def _clip(x: float, lo: float, hi: float) -> float:  # pragma: no cover (compiled)
    return lo if x < lo else (hi if x > hi else x)  # np.clip, NaN passing through


@njit(cache=True, nogil=True)
def _features(
    n: np.ndarray,
    speed: np.ndarray,
    prev_speed: np.ndarray,
    v_perp: np.ndarray,
    dt_safe: np.ndarray,
    angle: np.ndarray,
    log_dt: np.ndarray,
    agent_type: np.ndarray,
) -> np.ndarray:  # pragma: no cover (compiled)
    """The (B, N_FEATURES) float32 features (see :func:`observe`)."""
    b = speed.shape[0]
    feats = np.zeros((b, N_FEATURES), dtype=np.float32)
    for i in range(b):
        first = n[i] == 0
        has_prev_v = n[i] >= 2
        sp, psp, ds = speed[i], prev_speed[i], dt_safe[i]
        moving = sp > HEADING_MIN_SPEED_MPS
        dtheta = angle[i] if (moving and has_prev_v) else 0.0
        low = sp if (sp <= psp or sp != sp) else psp  # np.minimum
        conf = _clip(low / 2.0, 0.0, 1.0)
        turn_rate = ((dtheta + np.pi) % (2 * np.pi) - np.pi) / ds * conf
        accel = (sp - psp) / ds if has_prev_v else 0.0
        feats[i, 0] = np.float32(_clip(sp / 10.0, -5.0, 5.0))
        feats[i, 1] = np.float32(_clip((v_perp[i] if has_prev_v else 0.0) / 10.0, -5.0, 5.0))
        feats[i, 2] = np.float32(_clip(accel / 10.0, -2.0, 2.0))
        feats[i, 3] = np.float32(_clip(turn_rate / 2.0, -2.0, 2.0))
        feats[i, 4] = np.float32(0.0 if first else _clip(log_dt[i] / 2.0, -2.0, 2.0))
        feats[i, 5] = np.float32(1.0 if first else 0.0)
        feats[i, 6] = np.float32(1.0 if has_prev_v else 0.0)
        feats[i, 7 + agent_type[i]] = np.float32(1.0)
    return feats


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


@njit(cache=True, nogil=True)
def _world_std(
    heading: np.ndarray, std_agent: np.ndarray, n_h: int
) -> np.ndarray:  # pragma: no cover (compiled)
    b, k = std_agent.shape[0], std_agent.shape[1]
    out = np.empty((b, k, n_h, 2))
    for i in range(b):
        c2, s2 = heading[i, 0] * heading[i, 0], heading[i, 1] * heading[i, 1]
        for j in range(k):
            for q in range(n_h):
                va = std_agent[i, j, q, 0] * std_agent[i, j, q, 0]
                vc = std_agent[i, j, q, 1] * std_agent[i, j, q, 1]
                out[i, j, q, 0] = np.sqrt(c2 * va + s2 * vc)
                out[i, j, q, 1] = np.sqrt(s2 * va + c2 * vc)
    return out


def world_std(kin: KinState, std_agent: np.ndarray, horizons: int | None = None) -> np.ndarray:
    """Agent-frame deviations (B, K, H, 2) along / across the heading -> world-axis marginals (x, y):
    ``sqrt(c^2 va + s^2 vc)`` and ``sqrt(s^2 va + c^2 vc)`` for the variances ``va``, ``vc`` and the heading's
    cosine and sine; of the first ``horizons`` only (B, K, horizons, 2) when given (the served ones).

    One compiled pass, the same operations in the same order as the numpy expressions (``tests/models``
    checks bit equality): with six futures the numpy form's temporaries (half a megabyte each at 100 agents,
    fresh pages every call) made it a quarter of the serving step.
    """
    n_h = std_agent.shape[2] if horizons is None else min(max(horizons, 0), std_agent.shape[2])
    return _world_std(
        np.ascontiguousarray(kin.heading, dtype=np.float64),
        np.ascontiguousarray(std_agent, dtype=np.float64),
        n_h,
    )


def to_agent(kin: KinState, world_xy: np.ndarray) -> np.ndarray:
    """World positions (B, H, 2) -> agent-frame offsets (B, H, 2)."""
    rot = rotation(kin.heading)
    return np.einsum("bji,bhj->bhi", rot, world_xy - kin.last_xy[:, None, :])


def type_indices(types: list[str] | tuple[str, ...]) -> np.ndarray:
    """Agent type names -> int indices (unknown names map to 'unknown')."""
    return np.array([TYPE_INDEX.get(t, TYPE_INDEX["unknown"]) for t in types], dtype=np.int64)
