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
        # checkpoints written before interval_input existed load with the interval (load_checkpoint migrates)
        assert ModelConfig(**{"interval_input": True, **meta["model_args"]}) == net.cfg
        # IPNet knows time through its neurons; the baselines see the interval
        assert net.cfg.sees_interval == (kind != "ipnet")
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
            m["train_config"].get("augment_noise", True),
        )
        for k, m in metas.items()
    }
    assert len(set(budget.values())) == 1, budget
    # the shipped recipe: degraded rates, drops and jitter, no position noise (see the model card)
    assert next(iter(budget.values()))[-2:] == (True, False)


def test_companion_weights_match_their_experiments(data_root) -> None:
    """The 10 Hz-only, clean-stream and noise-augmented weights of the model card: corpus, budget, inputs."""
    from models.checkpoint import WEIGHTS_DIR

    ten_hz, _ = split_train_val(corpus("10hz", data_root))
    for folder, corpus_name, augment, noise in (
        ("rate_10hz", "10hz", False, True),
        ("clean", "shipped", False, True),
        ("augmented", "shipped", True, True),
    ):
        budgets = set()
        for kind in KINDS:
            net, meta = load_checkpoint(WEIGHTS_DIR / folder / f"{kind}.pt")
            assert meta["corpus"] == corpus_name and meta["train_config"]["augment"] is augment
            # checkpoints from before the option trained with noise whenever they augmented
            assert meta["train_config"].get("augment_noise", True) is noise, (folder, kind)
            assert net.cfg.sees_interval == (kind != "ipnet"), (folder, kind)
            budgets.add((meta["model_args"]["n_memory"], meta["train_config"]["epochs"], meta["data_hash"]))
            if corpus_name == "10hz":
                assert meta["data_hash"] == data_hash(ten_hz)
        assert len(budgets) == 1, (folder, budgets)
    for scene in ("eth", "hotel", "univ", "zara1", "zara2"):
        for kind in KINDS:
            _, meta = load_checkpoint(WEIGHTS_DIR / "ethucy_loo_augmented" / scene / f"{kind}.pt")
            assert meta["corpus"] == f"ethucy-loo:{scene}" and meta["train_config"]["augment"] is True
    # the interval ablations: the same IPNet, but its encoder sees the interval
    for path in ("rate_10hz/interval_input/ipnet.pt", "ablation/interval_input/ipnet.pt"):
        assert load_checkpoint(WEIGHTS_DIR / path)[0].cfg.sees_interval
    # the readout ablations: the shipped IPNet's data and budget, a readout that senses one signal
    shipped, shipped_meta = load_checkpoint(WEIGHTS_DIR / "ipnet.pt")
    assert shipped.cfg.readout == "both"
    for readout in ("temperature", "p_switch"):
        net, meta = load_checkpoint(WEIGHTS_DIR / "ablation" / f"readout_{readout}" / "ipnet.pt")
        assert net.cfg.readout == readout and net.readout[0].in_features == net.cfg.d_embed + net.cfg.n_memory
        assert meta["data_hash"] == shipped_meta["data_hash"]
        assert meta["train_config"] == shipped_meta["train_config"]


def test_robustness_claims_of_issue_7_hold_on_the_held_out_vehicles(data_root) -> None:
    """The claims the model card checks, re-measured on AV2 (all vehicle windows, held out from training):
    the shipped IPNet stays below constant velocity under every stream degradation of the card, and models
    trained at 10 Hz only keep IPNet at least 12.4% below the better recurrent baseline at 5 and 2 Hz."""
    from models.card import MODELS, RATE_VARIANTS, UNSEEN_RATES, VEHICLE_VARIANTS, robustness_rows
    from models.checkpoint import WEIGHTS_DIR
    from models.corpus import test_set
    from models.evaluate import ade_reduction
    from models.pipeline import load_predictors

    av2 = test_set("shipped", data_root)
    shipped = robustness_rows(load_predictors(list(MODELS)), av2, VEHICLE_VARIANTS, moving=(False,))
    for row in shipped:
        m = row["result"]["models"]
        assert m["ipnet"]["ade_m"] < m["cv"]["ade_m"], (row["name"], m["ipnet"]["ade_m"], m["cv"]["ade_m"])
    unseen = [(n, p) for n, p in RATE_VARIANTS if n in UNSEEN_RATES]
    ten_hz = load_predictors(list(MODELS), WEIGHTS_DIR / "rate_10hz")
    for row in robustness_rows(ten_hz, av2, unseen, moving=(False,)):
        red = ade_reduction(row["result"])
        assert red is not None and red >= 0.124, (row["name"], red)
