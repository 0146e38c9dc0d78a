"""The shipped weights: loadable safely, trained on the documented corpus (data hash), better than CV."""

from __future__ import annotations

from models.checkpoint import load_checkpoint, shipped_path
from models.corpus import corpus, split_train_val
from models.nets import ModelConfig
from models.train import data_hash

KINDS = ("ipnet", "gru", "lstm")


def test_shipped_checkpoints_carry_their_config_and_the_hash_of_their_data(data_root) -> None:
    train, _ = split_train_val(corpus("shipped", data_root))
    digest = data_hash(train)
    metas = {}
    for kind in KINDS:
        net, meta = load_checkpoint(shipped_path(kind))
        assert meta["model_args"]["kind"] == kind
        assert ModelConfig(**meta["model_args"]) == net.cfg
        assert meta["corpus"] == "shipped"
        assert meta["data_hash"] == digest, f"{kind} was not trained on the current 'shipped' corpus"
        assert meta["version"].startswith(kind + "-")
        metas[kind] = meta
    # same tuning budget: width, epochs, learning rate, seed and augmentation are identical across models
    budget = {
        k: (
            m["model_args"]["n_memory"],
            m["train_config"]["epochs"],
            m["train_config"]["lr"],
            m["train_config"]["seed"],
            m["train_config"]["augment"],
        )
        for k, m in metas.items()
    }
    assert len(set(budget.values())) == 1, budget
