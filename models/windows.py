"""Evaluation windows, stream perturbations and the per-step training tensors.

Windows are defined in time: an anchor observation at ``t_a``, the observed span ``(t_a - obs_s, t_a]`` and
targets at ``t_a + j * dt_track`` up to ``pred_s``. Perturbations (rate change, drops, jitter, noise) touch
only the observed part, never the anchor time nor the future, so a perturbed window covers the same seconds
and is scored against the same truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.data import Track
from models.kinematics import N_FEATURES, KinState, observe, type_indices


@dataclass
class Window:
    """One evaluation case: observed history of one agent and its ground-truth future."""

    scene_id: str
    agent_id: str
    agent_type: str
    obs_t: np.ndarray  # (n_obs,) seconds, increasing, last = anchor
    obs_xy: np.ndarray  # (n_obs, 2)
    target_t: np.ndarray  # (n_pred,) seconds after the anchor
    target_xy: np.ndarray  # (n_pred, 2) world metres

    @property
    def path_length_m(self) -> float:
        pts = np.concatenate([self.obs_xy, self.target_xy])
        return float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum())


@dataclass(frozen=True)
class Perturbation:
    """Stream degradations applied to the observed part of a window (seeded, reproducible)."""

    resample_hz: float | None = None
    drop_rate: float = 0.0
    jitter_s: float = 0.0
    noise_m: float = 0.0
    seed: int = 0

    @property
    def is_identity(self) -> bool:
        return self.resample_hz is None and self.drop_rate == 0 and self.jitter_s == 0 and self.noise_m == 0

    def describe(self) -> dict[str, float | None]:
        return {
            "resample_hz": self.resample_hz,
            "drop_rate": self.drop_rate,
            "jitter_s": self.jitter_s,
            "noise_m": self.noise_m,
        }


def median_dt(t: np.ndarray) -> float:
    return float(np.median(np.diff(t))) if len(t) > 1 else 0.1


def make_windows(
    tracks: list[Track], obs_s: float = 2.0, pred_s: float = 3.0, stride_s: float = 1.0
) -> list[Window]:
    """Complete windows: every sample of the observed span and of the horizon is present.

    The sampling interval of each track is its median step; a window is kept only when its observed span
    holds ``round(obs_s/dt)`` samples and its future ``round(pred_s/dt)`` samples without a gap.
    """
    out: list[Window] = []
    for tr in tracks:
        if len(tr.t) < 3:
            continue
        dt = median_dt(tr.t)
        n_obs = max(2, round(obs_s / dt))
        n_pred = max(1, round(pred_s / dt))
        last_anchor_t = -np.inf
        for i in range(n_obs - 1, len(tr.t) - n_pred):
            if tr.t[i] < last_anchor_t + stride_s - 0.25 * dt:
                continue
            seg = tr.t[i - n_obs + 1 : i + n_pred + 1]
            steps = np.diff(seg)
            if np.any(steps > 1.5 * dt) or np.any(steps < 0.5 * dt):
                continue  # gap or duplicate inside the window: not a complete window
            last_anchor_t = tr.t[i]
            out.append(
                Window(
                    tr.scene_id,
                    tr.agent_id,
                    tr.agent_type,
                    tr.t[i - n_obs + 1 : i + 1].copy(),
                    tr.xy[i - n_obs + 1 : i + 1].copy(),
                    tr.t[i + 1 : i + n_pred + 1] - tr.t[i],
                    tr.xy[i + 1 : i + n_pred + 1].copy(),
                )
            )
    return out


def perturb_observed(t: np.ndarray, xy: np.ndarray, pert: Perturbation, rng: np.random.Generator):
    """Apply a perturbation to an observed history; the last (anchor) observation's time is kept.

    Returns new (t, xy) with strictly increasing times and at least two observations.
    """
    if pert.is_identity:
        return t, xy
    idx = np.arange(len(t))
    if pert.resample_hz:
        period = 1.0 / pert.resample_hz
        grid = t[-1] - period * np.arange(int((t[-1] - t[0]) / period + 1e-9) + 1)
        nearest = np.unique(np.abs(t[None, :] - grid[:, None]).argmin(axis=1))
        idx = nearest
    if pert.drop_rate > 0 and len(idx) > 2:
        keep = rng.random(len(idx)) >= pert.drop_rate
        keep[-1] = True  # the anchor is the observation the prediction is made from
        if keep.sum() < 2:
            keep[-2] = True
        idx = idx[keep]
    t2 = t[idx].astype(np.float64).copy()
    xy2 = xy[idx].astype(np.float64).copy()
    if pert.jitter_s > 0 and len(t2) > 1:
        t2[:-1] += rng.normal(0.0, pert.jitter_s, len(t2) - 1)
        order = np.argsort(t2[:-1], kind="stable")
        t2[:-1], xy2[:-1] = t2[:-1][order], xy2[:-1][order]
        # jitter must not reorder the stream past the anchor nor collapse two samples into one instant
        for k in range(len(t2) - 2, -1, -1):
            t2[k] = min(t2[k], t2[k + 1] - 1e-3)
    if pert.noise_m > 0:
        xy2 = xy2 + rng.normal(0.0, pert.noise_m, xy2.shape)
    return t2, xy2


@dataclass
class EncodedBatch:
    """Padded, encoded observation sequences ready for ``TrajectoryNet.forward_sequence``."""

    feats: np.ndarray  # (B, L, F) float32
    dt: np.ndarray  # (B, L) float32
    valid: np.ndarray  # (B, L) bool
    last_index: np.ndarray  # (B,) index of the last valid step
    kin_last: KinState  # state after each sequence's last observation
    kin_steps: list[KinState]  # state after every step (for per-step targets)


def encode_sequences(
    seqs_t: list[np.ndarray], seqs_xy: list[np.ndarray], agent_types: list[str]
) -> EncodedBatch:
    """Run the shared input encoder over variable-length sequences, batched across sequences."""
    b = len(seqs_t)
    lengths = np.array([len(s) for s in seqs_t])
    seq_len = int(lengths.max()) if b else 0
    t_pad = np.zeros((b, seq_len))
    xy_pad = np.zeros((b, seq_len, 2))
    for i, (t, xy) in enumerate(zip(seqs_t, seqs_xy, strict=True)):
        t_pad[i, : len(t)] = t
        xy_pad[i, : len(t)] = xy
    valid = np.arange(seq_len)[None, :] < lengths[:, None]
    types = type_indices(agent_types)
    kin = KinState.empty(b)
    feats = np.zeros((b, seq_len, N_FEATURES), dtype=np.float32)
    dts = np.zeros((b, seq_len), dtype=np.float32)
    kin_steps = []
    for k in range(seq_len):
        dt = t_pad[:, k] - t_pad[:, k - 1] if k > 0 else np.zeros(b)
        dt = np.where(valid[:, k], dt, 0.0)
        new_kin, f = observe(kin, xy_pad[:, k], dt, types)
        v = valid[:, k]
        feats[:, k] = f
        dts[:, k] = dt
        kin = KinState(
            np.where(v[:, None], new_kin.last_xy, kin.last_xy),
            np.where(v[:, None], new_kin.last_v, kin.last_v),
            np.where(v[:, None], new_kin.heading, kin.heading),
            np.where(v, new_kin.n, kin.n),
        )
        kin_steps.append(kin)
    kin_last = kin
    last_index = np.maximum(lengths - 1, 0)
    return EncodedBatch(feats, dts, valid, last_index, kin_last, kin_steps)


def grid_to_times(grid_offsets: np.ndarray, pred_dt_s: float, query_s: np.ndarray) -> np.ndarray:
    """Interpolate predictions on the model grid (B, H, 2) at ``query_s`` seconds (B, Q) after the anchor.

    The grid starts at ``pred_dt_s``; time 0 is the anchor itself (offset 0). Beyond the grid the last
    segment is extended linearly.
    """
    b, h, _ = grid_offsets.shape
    full = np.concatenate([np.zeros((b, 1, 2)), grid_offsets], axis=1)  # (B, H+1, 2) at 0..H*dt
    pos = np.clip(query_s / pred_dt_s, 0.0, None)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, h - 1)
    frac = (pos - lo)[..., None]
    rows = np.arange(b)[:, None]
    return full[rows, lo] + frac * (full[rows, lo + 1] - full[rows, lo])
