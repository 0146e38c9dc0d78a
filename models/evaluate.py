"""Offline evaluation per model on time-defined windows, with stream perturbations: ADE/FDE of the single
answer (the most probable mode), minADE_K / minFDE_K / miss rate / brier-minFDE over the K most probable modes,
and the coverage of the answer's 95% region.

Every mean comes with a 95% interval from a bootstrap over scenes (and training seeds): ``models.stats``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from models.data import Track
from models.kinematics import TYPE_INDEX, to_world
from models.predictor import Predictor, prior_offsets, repeat_kin
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


@dataclass
class WindowForecast:
    """One model's futures for one window, at the window's target times, most probable mode first."""

    modes: np.ndarray  # (K, n_pred, 2) world metres
    probs: np.ndarray  # (K,)
    std: np.ndarray | None  # (K, n_pred, 2) deviations along / across the heading at the anchor, metres
    heading: np.ndarray  # (2,) unit vector of the agent frame at the anchor

    @property
    def trajectory(self) -> np.ndarray:
        """(n_pred, 2) the single-trajectory answer."""
        return self.modes[0]


@torch.no_grad()
def predict_windows(
    predictor: Predictor, windows: list[Window], proto: Protocol, batch: int = 1024
) -> list[WindowForecast]:
    """Each window's futures at its target times (every mode, with probabilities and deviations)."""
    out: list[WindowForecast] = []
    rng = np.random.default_rng(proto.perturbation.seed)
    # the perturbation is drawn once per window, identically for every model
    observed = [perturb_observed(w.obs_t, w.obs_xy, proto.perturbation, rng) for w in windows]
    horizons = predictor.horizons_s
    dt_grid = predictor.cfg.pred_dt_s
    for s in range(0, len(windows), batch):
        chunk = windows[s : s + batch]
        obs = observed[s : s + batch]
        b = len(chunk)
        enc = encode_sequences([o[0] for o in obs], [o[1] for o in obs], [w.agent_type for w in chunk])
        prior = prior_offsets(enc.kin_last, horizons, predictor.cfg)  # (B, H, 2)
        model = predictor.sequence_model
        head = None
        if model is not None:
            seq = model.forward_sequence(
                torch.from_numpy(enc.feats), torch.from_numpy(enc.dt), torch.from_numpy(enc.valid)
            )
            head = seq[torch.arange(b), torch.from_numpy(enc.last_index)]
        types = np.array([TYPE_INDEX.get(w.agent_type, TYPE_INDEX["unknown"]) for w in chunk])
        fc = predictor.decode(head, b, types)
        k = fc.corr.shape[1]
        offsets = (prior[:, None] + fc.corr.astype(np.float64)).reshape(b * k, -1, 2)
        q_len = max(len(w.target_t) for w in chunk)
        query = np.zeros((b, q_len))
        for i, w in enumerate(chunk):
            # scored at the true target times relative to the (unperturbed) anchor time
            query[i, : len(w.target_t)] = w.target_t + (w.obs_t[-1] - obs[i][0][-1])
        query_k = np.repeat(query, k, axis=0)
        kin_k = repeat_kin(enc.kin_last, k)
        world = to_world(kin_k, grid_to_times(offsets, dt_grid, query_k)).reshape(b, k, q_len, 2)
        std = None
        if fc.std is not None:
            std = grid_to_times(fc.std.reshape(b * k, -1, 2), dt_grid, query_k).reshape(b, k, q_len, 2)
            # the grid's first deviation holds from the anchor on (no point is scored before it)
            std = np.maximum(std, fc.std[:, :, :1, :])
        for i, w in enumerate(chunk):
            n = len(w.target_t)
            out.append(
                WindowForecast(
                    world[i, :, :n],
                    fc.probs[i],
                    None if std is None else std[i, :, :n],
                    enc.kin_last.heading[i],
                )
            )
    return out


#: share of windows whose minFDE_K exceeds this is the miss rate (Argoverse's threshold)
MISS_THRESHOLD_M = 2.0
#: squared Mahalanobis radius of a 2-D Gaussian's 95% region (chi-square, 2 degrees of freedom)
CHI2_2D_95 = 5.991464547107979
#: metrics kept per window (each gets a mean and an interval over scenes)
WINDOW_METRICS = ("ade", "fde", "min_ade", "min_fde", "miss", "brier", "coverage")


@dataclass
class ModelScore:
    """One model's errors on an evaluation's windows (every seed), ready for intervals over scenes."""

    per_window: dict[str, Clustered]  # WINDOW_METRICS -> per-window values by seed, summed per scene
    horizons_s: dict[str, float]  # mean error at 1, 2, 3 s (every seed)
    n_seeds: int
    k: int  # modes scored by the min-of-K metrics (at most the model's own)

    @property
    def ade(self) -> Clustered:
        return self.per_window["ade"]

    @property
    def fde(self) -> Clustered:
        return self.per_window["fde"]

    def summary(self, n_windows: int, n_scenes: int, boot_seed: int = 0) -> dict[str, Any]:
        def ci(name: str) -> list[float] | None:
            return list(mean_ci(self.per_window[name], seed=boot_seed)) if n_windows else None

        cov = self.per_window["coverage"]
        return {
            "ade_m": self.ade.mean,
            "fde_m": self.fde.mean,
            "ade_ci95_m": ci("ade"),
            "fde_ci95_m": ci("fde"),
            "k": self.k,
            "min_ade_k_m": self.per_window["min_ade"].mean,
            "min_fde_k_m": self.per_window["min_fde"].mean,
            "min_fde_k_ci95_m": ci("min_fde"),
            "miss_rate_2m": self.per_window["miss"].mean,
            "brier_min_fde_m": self.per_window["brier"].mean,
            "brier_min_fde_ci95_m": ci("brier"),
            "coverage_95": None if np.isnan(cov.mean) else cov.mean,
            "coverage_95_ci95": None if np.isnan(cov.mean) else ci("coverage"),
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
        a, b = self.scores[model].per_window[metric], self.scores[against].per_window[metric]
        return 1.0 - a.mean / b.mean, reduction_ci(a, b)

    def best(self, names: Sequence[str], metric: str = "ade") -> str | None:
        """The name among ``names`` with the lowest mean ``metric`` (``WINDOW_METRICS``; None if none was
        evaluated)."""
        present = [n for n in names if n in self.scores]
        if not present or not self.windows:
            return None
        return min(present, key=lambda n: self.scores[n].per_window[metric].mean)

    def to_dict(self) -> dict[str, Any]:
        """``{"protocol": {...}, "models": {name: {ade_m, fde_m, ade_ci95_m, fde_ci95_m, n_windows, n_scenes,
        n_seeds, horizons_s}}}``."""
        return {
            "protocol": self.protocol.describe(),
            "models": {
                name: sc.summary(self.n_windows, len(self.scenes)) for name, sc in self.scores.items()
            },
        }


def window_metrics(w: Window, f: WindowForecast, k: int) -> dict[str, float]:
    """Every per-window metric of one forecast, with the K most probable modes for the min-of-K ones.

    minADE_K / minFDE_K: the lowest ADE / FDE among the K modes; miss: minFDE_K > 2 m; brier: minFDE_K +
    (1 - p)^2 with p the probability (renormalised over the K) of the mode with the lowest FDE; coverage: the
    share of true points inside the single answer's 95% region (the ellipse of its deviations along and
    across the heading), NaN when the model has no deviations.
    """
    modes = f.modes[:k]
    err = np.linalg.norm(modes - w.target_xy[None], axis=-1)  # (K, n)
    ade_k, fde_k = err.mean(axis=1), err[:, -1]
    best = int(np.argmin(fde_k))
    p = f.probs[:k] / f.probs[:k].sum()
    cover = float("nan")
    if f.std is not None:
        c, s = f.heading
        d = w.target_xy - f.modes[0]
        along, across = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
        z2 = (along / f.std[0, :, 0]) ** 2 + (across / f.std[0, :, 1]) ** 2
        cover = float(np.mean(z2 <= CHI2_2D_95))
    return {
        "ade": float(err[0].mean()),
        "fde": float(err[0, -1]),
        "min_ade": float(ade_k.min()),
        "min_fde": float(fde_k[best]),
        "miss": float(fde_k[best] > MISS_THRESHOLD_M),
        "brier": float(fde_k[best] + (1.0 - p[best]) ** 2),
        "coverage": cover,
    }


def _errors(
    windows: list[Window], forecasts: list[WindowForecast], k: int
) -> tuple[dict[str, np.ndarray], dict[float, list]]:
    per = {m: np.empty(len(windows)) for m in WINDOW_METRICS}
    at: dict[float, list[float]] = {h: [] for h in REPORT_HORIZONS_S}
    for i, (w, f) in enumerate(zip(windows, forecasts, strict=True)):
        for m, v in window_metrics(w, f, k).items():
            per[m][i] = v
        err = np.linalg.norm(f.trajectory - w.target_xy, axis=1)
        step = w.target_t[0]
        for h in REPORT_HORIZONS_S:
            j = int(np.argmin(np.abs(w.target_t - h)))
            if abs(w.target_t[j] - h) <= 0.5 * step + 1e-9:
                at[h].append(float(err[j]))
    return per, at


def score_model(
    windows: list[Window],
    seeds: Sequence[Predictor],
    proto: Protocol,
    scene_index: np.ndarray,
    n_scenes: int,
    k: int = 6,
) -> ModelScore:
    """Errors of one model (each of its seeds) on the windows; the displacement error at 1, 2, 3 s is taken
    at the nearest target time within half a step. ``k``: modes for the min-of-K metrics (capped at the
    model's own)."""
    k_used = max(1, min(k, *(p.n_modes for p in seeds)))
    runs: dict[str, list[np.ndarray]] = {m: [] for m in WINDOW_METRICS}
    at: dict[float, list[float]] = {h: [] for h in REPORT_HORIZONS_S}
    for p in seeds:
        if windows:
            per, hz = _errors(windows, predict_windows(p, windows, proto), k_used)
        else:
            per, hz = {m: np.empty(0) for m in WINDOW_METRICS}, {}
        for m in WINDOW_METRICS:
            runs[m].append(per[m])
        for h, v in hz.items():
            at[h] += v
    return ModelScore(
        {m: Clustered.of(np.stack(v), scene_index, n_scenes) for m, v in runs.items()},
        {f"{h:g}": float(np.mean(v)) for h, v in at.items() if v},
        len(seeds),
        k_used,
    )


def evaluate_models(
    tracks: list[Track],
    predictors: Mapping[str, Predictor | Sequence[Predictor]],
    proto: Protocol,
    progress: bool = False,
    k: int = 6,
) -> Evaluation:
    """Every model (a predictor, or one per training seed) on the protocol's windows (``progress``: a bar on
    stderr, one step per model; ``k``: modes for the min-of-K metrics)."""
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
            windows, [p] if isinstance(p, Predictor) else list(p), proto, scene_index, len(scenes), k
        )
    return Evaluation(proto, windows, scenes, scene_index, scores)


def evaluate(
    tracks: list[Track],
    predictors: Mapping[str, Predictor | Sequence[Predictor]],
    proto: Protocol,
    k: int = 6,
) -> dict[str, Any]:
    """``{"protocol": {...}, "models": {name: {ade_m, fde_m, ade_ci95_m, fde_ci95_m, k, min_ade_k_m,
    min_fde_k_m, miss_rate_2m, brier_min_fde_m, coverage_95, coverage_95_ci95, n_windows, n_scenes, n_seeds, horizons_s}}}``:
    means over every window (and seed), intervals by a bootstrap over scenes."""
    return evaluate_models(tracks, predictors, proto, k=k).to_dict()


def ade_reduction(
    result: dict[str, Any], model: str = "ipnet", against: tuple[str, ...] = ("gru", "lstm")
) -> float | None:
    """1 - ADE(model) / min ADE(against): the paper's headline comparison (positive = better)."""
    m = result["models"]
    base = [m[a]["ade_m"] for a in against if a in m and m[a]["ade_m"]]
    if model not in m or not base or not m[model]["ade_m"]:
        return None
    return 1.0 - m[model]["ade_m"] / min(base)
