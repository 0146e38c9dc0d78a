"""How the weights of ``models.train.forecast_loss``'s terms were chosen: IPNet with 6 futures, trained briefly
(6 epochs of the shipped recipe, seed 0) with each candidate, scored on the validation split (never the test
set). A candidate sets one or more terms (``cls``: CLS_WEIGHT, ``top1``: TOP1_WEIGHT, ``nll``: NLL_WEIGHT);
the others keep their values in ``models/train.py``. Prints one JSON line per candidate: the most probable
future's ADE / FDE, minADE_6, minFDE_6, brier-minFDE and coverage_95 (before calibration). About 12 minutes
per candidate on one core.

    python scripts/choose_loss_weight.py cls=0.1 cls=1.0 cls=3.0
    python scripts/choose_loss_weight.py top1=0 top1=0.1 top1=0.2 top1=1.0 top1=0.2,cls=3.0
    python scripts/choose_loss_weight.py --seed 1 top1=0 top1=0.2

``--score DIR [DIR ...]`` scores fully trained sets instead (folders of ``seed*/`` with the five learned
models, as ``ipnet train --modes 6 --recipe shipped`` writes them) on the same validation split: one JSON line
per folder, model and seed, then the mean over seeds per folder and model.

    python scripts/choose_loss_weight.py --score models/weights/multimodal /tmp/top1-0.2/multimodal
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import models.train as train
from models.catalog import LEARNED_BASELINES, RECIPES, model_config
from models.checkpoint import load_checkpoint
from models.corpus import corpus, split_train_val
from models.evaluate import Protocol, evaluate_models
from models.nets import ModelConfig
from models.pipeline import seed_dirs
from models.predictor import Predictor

TERMS = {"cls": "CLS_WEIGHT", "top1": "TOP1_WEIGHT", "nll": "NLL_WEIGHT"}


def parse(candidate: str) -> dict[str, float]:
    """``"top1=0.2,cls=3.0"`` -> ``{"top1": 0.2, "cls": 3.0}``."""
    out = {}
    for part in candidate.split(","):
        term, _, value = part.partition("=")
        if term not in TERMS or not value:
            raise ValueError(f"{part!r}: expected TERM=WEIGHT with TERM one of {', '.join(TERMS)}")
        out[term] = float(value)
    return out


def main(candidates: list[dict[str, float]], seed: int = 0) -> None:
    tracks, val = split_train_val(corpus("shipped"))
    cfg = replace(RECIPES["shipped"].train, epochs=6, threads=1, seed=seed)
    base = model_config("ipnet", ModelConfig(modes=6, uncertainty=True))
    defaults = {term: getattr(train, name) for term, name in TERMS.items()}
    for candidate in candidates:
        for term, name in TERMS.items():
            setattr(train, name, candidate.get(term, defaults[term]))
        net = train.Trainer(base, cfg, progress=False).fit(tracks, val)
        ev = evaluate_models(val, {"ipnet": Predictor(net, "ipnet", "candidate")}, Protocol(stride_s=0.5))
        d = ev.scores["ipnet"].summary(ev.n_windows, len(ev.scenes))
        keys = ("ade_m", "fde_m", "min_ade_k_m", "min_fde_k_m", "brier_min_fde_m", "coverage_95")
        print(json.dumps({**candidate, "seed": seed, **{k: d.get(k) for k in keys}}), flush=True)


def score(folders: list[Path]) -> None:
    _, val = split_train_val(corpus("shipped"))
    keys = ("ade_m", "fde_m", "min_ade_k_m", "min_fde_k_m", "brier_min_fde_m", "coverage_95")
    for folder in folders:
        rows: dict[str, list[dict[str, float]]] = {}
        for seed_dir in seed_dirs(folder):
            preds = {}
            for name in ("ipnet", *LEARNED_BASELINES):
                net, meta = load_checkpoint(seed_dir / f"{name}.pt")
                preds[name] = Predictor(net, name, meta.get("version", name))
            ev = evaluate_models(val, preds, Protocol(stride_s=0.5))
            for name, sc in ev.scores.items():
                d = sc.summary(ev.n_windows, len(ev.scenes))
                rows.setdefault(name, []).append({k: d[k] for k in keys})
                print(
                    json.dumps(
                        {"folder": str(folder), "seed": seed_dir.name, "model": name, **rows[name][-1]}
                    )
                )
        for name, rs in rows.items():
            mean = {k: round(sum(r[k] for r in rs) / len(rs), 4) for k in keys}
            print(json.dumps({"folder": str(folder), "seeds": len(rs), "model": name, **mean}), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--score"]:
        score([Path(a) for a in args[1:]])
        sys.exit(0)
    seed = 0
    if args[:1] == ["--seed"] and len(args) > 1:
        seed, args = int(args[1]), args[2:]
    try:
        chosen = [parse(a) for a in args]
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    if not chosen:
        sys.exit("usage: python scripts/choose_loss_weight.py [--seed N] TERM=WEIGHT[,TERM=WEIGHT...] ...")
    main(chosen, seed)
