"""Glue used by the CLI and the service: train and save a set of models, load shipped predictors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import WEIGHTS_DIR, save_checkpoint, shipped_path
from models.data import Track
from models.nets import ModelConfig
from models.predictor import Predictor
from models.train import TrainConfig, Trainer, data_hash
from models.windows import encode_sequences

#: Same tuning budget for every learned model: identical width, learning rate, epochs, data and seed.
DEFAULT_MODEL = ModelConfig()
DEFAULT_TRAIN = TrainConfig()


def train_models(
    train: list[Track],
    val: list[Track],
    kinds: list[str],
    corpus_name: str,
    out_dir: str | Path | None = None,
    epochs: int | None = None,
    n_memory: int | None = None,
    lr: float | None = None,
    augment: bool = False,
    augment_noise: bool = True,
    tau_spread: bool = False,
    cv_prior: bool = True,
    ipnet_interval_input: bool = False,
    ipnet_readout: str = "both",
    seed: int = 0,
    threads: int = 2,
    progress: bool = True,
    base_model: ModelConfig | None = None,
    base_train: TrainConfig | None = None,
) -> dict[str, dict[str, Any]]:
    """Train each kind with the same budget and save ``<out_dir>/<kind>.pt``."""
    out = Path(out_dir) if out_dir else WEIGHTS_DIR
    tcfg = replace(
        base_train or DEFAULT_TRAIN, seed=seed, augment=augment, augment_noise=augment_noise, threads=threads
    )
    if epochs is not None:
        tcfg = replace(tcfg, epochs=epochs)
    if lr is not None:
        tcfg = replace(tcfg, lr=lr)
    digest = data_hash(train)
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        # the recurrent baselines always see the interval; IPNet only in the ablation that measures it
        mcfg = replace(
            base_model or DEFAULT_MODEL,
            kind=kind,
            tau_spread=tau_spread,
            cv_prior=cv_prior,
            interval_input=True if (kind == "ipnet" and ipnet_interval_input) else None,
            readout=ipnet_readout if kind == "ipnet" else "both",
        )
        if n_memory is not None:
            mcfg = replace(mcfg, n_memory=n_memory)
        trainer = Trainer(mcfg, tcfg, progress=progress)
        net = trainer.fit(train, val)
        val_loss = min((h.get("val_loss_m", np.inf) for h in trainer.history), default=np.inf)
        path = out / f"{kind}.pt"
        ckpt = save_checkpoint(
            path,
            net,
            {
                "train_config": tcfg.to_dict(),
                "corpus": corpus_name,
                "data_hash": digest,
                "n_train_tracks": len(train),
                "n_train_samples": int(sum(len(t.t) for t in train)),
                "history": trainer.history,
                "train_seconds": trainer.train_seconds,
            },
        )
        results[kind] = {
            "path": str(path),
            "version": ckpt["version"],
            "val_loss_m": float(val_loss),
            "train_seconds": trainer.train_seconds,
        }
    return results


def load_predictors(
    names: list[str], weights_dir: str | Path | None = None, native: bool = True
) -> dict[str, Predictor]:
    """Shipped (or given) checkpoints for learned names, constant velocity for ``cv``.

    ``native``: IPNet's MTJ layer through the compiled kernel where it builds (``models.native``).
    """
    out: dict[str, Predictor] = {}
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name == "cv":
            out[name] = Predictor.constant_velocity()
        else:
            out[name] = Predictor.from_checkpoint(shipped_path(name, weights_dir), name, native=native)
    return out


@torch.no_grad()
def measured_mean_v2(ipnet: Predictor, tracks: list[Track], max_tracks: int = 400) -> float:
    """Mean squared drive voltage (V^2) that the trained IPNet applies to its neurons on real data."""
    assert ipnet.net is not None and ipnet.net.mtj is not None
    tracks = [t for t in tracks if len(t.t) >= 3][:max_tracks]
    enc = encode_sequences([t.t for t in tracks], [t.xy for t in tracks], [t.agent_type for t in tracks])
    e = ipnet.net.embed(torch.from_numpy(enc.feats))
    volts = ipnet.net.mtj.params.v_max_v * torch.sigmoid(ipnet.net.mtj.drive(e))
    mask = torch.from_numpy(enc.valid)[..., None].float()
    return float((volts**2 * mask).sum() / (mask.sum() * volts.shape[-1]))
