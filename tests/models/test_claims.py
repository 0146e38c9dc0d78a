"""The model card's goals, re-measured in CI on a subset: seed 0 of each recipe (the card averages three seeds)
on every Argoverse 2 test window.

``ipnet card`` writes each goal's figures to ``models/claims.json`` beside the card. Here every figure whose
95% interval excludes zero must keep its sign with seed 0 alone, and a goal the card reports as met with its
whole interval past the threshold must be met by seed 0 too: a claim is as big as its interval, and a change
to the code or the weights that breaks one fails this test.
"""

from __future__ import annotations

import json

import pytest

from models import corpus
from models.card import (
    CARD_PATH,
    CLAIMS_PATH,
    CONDITIONS,
    COVERAGE_RANGE,
    HZ2,
    MIN_FDE_SHARE,
    MODES_K,
    MULTIMODAL,
)
from models.checkpoint import recipe_dir
from models.evaluate import Evaluation, Protocol, evaluate_models
from models.pipeline import load_predictors
from models.stats import significant

#: the threshold each goal sets, on the figure it is about (None: the goal is about the sign only)
THRESHOLDS = {"unseen_rates": 0.124, "shipped_2hz": 0.124, "no_heat_ablation": 0.05, "gru_below_cv": 0.25}


@pytest.fixture(scope="module")
def claims() -> dict:
    return json.loads(CLAIMS_PATH.read_text())


@pytest.fixture(scope="module")
def av2(data_root):
    return corpus.test_set("shipped", data_root)


def _seed0(av2, recipe: str, names: list[str], condition: str) -> Evaluation:
    models = load_predictors(names, recipe_dir(recipe) / "seed0")
    return evaluate_models(av2, models, Protocol(perturbation=CONDITIONS[condition]))


def _check(name: str, card: float, ci: list[float], seed0: float, threshold: float | None) -> None:
    if significant((ci[0], ci[1])):
        assert (seed0 > 0) == (card > 0), f"{name}: the card says {card:+.3f} {ci}, seed 0 gives {seed0:+.3f}"
    if threshold is not None and ci[0] >= threshold:
        assert seed0 >= threshold, f"{name}: met over its whole interval {ci}, but seed 0 gives {seed0:+.3f}"


def test_the_card_and_its_claims_come_from_one_run(claims) -> None:
    card = CARD_PATH.read_text()
    assert set(claims) == {
        "unseen_rates",
        "shipped_10hz",
        "shipped_2hz",
        "no_heat_ablation",
        "gru_below_cv",
        "modes_min_fde",
        "modes_brier",
        "modes_coverage",
    }
    for goal in claims.values():
        assert goal["measured"] in card and goal["text"] in card


def test_unseen_rate_and_shipped_recipe_comparisons_hold_with_seed_0(claims, av2) -> None:
    for cond, f in claims["unseen_rates"]["figures"].items():
        ev = _seed0(av2, "10hz", ["ipnet", f["baseline"]], cond)
        red = 1 - ev.ade("ipnet") / ev.ade(f["baseline"])  # type: ignore[operator]
        _check(
            f"unseen {cond} vs {f['baseline']}", f["reduction"], f["ci95"], red, THRESHOLDS["unseen_rates"]
        )
    for goal, cond in (("shipped_10hz", "10 Hz"), ("shipped_2hz", HZ2)):
        f = claims[goal]["figures"]
        ev = _seed0(av2, "shipped", ["ipnet", f["baseline"]], cond)
        red = 1 - ev.ade("ipnet") / ev.ade(f["baseline"])  # type: ignore[operator]
        _check(goal, f["reduction"], f["ci95"], red, THRESHOLDS.get(goal))


def test_the_heat_carries_memory_and_the_gru_beats_cv_with_seed_0(claims, av2) -> None:
    for cond, f in claims["no_heat_ablation"]["figures"].items():
        ev = _seed0(av2, "10hz", ["ipnet", "ipnet_tau0"], cond)
        change = ev.ade("ipnet_tau0") / ev.ade("ipnet") - 1  # type: ignore[operator]
        # the threshold of this goal is for 10 Hz; at the unseen rates the goal asks for more than at 10 Hz
        _check(
            f"no heat, {cond}",
            f["change"],
            f["ci95"],
            change,
            THRESHOLDS["no_heat_ablation"] if cond == "10 Hz" else None,
        )
    f = claims["gru_below_cv"]["figures"]
    ev = _seed0(av2, "shipped", ["gru", "cv"], HZ2)
    red = 1 - ev.ade("gru") / ev.ade("cv")  # type: ignore[operator]
    _check("gru vs cv at 2 Hz", f["reduction"], f["ci95"], red, THRESHOLDS["gru_below_cv"])


def test_the_served_models_futures_and_calibration_hold_with_seed_0(claims, av2) -> None:
    """The served (multimodal) models' seed 0: the brier comparison keeps its sign where the card's interval
    excludes zero, and the coverage and minFDE share stay on the side of their goal the card reports."""
    f = claims["modes_brier"]["figures"]
    models = load_predictors(["ipnet", f["baseline"]], recipe_dir(MULTIMODAL) / "seed0")
    ev = evaluate_models(av2, models, Protocol(), k=MODES_K)
    red = 1 - ev.scores["ipnet"].per_window["brier"].mean / ev.scores[f["baseline"]].per_window["brier"].mean
    _check("brier-minFDE vs " + f["baseline"], f["reduction"], f["ci95"], red, None)
    ip = ev.scores["ipnet"].per_window
    share = ip["min_fde"].mean / ip["fde"].mean
    assert (share <= MIN_FDE_SHARE) == claims["modes_min_fde"]["met"], share
    lo, hi = COVERAGE_RANGE
    for name in ("ipnet", f["baseline"]):
        # calibrated on the validation split, not on AV2; seeds differ by a few hundredths (the card averages
        # them), so seed 0 is held to the goal's range where the card reports it met
        cover = ev.scores[name].per_window["coverage"].mean
        if claims["modes_coverage"]["met"]:
            assert lo <= cover <= hi, (name, cover)
