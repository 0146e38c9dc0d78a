"""The model library's subcommands of ``ipnet``: train, evaluate, energy, card (``service/cli.py`` assembles
the command). Heavy imports (torch, the models) happen inside each subcommand so that ``ipnet --help`` is
instant."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--obs-s", type=float, default=2.0, help="observed history, seconds (default 2)")
    p.add_argument("--pred-s", type=float, default=3.0, help="prediction horizon, seconds (default 3)")
    p.add_argument(
        "--stride-s", type=float, default=1.0, help="spacing of window anchors, seconds (default 1)"
    )
    p.add_argument(
        "--agent-types",
        default="vehicle",
        help="comma-separated: vehicle,pedestrian,cyclist,unknown or 'all' (default vehicle)",
    )
    p.add_argument("--moving-only", action="store_true", help="only windows whose path exceeds 2 m")
    p.add_argument(
        "--resample-hz", type=float, default=None, help="resample the observed stream to this rate"
    )
    p.add_argument("--drop-rate", type=float, default=0.0, help="drop this fraction of observations (seeded)")
    p.add_argument("--jitter-s", type=float, default=0.0, help="Gaussian timestamp jitter, seconds")
    p.add_argument("--noise-m", type=float, default=0.0, help="Gaussian position noise, metres")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbations")


def add_commands(sub: Any) -> None:
    """``ipnet train``, ``evaluate``, ``calibrate``, ``energy``, ``card``."""
    p = sub.add_parser(
        "train",
        help="train IPNet, its baselines and its ablations on CPU",
        description="Train named models (see models/catalog.py) with one recipe, once per seed, and write "
        "OUT/seed<k>/<name>.pt. Every model of a run gets the same data, augmentation and budget.",
    )
    p.add_argument(
        "--recipe",
        default="shipped",
        help="training data and augmentation: 'shipped' (the served weights) or '10hz' (10 Hz data only, "
        "no augmentation); see models/catalog.py",
    )
    p.add_argument(
        "--corpus", default=None, help="override the recipe's corpus: 'shipped', '10hz', 'ethucy-loo:<scene>'"
    )
    p.add_argument("--data", default=None, help="train on this file/folder instead of a named corpus")
    p.add_argument(
        "--format", default="auto", choices=["auto", "csv", "av2", "ethucy", "lyft"], help="format of --data"
    )
    p.add_argument(
        "--models",
        default="ipnet,gru,lstm",
        help="comma-separated model names of models/catalog.py, or 'all' (IPNet, every learned baseline and "
        "every ablation)",
    )
    p.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="override the epochs of the recipe")
    p.add_argument("--n-memory", type=int, default=None, help="neurons / hidden units (same for every model)")
    p.add_argument(
        "--modes",
        type=int,
        default=1,
        help="futures per agent, with probabilities (default 1: a single trajectory); more than 1 also trains "
        "deviations per point, calibrated on the validation split (the served weights: 6)",
    )
    p.add_argument(
        "--uncertainty",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="deviations per point (default: on with more than one mode)",
    )
    p.add_argument("--lr", type=float, default=None, help="override the learning rate of the recipe")
    p.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=None, help="override: degraded streams"
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument(
        "--out",
        required=True,
        help="output folder (the served weights are models/weights/multimodal; write elsewhere to keep them)",
    )
    p.add_argument("--data-root", default=None, help="folder of the shared data (default ../shared/data)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "evaluate",
        help="ADE/FDE per model on a data set",
        description="ADE/FDE (and at 1, 2, 3 s) per model on a data set, with 95% intervals by bootstrap over "
        "scenes and seeds, IPNet against the best learned baseline; optionally on a degraded stream "
        "(--resample-hz, --drop-rate, --jitter-s, --noise-m).",
    )
    p.add_argument("--data", required=True, help="file or folder (interchange CSV, AV2, ETH/UCY, Lyft zarr)")
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "csv", "av2", "ethucy", "lyft"],
        help="data format (default: detect)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="folder of <name>.pt files, or of seed*/ folders of them (every seed is evaluated); default: the "
        "served set, models/weights/multimodal",
    )
    p.add_argument(
        "--models",
        default="ipnet,gru,lstm,gru_nodt,ctgru,cv,ca,ctrv",
        help="comma-separated model names (models/catalog.py)",
    )
    p.add_argument(
        "--k",
        type=int,
        default=6,
        help="modes scored by minADE_K, minFDE_K, miss rate and brier-minFDE (default 6; capped at each "
        "model's own)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (on stderr)")
    _add_eval_args(p)

    p = sub.add_parser(
        "calibrate",
        help="fit the deviations on the validation split: the motion models', or trained checkpoints'",
        description="Without --weights: fit the deviations (along and across the heading, per agent type and "
        "horizon) of CV, CA and CTRV on the validation split, so that 95% of true points fall in their 95% "
        "ellipses, and write models/weights/motion_deviations.json. With --weights: refit the per-horizon "
        "factors of every learned checkpoint with deviations under that folder on its own corpus's validation "
        "split (models/calibration.py FIT_QUANTILE) and rewrite it, without training it again; learned models "
        "are calibrated the same way when they are trained.",
    )
    p.add_argument("--data-root", default=None, help="folder of the shared data (default ../shared/data)")
    p.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="a checkpoint (.pt) or a folder searched for them (e.g. models/weights/multimodal)",
    )

    p = sub.add_parser(
        "energy",
        help="modeled energy per state update, by component, and the ratios beside the paper's",
        description="Energy of one update of IPNet, the GRU and the LSTM by component (models/energy.py): "
        "drive, read, sense, adc, reheat, state_sram, macs; ratios for the full system, the memory alone and "
        "the drive alone; a sweep of the device-time scale; every assumption with its source.",
    )
    p.add_argument(
        "--weights", default=None, help="folder with ipnet.pt, gru.pt, lstm.pt (default: the served set)"
    )
    p.add_argument("--dt-s", type=float, default=0.1, help="interval between updates (default 0.1 s)")
    p.add_argument("--sram", default="8KB", choices=["8KB", "32KB", "1MB"], help="Horowitz SRAM size")
    p.add_argument(
        "--hold",
        default="digital",
        choices=["digital", "thermal"],
        help="how IPNet's state survives between frames: in SRAM, reheated before each frame (default), or in "
        "devices whose real thermal time constant is the scene's (unsupported by any source)",
    )
    p.add_argument("--measure-on", default=None, help="data file/folder: measure IPNet's real drive on it")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser(
        "card",
        help="regenerate models/MODEL_CARD.md (evaluation tables)",
        description="Regenerate the model card: every table from the weights and the shared data (about 15 "
        "minutes on 2 cores).",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="folder of the recipes' weights (default models/weights: <recipe>/seed<k>/)",
    )
    p.add_argument("--data-root", default=None, help="folder of the shared data (default ../shared/data)")
    p.add_argument("--out", default=None, help="where to write the card (default models/MODEL_CARD.md)")
    for name, handler in (
        ("train", cmd_train),
        ("evaluate", cmd_evaluate),
        ("calibrate", cmd_calibrate),
        ("energy", cmd_energy),
        ("card", cmd_card),
    ):
        sub.choices[name].set_defaults(handler=handler)


def _types(s: str) -> tuple[str, ...] | None:
    return None if s == "all" else tuple(x.strip() for x in s.split(",") if x.strip())


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from models.catalog import LEARNED, RECIPES
    from models.corpus import corpus, split_train_val
    from models.data import load_tracks
    from models.pipeline import train_models

    if args.recipe not in RECIPES:
        raise SystemExit(f"unknown recipe {args.recipe!r}; expected one of {sorted(RECIPES)}")
    recipe = RECIPES[args.recipe]
    if args.data:
        tracks = load_tracks(args.data, args.format)
        name = f"data:{Path(args.data).name}"
    else:
        name = args.corpus or recipe.corpus
        tracks = corpus(name, args.data_root)
    train, val = split_train_val(tracks)
    tcfg = replace(recipe.train, threads=args.threads)
    for field, value in (("epochs", args.epochs), ("lr", args.lr), ("augment", args.augment)):
        if value is not None:
            tcfg = replace(tcfg, **{field: value})
    from models.nets import ModelConfig

    if args.modes < 1:
        raise SystemExit(f"--modes must be at least 1, got {args.modes}")
    uncertainty = args.modes > 1 if args.uncertainty is None else args.uncertainty
    base = ModelConfig(modes=args.modes, uncertainty=uncertainty)
    if args.n_memory is not None:
        base = replace(base, n_memory=args.n_memory)
    names = list(LEARNED) if args.models == "all" else [k for k in args.models.split(",") if k]
    out = train_models(
        train,
        val,
        names,
        corpus_name=name,
        out_dir=args.out,
        train_cfg=tcfg,
        seeds=tuple(int(s) for s in args.seeds.split(",")),
        base_model=base,
        progress=not args.quiet,
        recipe=args.recipe,
    )
    for key, info in out.items():
        print(
            f"{key}: {info['path']}  version {info['version']}  val loss {info['val_loss_m']:.3f}  "
            f"{info['train_seconds']:.0f} s"
        )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from models.calibration import MOTION_DEVIATIONS, write_motion_deviations
    from models.corpus import corpus, split_train_val

    if args.weights is not None:
        return _recalibrate(args.weights, args.data_root)
    _, val = split_train_val(corpus("shipped", args.data_root))
    doc = write_motion_deviations(val)
    for kind, table in doc["models"].items():
        v = table[0]  # vehicles
        print(
            f"{kind}: vehicle deviations at 1 / 3 / 5 s: along {v[9][0]:.2f} / {v[29][0]:.2f} / {v[49][0]:.2f} m,"
            f" across {v[9][1]:.2f} / {v[29][1]:.2f} / {v[49][1]:.2f} m"
        )
    print(f"wrote {MOTION_DEVIATIONS}")
    return 0


def _recalibrate(weights: Path, data_root: str | None) -> int:
    from models.pipeline import recalibrate

    if weights.is_file():
        paths = [weights]
    elif weights.is_dir():
        paths = [p for p in sorted(weights.rglob("*.pt")) if _has_deviations(p)]
    else:
        raise FileNotFoundError(f"--weights {weights}: no such file or folder")
    if not paths:
        raise ValueError(f"--weights {weights}: no checkpoint with deviations there")
    for path in paths:
        out = recalibrate(path, data_root)
        new, old = out["std_scale"], out["previous_std_scale"]
        print(
            f"{path}: factor at 1 / 3 / 5 s {new[9]:.3f} / {new[29]:.3f} / {new[-1]:.3f} "
            f"(was {old[9]:.3f} / {old[29]:.3f} / {old[-1]:.3f}), validation point coverage "
            f"{out['calibration']['validation_point_coverage']:.3f}, version {out['version']}"
        )
    return 0


def _has_deviations(path: Path) -> bool:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return bool(ckpt.get("model_args", {}).get("uncertainty"))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from models.catalog import LEARNED_BASELINES
    from models.data import load_tracks
    from models.evaluate import Protocol, evaluate_models
    from models.pipeline import load_model_set
    from models.stats import significant
    from models.windows import Perturbation

    tracks = load_tracks(args.data, args.format)
    models = load_model_set(args.models.split(","), args.weights)
    proto = Protocol(
        obs_s=args.obs_s,
        pred_s=args.pred_s,
        stride_s=args.stride_s,
        agent_types=_types(args.agent_types),
        moving_only=args.moving_only,
        perturbation=Perturbation(args.resample_hz, args.drop_rate, args.jitter_s, args.noise_m, args.seed),
    )
    if args.k < 1:
        raise SystemExit(f"--k must be at least 1, got {args.k}")
    ev = evaluate_models(tracks, models, proto, progress=not args.no_progress, k=args.k)
    result = ev.to_dict()
    result["protocol"]["data"] = str(args.data)
    result["model_versions"] = {k: [p.version for p in ps] for k, ps in models.items()}
    best = ev.best([n for n in LEARNED_BASELINES if n in models])
    if "ipnet" in models and best is not None:
        red, ci = ev.reduction("ipnet", best)
        result["ipnet_vs_best_baseline"] = {"baseline": best, "ade_reduction": red, "ci95": list(ci)}
    if args.json:
        print(json.dumps(result))
        return 0
    seeds = max((len(ps) for ps in models.values()), default=0)
    print(
        f"data {args.data}: {ev.n_windows} windows in {len(ev.scenes)} scenes, {args.obs_s:g} s -> "
        f"{args.pred_s:g} s, types {args.agent_types}{', moving only' if args.moving_only else ''}; "
        f"up to {seeds} seed(s) per model; 95% intervals: bootstrap over scenes and seeds"
    )
    print(
        f"{'model':16s} {'ADE m':>8s} {'95% interval':>16s} {'FDE m':>8s} {'95% interval':>16s} {'@1s':>7s} {'@2s':>7s} {'@3s':>7s}"
    )
    for name, m in result["models"].items():
        if m["ade_m"] is None or not m["n_windows"]:
            print(f"{name:16s} no windows")
            continue
        hz = [m["horizons_s"].get(h) for h in ("1", "2", "3")]
        hs = " ".join(f"{v:7.3f}" if v is not None else "      -" for v in hz)
        a_lo, a_hi = m["ade_ci95_m"]
        f_lo, f_hi = m["fde_ci95_m"]
        print(
            f"{name:16s} {m['ade_m']:8.3f} {f'[{a_lo:.3f}, {a_hi:.3f}]':>16s} {m['fde_m']:8.3f} "
            f"{f'[{f_lo:.3f}, {f_hi:.3f}]':>16s} {hs}"
        )
    if "ipnet_vs_best_baseline" in result:
        r = result["ipnet_vs_best_baseline"]
        lo, hi = r["ci95"]
        verdict = "significant" if significant((lo, hi)) else "not significant"
        print(
            f"IPNet vs the best learned baseline ({r['baseline']}): ADE {r['ade_reduction']:+.1%} "
            f"[{lo:+.1%}, {hi:+.1%}] ({verdict}; positive = IPNet better)"
        )
    return 0


def cmd_energy(args: argparse.Namespace) -> int:
    from models.energy import COMPONENTS, DriveFigures, HardwareAssumptions, report
    from models.pipeline import load_predictors, measured_drive

    preds = load_predictors(["ipnet", "gru", "lstm"], args.weights)
    ip = preds["ipnet"]
    assert ip.net is not None and ip.net.mtj is not None
    if args.measure_on:
        from models.data import load_tracks

        drive = measured_drive(ip, load_tracks(args.measure_on))
    else:
        drive = DriveFigures.worst_case(ip.net.mtj.params)
    nets = {k: p.net for k, p in preds.items() if p.net is not None}
    rep = report(nets, drive, HardwareAssumptions(sram=args.sram, hold=args.hold), args.dt_s)
    if args.json:
        print(json.dumps(rep))
        return 0
    print(
        f"energy per update (dt = {args.dt_s:g} s, SRAM {args.sram}, state hold between frames: {args.hold}, "
        f"IPNet drive: {drive.source}), joules"
    )
    names = list(rep["models"])
    print(f"  {'component':12s}" + "".join(f"{n:>12s}" for n in names))
    for c in (*COMPONENTS, "total"):
        vals = [
            rep["models"][n]["joules_per_update"] if c == "total" else rep["models"][n]["components"][c]
            for n in names
        ]
        print(f"  {c:12s}" + "".join(f"{v:12.3e}" for v in vals))
    print("ratios to IPNet          LSTM        GRU")
    for label, key in (
        ("full system", "ratios"),
        ("memory only", "memory_ratios"),
        ("drive only", "drive_only_ratios"),
    ):
        r = rep[key]
        print(f"  {label:18s} {r['lstm_over_ipnet']:10.3g}x {r['gru_over_ipnet']:10.3g}x")
    print(f"  paper (memory)     {rep['paper_ratios']['lstm_over_ipnet']:10.0f}x")
    print("time_scale sweep (same predictions; LSTM / IPNet): full system, memory only, drive only")
    for row in rep["time_scale_sweep"]:
        print(
            f"  {row['time_scale']:8.0e}  {row['lstm_over_ipnet']:10.3g}x {row['memory']['lstm_over_ipnet']:10.3g}x "
            f"{row['drive_only']['lstm_over_ipnet']:10.3g}x"
        )
    print("assumptions")
    for name, a in rep["assumptions"].items():
        value = a["value"] if isinstance(a["value"], str) else f"{a['value']:.4g}"
        print(f"  {name:18s} {value} {a['unit']}: {a['source']}")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from models.card import write_card

    path = write_card(args.weights, args.data_root, args.out)
    print(f"wrote {path}")
    return 0
