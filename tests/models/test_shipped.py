"""The shipped weights: every model of every recipe and seed, loadable safely, each trained on its recipe's
corpus (data hash) with the recipe's budget; the service serves the shipped recipe's seed 0."""

from __future__ import annotations

import dataclasses

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


def test_the_service_serves_seed_0_of_the_shipped_recipe() -> None:
    assert recipe_dir("shipped") / "seed0" == WEIGHTS_DIR and recipe_dir("shipped").parent == WEIGHTS_ROOT
    for name in ("ipnet", *LEARNED_BASELINES):
        assert (WEIGHTS_DIR / f"{name}.pt").is_file(), name


def test_the_pedestrian_folds_hold_out_their_scene(data_root) -> None:
    for scene in ETHUCY_SPLITS:
        train, _ = split_train_val(corpus(f"ethucy-loo:{scene}", data_root))
        assert not any(t.scene_id in ETHUCY_SPLITS[scene] for t in train)
        for name in ("ipnet", "gru", "lstm"):
            net, meta = load_checkpoint(WEIGHTS_ROOT / "ethucy_loo" / scene / "seed0" / f"{name}.pt")
            assert meta["corpus"] == f"ethucy-loo:{scene}" and meta["data_hash"] == data_hash(train)
            assert net.cfg == model_config(name)
