"""Calibrated uncertainty: the deviations every served future carries, fitted on the validation split.

A predicted point comes with standard deviations along and across the agent's heading; its 95% region is the
ellipse ``(along / s_a)^2 + (across / s_c)^2 <= 5.991`` (chi-square, 2 degrees of freedom). Calibrated means
95% of true points fall inside, on data the model did not train on.

- Learned models predict their own deviations (trained by a Gaussian likelihood, ``models.train``). The
  likelihood is fitted to the winning mode, which is not always the most probable one, so the single answer's
  ellipses come out too narrow; one factor per horizon (``TrajectoryNet.std_scale``), fitted on the validation
  windows, sets the ``FIT_QUANTILE`` quantile of the squared radius to 5.991 (temperature scaling, per
  horizon). That quantile is above 0.95 because the fit's own windows are not what it is for: on scenes the
  fit did not see, the 95% ellipses fitted at 0.95 held 83-95% of true points (``FIT_QUANTILE`` says how it
  was chosen). ``ipnet calibrate --weights DIR`` refits trained checkpoints without training them again.
- Motion models (CV, CA, CTRV) predict none: their deviations are a table per agent type, horizon and axis,
  fitted the same way on the validation windows (the root-mean-square error along and across the heading,
  then the 95% factor) in bins of 0.5 s, interpolated between them and never shrinking with the horizon: it
  grows as the fit finds it, no formula assumed; a bin with too few validation points of a type takes the
  fit of all types together there. ``ipnet calibrate`` writes that table
  (``MOTION_DEVIATIONS``); the predictors read it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.agent_types import AGENT_TYPES

if TYPE_CHECKING:
    from models.data import Track
    from models.evaluate import Protocol
    from models.predictor import Predictor

#: the motion models' fitted deviations (``ipnet calibrate`` writes it)
MOTION_DEVIATIONS = Path(__file__).resolve().parent / "weights" / "motion_deviations.json"
CHI2_2D_95 = 5.991464547107979
#: a type needs this many validation points in a bin of horizons for a fit of its own there
MIN_POINTS = 200
#: horizons per bin of the motion models' fit (0.5 s)
BIN_STEPS = 5
#: The quantile of a learned model's squared radii (validation windows) that its 95% ellipse is fitted to.
#: Chosen on the validation split by ``python scripts/choose_calibration.py``: the served models (5 models x 3
#: seeds) fitted on one half of the validation scenes and scored on the other (2 folds, horizons to 3 s, per
#: source: KITTI vehicles, Lyft vehicles, ETH/UCY pedestrians); the quantile whose held-out coverage, averaged
#: over models and sources, is closest to 0.95. At 0.95 the held-out coverage was 0.913 on average (0.832 for
#: the worst model and source, the LSTM on Lyft's vehicles); at 0.975, 0.949 (0.883). The motion models' table
#: keeps 0.95 (fitted per agent type; that command does not study it).
FIT_QUANTILE = 0.975


def calibration_protocol() -> Protocol:
    """The validation windows: every agent type, 2 s observed, 5 s (the whole prediction grid) ahead."""
    from models.evaluate import (
        Protocol,
    )  # here: models.evaluate imports the predictor, which imports this module

    return Protocol(obs_s=2.0, pred_s=5.0, stride_s=1.0, agent_types=None)


def _residuals(
    predictor: Predictor, tracks: list[Track]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The single answer's errors on the validation windows, one row per true point.

    Returns (along, across) errors in metres (P, 2), the horizon index of each point on the model grid (P,),
    its agent type index (P,) and the answer's deviations there (P, 2; None when the model has none).
    """
    from models.evaluate import predict_windows, select_windows

    proto = calibration_protocol()
    windows = select_windows(tracks, proto)
    forecasts = predict_windows(predictor, windows, proto)
    dt = predictor.cfg.pred_dt_s
    n_h = len(predictor.horizons_s)
    err, hidx, tidx, std = [], [], [], []
    for w, f in zip(windows, forecasts, strict=True):
        c, s = f.heading
        d = w.target_xy - f.modes[0]
        err.append(np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1))
        hidx.append(np.clip(np.rint(w.target_t / dt).astype(np.int64) - 1, 0, n_h - 1))
        tidx.append(np.full(len(w.target_t), AGENT_TYPES.index(w.agent_type)))
        if f.std is not None:
            std.append(f.std[0])
    return (
        np.concatenate(err),
        np.concatenate(hidx),
        np.concatenate(tidx),
        np.concatenate(std) if std else None,
    )


def _factor(z2: np.ndarray, quantile: float = 0.95) -> float:
    """The factor on the deviations that puts this quantile of these squared radii inside 5.991."""
    return float(np.sqrt(np.quantile(z2, quantile) / CHI2_2D_95)) if len(z2) else 1.0


def horizon_factors(
    z2: np.ndarray, horizon: np.ndarray, n_h: int, quantile: float = FIT_QUANTILE
) -> np.ndarray:
    """(n_h,) one factor per horizon index: squared radii ``z2`` (P,) of points at ``horizon`` (P,) scaled so
    that ``quantile`` of each horizon's fall inside the 95% ellipse (1 where a horizon has no point)."""
    return np.array([_factor(z2[horizon == h], quantile) for h in range(n_h)])


def squared_radii(predictor: Predictor, tracks: list[Track]) -> tuple[np.ndarray, np.ndarray]:
    """The single answer's squared radii ``(along / s_a)^2 + (across / s_c)^2`` on the calibration windows of
    ``tracks`` (``select_windows(tracks, calibration_protocol())``, window after window), one per true point
    (P,), with the point's horizon index (P,)."""
    err, hidx, _, std = _residuals(predictor, tracks)
    assert std is not None, "the model has no deviations"
    return ((err / std) ** 2).sum(axis=1), hidx


def point_coverage(predictor: Predictor, tracks: list[Track]) -> float:
    """The share of the calibration windows' true points inside the single answer's 95% ellipse, every point
    alike (what the fit sets to ``FIT_QUANTILE``; ``ipnet evaluate``'s ``coverage_95`` averages it per window)."""
    z2, _ = squared_radii(predictor, tracks)
    return float(np.mean(z2 <= CHI2_2D_95))


def fit_std_scale(
    predictor: Predictor, val_tracks: list[Track], quantile: float = FIT_QUANTILE
) -> np.ndarray:
    """(H,) per-horizon factors for a learned model's deviations (its current ``std_scale`` taken out)."""
    net = predictor.net
    assert net is not None and net.cfg.uncertainty, "only a learned model with deviations is calibrated"
    current = net.std_scale.numpy().astype(np.float64)
    z2, hidx = squared_radii(predictor, val_tracks)
    return current * horizon_factors(z2, hidx, len(current), quantile)


def fit_motion_deviations(predictor: Predictor, val_tracks: list[Track]) -> np.ndarray:
    """(agent types, H, 2) deviations along / across the heading of a motion model.

    Fitted per agent type on bins of ``BIN_STEPS`` horizons (a stream at 2.5 Hz has points at every fourth
    horizon only), each bin with too few points of the type taking the bin of every type together; then
    interpolated linearly between the bins' centres and made non-decreasing with the horizon.
    """
    err, hidx, tidx, _ = _residuals(predictor, val_tracks)
    n_h = len(predictor.horizons_s)
    bins = hidx // BIN_STEPS
    n_bins = -(-n_h // BIN_STEPS)
    centres = np.arange(n_bins) * BIN_STEPS + (BIN_STEPS - 1) / 2
    pooled = np.array([_fit_table_row(err[bins == b]) for b in range(n_bins)])
    out = np.empty((len(AGENT_TYPES), n_h, 2))
    for ti in range(len(AGENT_TYPES)):
        rows = pooled.copy()
        for b in range(n_bins):
            sel = (bins == b) & (tidx == ti)
            if sel.sum() >= MIN_POINTS:
                rows[b] = _fit_table_row(err[sel])
        for axis in range(2):
            out[ti, :, axis] = np.maximum.accumulate(np.interp(np.arange(n_h), centres, rows[:, axis]))
    return out


def _fit_table_row(err: np.ndarray) -> np.ndarray:
    """(2,) deviations for errors (P, 2): the RMS per axis, scaled to cover 95% of the points."""
    if not len(err):
        return np.ones(2)
    rms = np.sqrt((err**2).mean(axis=0)).clip(min=0.01)
    z2 = ((err / rms) ** 2).sum(axis=1)
    return rms * _factor(z2)


def write_motion_deviations(val_tracks: list[Track], path: Path = MOTION_DEVIATIONS) -> dict[str, Any]:
    """Fit CV, CA and CTRV on the validation tracks and write the table (JSON) the predictors read."""
    from models.motion import MOTION_KINDS, MotionConfig
    from models.predictor import Predictor

    tables: dict[str, list[Any]] = {}
    for kind in MOTION_KINDS:
        pred = Predictor.motion(MotionConfig.of(kind), std=np.ones((len(AGENT_TYPES), 50, 2)))
        tables[kind] = np.round(fit_motion_deviations(pred, val_tracks), 4).tolist()
    doc: dict[str, Any] = {
        "description": "deviations (m) along / across the heading, [agent type][horizon][axis], fitted on the "
        "validation split so that 95% of true points fall in the 95% ellipse (models.calibration)",
        "agent_types": list(AGENT_TYPES),
        "horizons_s": [round(0.1 * (j + 1), 1) for j in range(50)],
        "models": tables,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    motion_deviations.cache_clear()
    return doc


@cache
def motion_deviations(kind: str) -> np.ndarray | None:
    """The shipped fit for a motion model: (agent types, H, 2), or None when it was never fitted."""
    if not MOTION_DEVIATIONS.is_file():
        return None
    doc = json.loads(MOTION_DEVIATIONS.read_text())
    table = doc["models"].get(kind)
    if table is None or doc["agent_types"] != list(AGENT_TYPES):
        return None
    arr = np.asarray(table, dtype=np.float64)
    arr.setflags(write=False)
    return arr
