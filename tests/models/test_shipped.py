"""The shipped weights: every model of every recipe and seed, loadable safely, each trained on its recipe's
corpus (data hash) with the recipe's budget; the service serves seed 0 of the multimodal set (the shipped
recipe, 6 futures, calibrated deviations)."""

from __future__ import annotations

import dataclasses

from models.calibration import FIT_QUANTILE
from models.catalog import LEARNED, LEARNED_BASELINES, RECIPES, model_config
from models.checkpoint import WEIGHTS_DIR, WEIGHTS_ROOT, load_checkpoint, recipe_dir
from models.corpus import ETHUCY_SPLITS, corpus, split_train_val
from models.pipeline import seed_dirs
from models.train import data_hash


def _plain(d: dict) -> dict:
    """A train config as plain comparable data (tuples and lists alike; threads do not change the result)."""
    return {k: list(v) if isinstance(v, tuple | list) else v for k, v in d.items() if k != "threads"}


def test_every_recipe_holds_every_model_for_three_seeds_with_one_budget(data_root) -> None:
    for recipe, spec in RECIPES.items():
        train, _ = split_train_val(corpus(spec.corpus, data_root))
        digest = data_hash(train)
        dirs = seed_dirs(recipe_dir(recipe))
        assert [d.name for d in dirs] == ["seed0", "seed1", "seed2"], recipe
        for d in dirs:
            seed = int(d.name[4:])
            want = _plain(dataclasses.replace(spec.train, seed=seed).to_dict())
            for name in LEARNED:
                net, meta = load_checkpoint(d / f"{name}.pt")
                assert (meta["name"], meta["recipe"], meta["corpus"]) == (name, recipe, spec.corpus)
                assert net.cfg == model_config(name), (recipe, name)
                assert meta["data_hash"] == digest, f"{recipe}/{d.name}/{name} was not trained on its corpus"
                # the same data, augmentation, epochs, learning rate and seed for every model of the recipe
                assert _plain(meta["train_config"]) == want, (recipe, name)


def test_the_service_serves_seed_0_of_the_multimodal_set(data_root) -> None:
    assert (
        recipe_dir("multimodal") / "seed0" == WEIGHTS_DIR and recipe_dir("multimodal").parent == WEIGHTS_ROOT
    )
    spec = RECIPES["shipped"]
    digest = data_hash(split_train_val(corpus(spec.corpus, data_root))[0])
    dirs = seed_dirs(recipe_dir("multimodal"))
    assert [d.name for d in dirs] == ["seed0", "seed1", "seed2"]  # every model in each
    for d in dirs:
        want = _plain(dataclasses.replace(spec.train, seed=int(d.name[4:])).to_dict())
        for name in ("ipnet", *LEARNED_BASELINES):
            net, meta = load_checkpoint(d / f"{name}.pt")
            # the same readout for every model: 6 futures and deviations, the same recipe and budget
            assert net.cfg == dataclasses.replace(model_config(name), modes=6, uncertainty=True), name
            assert (meta["recipe"], meta["corpus"], meta["data_hash"]) == ("shipped", spec.corpus, digest)
            assert _plain(meta["train_config"]) == want, name
            # calibrated on the validation split: per-horizon factors, not the untouched ones, at the quantile
            # models.calibration chose
            assert not bool((net.std_scale == 1.0).all()), name
            assert meta["calibration"]["fit_quantile"] == FIT_QUANTILE, name


def test_the_pedestrian_folds_hold_out_their_scene(data_root) -> None:
    for scene in ETHUCY_SPLITS:
        train, _ = split_train_val(corpus(f"ethucy-loo:{scene}", data_root))
        assert not any(t.scene_id in ETHUCY_SPLITS[scene] for t in train)
        for name in ("ipnet", "gru", "lstm"):
            net, meta = load_checkpoint(WEIGHTS_ROOT / "ethucy_loo" / scene / "seed0" / f"{name}.pt")
            assert meta["corpus"] == f"ethucy-loo:{scene}" and meta["data_hash"] == data_hash(train)
            assert net.cfg == model_config(name)
        for name in ("ipnet", "gru", "lstm"):
            net, meta = load_checkpoint(
                WEIGHTS_ROOT / "multimodal_ethucy_loo" / scene / "seed0" / f"{name}.pt"
            )
            assert meta["corpus"] == f"ethucy-loo:{scene}" and meta["data_hash"] == data_hash(train)
            assert net.cfg.modes == 6 and net.cfg.uncertainty
            assert meta["calibration"]["fit_quantile"] == FIT_QUANTILE, (scene, name)
