"""Glue used by the CLI and the service: train and save a set of models, load shipped predictors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.calibration import FIT_QUANTILE, fit_std_scale, point_coverage
from models.catalog import model_config
from models.checkpoint import load_checkpoint, recipe_dir, save_checkpoint, shipped_path
from models.data import Track
from models.energy import DriveFigures
from models.motion import MOTION_KINDS, MotionConfig
from models.nets import ModelConfig, TrajectoryNet
from models.predictor import Predictor
from models.train import TrainConfig, Trainer, data_hash, loss_weights
from models.windows import encode_sequences


def train_models(
    train: list[Track],
    val: list[Track],
    names: list[str],
    corpus_name: str,
    out_dir: str | Path,
    train_cfg: TrainConfig,
    seeds: tuple[int, ...] = (0,),
    base_model: ModelConfig | None = None,
    progress: bool = True,
    recipe: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Train each named model (``models.catalog``) once per seed, with the same budget, and save
    ``<out_dir>/seed<k>/<name>.pt``.

    Same tuning budget for every model: identical data, augmentation, width, learning rate, epochs and seeds.
    """
    out = Path(out_dir)
    digest = data_hash(train)
    results: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        tcfg = replace(train_cfg, seed=seed)
        for name in names:
            trainer = Trainer(model_config(name, base_model), tcfg, progress=progress)
            net = trainer.fit(train, val)
            calibration = _calibrate(net, name, val) if net.cfg.uncertainty and val else None
            val_loss = min((h.get("val_loss_m", np.inf) for h in trainer.history), default=np.inf)
            path = out / f"seed{seed}" / f"{name}.pt"
            ckpt = save_checkpoint(
                path,
                net,
                {
                    "name": name,
                    "recipe": recipe,
                    "train_config": tcfg.to_dict(),
                    "loss_weights": loss_weights(),
                    "corpus": corpus_name,
                    "data_hash": digest,
                    "n_train_tracks": len(train),
                    "n_train_samples": int(sum(len(t.t) for t in train)),
                    "history": trainer.history,
                    "train_seconds": trainer.train_seconds,
                    "calibration": calibration,
                },
            )
            results[f"{name}/seed{seed}"] = {
                "path": str(path),
                "version": ckpt["version"],
                "val_loss_m": float(val_loss),
                "train_seconds": trainer.train_seconds,
            }
    return results


def _calibrate(net: TrajectoryNet, name: str, val: list[Track]) -> dict[str, float]:
    """Fit the deviations' per-horizon factors on the validation windows (``models.calibration``), in place;
    returns what a checkpoint records of it."""
    scale = fit_std_scale(Predictor(net, name, "calibrating", native=False), val)
    net.std_scale.copy_(torch.from_numpy(scale).float())
    cover = point_coverage(Predictor(net, name, "calibrated", native=False), val)
    return {"fit_quantile": FIT_QUANTILE, "validation_point_coverage": round(cover, 4)}


def recalibrate(path: str | Path, data_root: str | Path | None = None) -> dict[str, Any]:
    """Refit a trained checkpoint's deviations on its corpus's validation split (no training) and rewrite it.

    Returns ``{"path", "corpus", "version", "previous_version", "std_scale", "previous_std_scale",
    "calibration"}`` (the factors as lists, one per horizon).
    """
    from models.corpus import corpus, split_train_val

    net, meta = load_checkpoint(path)
    if not net.cfg.uncertainty:
        raise ValueError(f"{path}: the model predicts no deviations, nothing to calibrate")
    name, corpus_name = meta.get("name") or net.cfg.kind, meta.get("corpus")
    if not corpus_name:
        raise ValueError(f"{path}: the checkpoint names no corpus, so its validation split is unknown")
    _, val = split_train_val(corpus(corpus_name, data_root))
    before = net.std_scale.tolist()
    calibration = _calibrate(net, name, val)
    kept = {k: v for k, v in meta.items() if k not in ("format", "model_args", "version", "calibration")}
    ckpt = save_checkpoint(path, net, {**kept, "calibration": calibration})
    return {
        "path": str(path),
        "corpus": corpus_name,
        "version": ckpt["version"],
        "previous_version": meta.get("version"),
        "std_scale": net.std_scale.tolist(),
        "previous_std_scale": before,
        "calibration": calibration,
    }


def load_predictors(
    names: list[str], weights_dir: str | Path | None = None, native: bool = True
) -> dict[str, Predictor]:
    """Shipped (or given) checkpoints ``<weights_dir>/<name>.pt`` for learned names; the motion models
    (``cv``, ``ca``, ``ctrv``) need none.

    ``native``: IPNet's MTJ layer through the compiled kernel where it builds (``models.native``).
    """
    out: dict[str, Predictor] = {}
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name in MOTION_KINDS:
            out[name] = Predictor.motion(MotionConfig.of(name))
        else:
            out[name] = Predictor.from_checkpoint(shipped_path(name, weights_dir), name, native=native)
    return out


def seed_dirs(weights_dir: str | Path) -> list[Path]:
    """The seed folders of a recipe (``seed0``, ``seed1``, ...), or the folder itself when it has none."""
    root = Path(weights_dir)
    found = sorted(
        (p for p in root.glob("seed*") if p.is_dir() and p.name[4:].isdigit()), key=lambda p: int(p.name[4:])
    )
    return found or [root]


def load_model_set(
    names: list[str], weights_dir: str | Path | None = None, native: bool = True
) -> dict[str, list[Predictor]]:
    """Every seed of each model: ``{name: [predictor per seed]}`` (motion models: one, they have no seed).

    A name whose checkpoint is missing in some seed folder is loaded from the folders that have it. Default
    folder: the served set (``models/weights/multimodal``, every seed).
    """
    root = Path(weights_dir) if weights_dir else recipe_dir("multimodal")
    dirs = seed_dirs(root)
    out: dict[str, list[Predictor]] = {}
    for name in (n.strip() for n in names):
        if not name:
            continue
        if name in MOTION_KINDS:
            out[name] = [Predictor.motion(MotionConfig.of(name))]
            continue
        paths = [shipped_path(name, d) for d in dirs if shipped_path(name, d).exists()]
        if not paths:
            raise FileNotFoundError(f"no {name}.pt under {root}")
        out[name] = [Predictor.from_checkpoint(p, name, native=native) for p in paths]
    return out


@torch.no_grad()
def measured_drive(ipnet: Predictor, tracks: list[Track], max_tracks: int = 400) -> DriveFigures:
    """What the trained IPNet does to its neurons on real data: the mean squared drive voltage (V^2) and the
    mean temperature rise (K) after an observation.

    The drive is taken as the layer applies it, step by step along each track (with a lateral coupling,
    the drive also reads the temperatures the track has left), over the observations that heat (not a
    track's first, which closes no interval).
    """
    net = ipnet.net
    assert net is not None and net.mtj is not None
    mtj = net.mtj
    tracks = [t for t in tracks if len(t.t) >= 3][:max_tracks]
    enc = encode_sequences([t.t for t in tracks], [t.xy for t in tracks], [t.agent_type for t in tracks])
    feats, dt, valid = (torch.from_numpy(a) for a in (enc.feats, enc.dt, enc.valid))
    temp = mtj.initial(len(tracks))
    v2_sum, rise_sum, count = 0.0, 0.0, 0.0
    for k in range(feats.shape[1]):
        e = net.embed(feats[:, k])
        v = mtj.drive01(mtj.pre_activation(temp, e))
        keep = valid[:, k : k + 1]
        driven = keep & (dt[:, k : k + 1] > 0)  # a track's first observation drives for no time: no heat
        temp = torch.where(keep, mtj(temp, e, dt[:, k])[0], temp)
        v2_sum += float((v * v * driven).sum())
        rise_sum += float(((temp - mtj.params.t0_k) * driven).sum())
        count += float(driven.sum()) * v.shape[1]
    count = max(count, 1.0)
    return DriveFigures(mtj.params.v_max_v**2 * v2_sum / count, rise_sum / count)
