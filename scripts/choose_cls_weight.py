"""How the mode-classification weight of ``models.train.forecast_loss`` was chosen: IPNet with 6 futures,
trained briefly (6 epochs of the shipped recipe, seed 0) with each candidate weight, scored on the validation
split (never the test set). Prints one JSON line per weight: the most probable future's ADE / FDE, minADE_6,
minFDE_6 and brier-minFDE. About 25 minutes for the two weights on 2 cores.

    python scripts/choose_cls_weight.py [0.1 1.0 ...]
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import models.train as train
from models.catalog import RECIPES, model_config
from models.corpus import corpus, split_train_val
from models.evaluate import Protocol, evaluate_models
from models.nets import ModelConfig
from models.predictor import Predictor


def main(weights: list[float]) -> None:
    tracks, val = split_train_val(corpus("shipped"))
    cfg = replace(RECIPES["shipped"].train, epochs=6, threads=1)
    base = model_config("ipnet", ModelConfig(modes=6, uncertainty=True))
    for w in weights:
        train.CLS_WEIGHT = w
        net = train.Trainer(base, cfg, progress=False).fit(tracks, val)
        ev = evaluate_models(val, {"ipnet": Predictor(net, "ipnet", "candidate")}, Protocol(stride_s=0.5))
        d = ev.scores["ipnet"].summary(ev.n_windows, len(ev.scenes))
        keys = ("ade_m", "fde_m", "min_ade_k_m", "min_fde_k_m", "brier_min_fde_m")
        print(json.dumps({"cls_weight": w, **{k: d[k] for k in keys}}), flush=True)


if __name__ == "__main__":
    main([float(a) for a in sys.argv[1:]] or [0.1, 1.0])
