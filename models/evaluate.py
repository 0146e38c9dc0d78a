"""Offline evaluation: ADE/FDE (k=1, metres) per model on time-defined windows, with stream perturbations.

Every mean comes with a 95% interval from a bootstrap over scenes (and training seeds): ``models.stats``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from models.data import Track
from models.kinematics import to_world
from models.predictor import Predictor, prior_offsets
from models.stats import Clustered, mean_ci, reduction_ci
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
        model = predictor.sequence_model
        if model is not None:
            out = model.forward_sequence(
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


@dataclass
class ModelScore:
    """One model's errors on an evaluation's windows (every seed), ready for intervals over scenes."""

    ade: Clustered  # per-window ADE by seed, summed per scene
    fde: Clustered
    horizons_s: dict[str, float]  # mean error at 1, 2, 3 s (every seed)
    n_seeds: int

    def summary(self, n_windows: int, n_scenes: int, boot_seed: int = 0) -> dict[str, Any]:
        return {
            "ade_m": self.ade.mean,
            "fde_m": self.fde.mean,
            "ade_ci95_m": list(mean_ci(self.ade, seed=boot_seed)) if n_windows else None,
            "fde_ci95_m": list(mean_ci(self.fde, seed=boot_seed)) if n_windows else None,
            "n_windows": n_windows,
            "n_scenes": n_scenes,
            "n_seeds": self.n_seeds,
            "horizons_s": self.horizons_s,
        }


@dataclass
class Evaluation:
    """Every model scored on the same windows of one protocol."""

    protocol: Protocol
    windows: list[Window]
    scenes: list[str]  # the scene of each index of ``scene_index``
    scene_index: np.ndarray  # (W,) scene of each window
    scores: dict[str, ModelScore]

    @property
    def n_windows(self) -> int:
        return len(self.windows)

    def ade(self, name: str) -> float | None:
        return self.scores[name].ade.mean if self.windows else None

    def reduction(self, model: str, against: str, metric: str = "ade") -> tuple[float, tuple[float, float]]:
        """``1 - error(model) / error(against)`` and its 95% interval over scenes (and seeds)."""
        a, b = getattr(self.scores[model], metric), getattr(self.scores[against], metric)
        return 1.0 - a.mean / b.mean, reduction_ci(a, b)

    def best(self, names: Sequence[str]) -> str | None:
        """The name among ``names`` with the lowest mean ADE (None if none was evaluated)."""
        present = [n for n in names if n in self.scores]
        return min(present, key=lambda n: self.scores[n].ade.mean) if present and self.windows else None

    def to_dict(self) -> dict[str, Any]:
        """``{"protocol": {...}, "models": {name: {ade_m, fde_m, ade_ci95_m, fde_ci95_m, n_windows, n_scenes,
        n_seeds, horizons_s}}}``."""
        return {
            "protocol": self.protocol.describe(),
            "models": {
                name: sc.summary(self.n_windows, len(self.scenes)) for name, sc in self.scores.items()
            },
        }


def _errors(
    windows: list[Window], preds: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, dict[float, list]]:
    ade = np.empty(len(windows))
    fde = np.empty(len(windows))
    at: dict[float, list[float]] = {h: [] for h in REPORT_HORIZONS_S}
    for i, (w, p) in enumerate(zip(windows, preds, strict=True)):
        err = np.linalg.norm(p - w.target_xy, axis=1)
        ade[i] = err.mean()
        fde[i] = err[-1]
        step = w.target_t[0]
        for h in REPORT_HORIZONS_S:
            j = int(np.argmin(np.abs(w.target_t - h)))
            if abs(w.target_t[j] - h) <= 0.5 * step + 1e-9:
                at[h].append(float(err[j]))
    return ade, fde, at


def score_model(
    windows: list[Window], seeds: Sequence[Predictor], proto: Protocol, scene_index: np.ndarray, n_scenes: int
) -> ModelScore:
    """Errors of one model (each of its seeds) on the windows; the displacement error at 1, 2, 3 s is taken
    at the nearest target time within half a step."""
    ades, fdes = [], []
    at: dict[float, list[float]] = {h: [] for h in REPORT_HORIZONS_S}
    for p in seeds:
        ade, fde, hz = (
            _errors(windows, predict_windows(p, windows, proto))
            if windows
            else (np.empty(0), np.empty(0), {})
        )
        ades.append(ade)
        fdes.append(fde)
        for h, v in hz.items():
            at[h] += v
    return ModelScore(
        Clustered.of(np.stack(ades), scene_index, n_scenes),
        Clustered.of(np.stack(fdes), scene_index, n_scenes),
        {f"{h:g}": float(np.mean(v)) for h, v in at.items() if v},
        len(seeds),
    )


def evaluate_models(
    tracks: list[Track],
    predictors: Mapping[str, Predictor | Sequence[Predictor]],
    proto: Protocol,
    progress: bool = False,
) -> Evaluation:
    """Every model (a predictor, or one per training seed) on the protocol's windows (``progress``: a bar on
    stderr, one step per model)."""
    from tqdm import tqdm

    windows = select_windows(tracks, proto)
    scenes = sorted({w.scene_id for w in windows})
    lookup = {s: i for i, s in enumerate(scenes)}
    scene_index = np.array([lookup[w.scene_id] for w in windows], dtype=np.int64)
    scores = {}
    bar = tqdm(
        predictors.items(), desc=f"{len(windows)} windows", unit="model", disable=not progress, leave=False
    )
    for name, p in bar:
        bar.set_postfix_str(name)
        scores[name] = score_model(
            windows, [p] if isinstance(p, Predictor) else list(p), proto, scene_index, len(scenes)
        )
    return Evaluation(proto, windows, scenes, scene_index, scores)


def evaluate(
    tracks: list[Track], predictors: Mapping[str, Predictor | Sequence[Predictor]], proto: Protocol
) -> dict[str, Any]:
    """``{"protocol": {...}, "models": {name: {ade_m, fde_m, ade_ci95_m, fde_ci95_m, n_windows, n_scenes,
    n_seeds, horizons_s}}}``: means over every window (and seed), intervals by a bootstrap over scenes."""
    return evaluate_models(tracks, predictors, proto).to_dict()


def ade_reduction(
    result: dict[str, Any], model: str = "ipnet", against: tuple[str, ...] = ("gru", "lstm")
) -> float | None:
    """1 - ADE(model) / min ADE(against): the paper's headline comparison (positive = better)."""
    m = result["models"]
    base = [m[a]["ade_m"] for a in against if a in m and m[a]["ade_m"]]
    if model not in m or not base or not m[model]["ade_m"]:
        return None
    return 1.0 - m[model]["ade_m"] / min(base)
