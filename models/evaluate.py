"""Offline evaluation: ADE/FDE (k=1, metres) per model on time-defined windows, with stream perturbations."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from models.data import Track
from models.kinematics import to_world
from models.predictor import Predictor, prior_offsets
from models.windows import (
    Perturbation,
    Window,
    encode_sequences,
    grid_to_times,
    make_windows,
    perturb_observed,
)

REPORT_HORIZONS_S = (1.0, 2.0, 3.0)


@dataclass
class Protocol:
    """What is evaluated: window geometry, agent filter and stream perturbation."""

    obs_s: float = 2.0
    pred_s: float = 3.0
    stride_s: float = 1.0
    agent_types: tuple[str, ...] | None = ("vehicle",)
    moving_only: bool = False
    min_path_m: float = 2.0
    perturbation: Perturbation = field(default_factory=Perturbation)

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["agent_types"] = list(self.agent_types) if self.agent_types else None
        d["perturbation"] = self.perturbation.describe()
        return d


def select_windows(tracks: list[Track], proto: Protocol) -> list[Window]:
    if proto.agent_types:
        tracks = [t for t in tracks if t.agent_type in proto.agent_types]
    wins = make_windows(tracks, proto.obs_s, proto.pred_s, proto.stride_s)
    if proto.moving_only:
        wins = [w for w in wins if w.path_length_m > proto.min_path_m]
    return wins


@torch.no_grad()
def predict_windows(predictor: Predictor, windows: list[Window], proto: Protocol, batch: int = 1024):
    """World-frame predictions at each window's target times: list of (n_pred, 2) arrays."""
    preds: list[np.ndarray] = []
    rng = np.random.default_rng(proto.perturbation.seed)
    # the perturbation is drawn once per window, identically for every model
    observed = [perturb_observed(w.obs_t, w.obs_xy, proto.perturbation, rng) for w in windows]
    horizons = predictor.horizons_s
    for s in range(0, len(windows), batch):
        chunk = windows[s : s + batch]
        obs = observed[s : s + batch]
        enc = encode_sequences([o[0] for o in obs], [o[1] for o in obs], [w.agent_type for w in chunk])
        offsets = prior_offsets(enc.kin_last, horizons, predictor.cfg)
        if predictor.net is not None:
            out = predictor.net.forward_sequence(
                torch.from_numpy(enc.feats), torch.from_numpy(enc.dt), torch.from_numpy(enc.valid)
            )
            corr = out[torch.arange(len(chunk)), torch.from_numpy(enc.last_index)].numpy()
            offsets = offsets + corr.astype(np.float64)
        q_len = max(len(w.target_t) for w in chunk)
        query = np.zeros((len(chunk), q_len))
        for i, w in enumerate(chunk):
            # scored at the true target times relative to the (unperturbed) anchor time
            query[i, : len(w.target_t)] = w.target_t + (w.obs_t[-1] - obs[i][0][-1])
        world = to_world(enc.kin_last, grid_to_times(offsets, predictor.cfg.pred_dt_s, query))
        preds.extend(world[i, : len(w.target_t)] for i, w in enumerate(chunk))
    return preds


def score(windows: list[Window], preds: list[np.ndarray]) -> dict[str, Any]:
    """ADE/FDE and the displacement error at 1, 2, 3 s (nearest target time within half a step)."""
    if not windows:
        return {"ade_m": None, "fde_m": None, "n_windows": 0, "horizons_s": {}}
    ade, fde = [], []
    at: dict[float, list[float]] = {h: [] for h in REPORT_HORIZONS_S}
    for w, p in zip(windows, preds, strict=True):
        err = np.linalg.norm(p - w.target_xy, axis=1)
        ade.append(err.mean())
        fde.append(err[-1])
        step = w.target_t[0]
        for h in REPORT_HORIZONS_S:
            j = int(np.argmin(np.abs(w.target_t - h)))
            if abs(w.target_t[j] - h) <= 0.5 * step + 1e-9:
                at[h].append(float(err[j]))
    return {
        "ade_m": float(np.mean(ade)),
        "fde_m": float(np.mean(fde)),
        "n_windows": len(windows),
        "horizons_s": {f"{h:g}": float(np.mean(v)) for h, v in at.items() if v},
    }


def evaluate(tracks: list[Track], predictors: dict[str, Predictor], proto: Protocol) -> dict[str, Any]:
    """``{"protocol": {...}, "models": {name: {ade_m, fde_m, n_windows, horizons_s}}}``."""
    windows = select_windows(tracks, proto)
    models = {name: score(windows, predict_windows(p, windows, proto)) for name, p in predictors.items()}
    return {"protocol": proto.describe(), "models": models}


def ade_reduction(
    result: dict[str, Any], model: str = "ipnet", against: tuple[str, ...] = ("gru", "lstm")
) -> float | None:
    """1 - ADE(model) / min ADE(against): the paper's headline comparison (positive = better)."""
    m = result["models"]
    base = [m[a]["ade_m"] for a in against if a in m and m[a]["ade_m"]]
    if model not in m or not base or not m[model]["ade_m"]:
        return None
    return 1.0 - m[model]["ade_m"] / min(base)
