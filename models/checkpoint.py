"""Checkpoints that carry their ``model_args``, training config and data hash; loaded with weights_only=True."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from models.nets import ModelConfig, TrajectoryNet

#: every trained weight set: ``<recipe>/seed<k>/<name>.pt``
WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
#: the weights the service serves: the multimodal models (K futures with probabilities and deviations) of
#: the shipped recipe, seed 0
WEIGHTS_DIR = WEIGHTS_ROOT / "multimodal" / "seed0"


def recipe_dir(recipe: str) -> Path:
    """The folder of a recipe's weights (its ``seed*`` folders)."""
    return WEIGHTS_ROOT / recipe


CHECKPOINT_FORMAT = 1


def state_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k, v in sorted(state_dict.items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, net: TrajectoryNet, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``{format, model_args, state_dict, version, **meta}``; meta holds plain data only."""
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    version = f"{meta.get('name') or net.cfg.kind}-{state_fingerprint(state)[:10]}"
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "model_args": net.cfg.to_dict(),
        "state_dict": state,
        "version": version,
        **meta,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
    return ckpt


def load_checkpoint(path: str | Path) -> tuple[TrajectoryNet, dict[str, Any]]:
    """Load a checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: unsupported checkpoint format {ckpt.get('format')!r}")
    args, state = _migrate(dict(ckpt["model_args"]), ckpt["state_dict"])
    net = TrajectoryNet(ModelConfig(**args))
    net.load_state_dict(state)
    net.eval()
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return net, meta


def _migrate(args: dict[str, Any], state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Checkpoints written before the current options existed, as the models they were."""
    args.setdefault("interval_input", True)  # every model then saw the interval
    if "tau_spread" in args:
        args["tau"] = "spread" if args.pop("tau_spread") else "single"
    if isinstance(args.get("lateral"), bool):
        args["lateral"] = "dense" if args["lateral"] else "none"
    args.setdefault("drive", "sigmoid")
    if "std_scale" not in state:  # written before the uncertainty calibration existed: no scaling
        state = {**state, "std_scale": torch.ones(int(args.get("pred_steps", 50)))}
    if args["kind"] in ("gru", "lstm"):
        state = {
            ("cell." + k if k.startswith("cell.") and not k.startswith("cell.cell.") else k): v
            for k, v in state.items()
        }
    return args, state


def shipped_path(kind: str, weights_dir: str | Path | None = None) -> Path:
    return Path(weights_dir or WEIGHTS_DIR) / f"{kind}.pt"
