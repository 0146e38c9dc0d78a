"""Calibrated deviations: fitted on the validation split (a learned model's at ``FIT_QUANTILE`` of its true
points, a motion model's at 95%); ``ipnet calibrate --weights`` refits a trained checkpoint in place; the motion
models' shipped table grows with the horizon and holds on the held-out AV2 logs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models import corpus as corpora
from models.calibration import (
    FIT_QUANTILE,
    calibration_protocol,
    fit_motion_deviations,
    fit_std_scale,
    motion_deviations,
    point_coverage,
)
from models.checkpoint import load_checkpoint, save_checkpoint, state_fingerprint
from models.evaluate import Protocol, evaluate_models
from models.motion import MOTION_KINDS, MotionConfig
from models.nets import ModelConfig
from models.predictor import Predictor
from models.train import TrainConfig, Trainer
from service import cli


@pytest.fixture(scope="module")
def val(data_root):
    return corpora.split_train_val(corpora.corpus("shipped", data_root))[1]


def _coverage(pred: Predictor, tracks, proto: Protocol) -> float:
    ev = evaluate_models(tracks, {"m": pred}, proto)
    return ev.scores["m"].per_window["coverage"].mean


def test_a_fitted_motion_table_covers_95_percent_of_its_own_split(val):
    table = fit_motion_deviations(Predictor.motion(MotionConfig.of("cv"), std=np.ones((4, 50, 2))), val)
    assert table.shape == (4, 50, 2) and (table > 0).all()
    assert (np.diff(table, axis=1) >= 0).all()  # never shrinking with the horizon
    cover = point_coverage(Predictor.motion(MotionConfig.of("cv"), std=table), val)
    assert cover == pytest.approx(0.95, abs=0.01)


@pytest.mark.parametrize("kind", MOTION_KINDS)
def test_the_shipped_motion_deviations_hold_on_the_held_out_logs(kind: str, data_root):
    table = motion_deviations(kind)
    assert table is not None, "models/weights/motion_deviations.json: run ipnet calibrate"
    # vehicles: wider along the heading than across it at every horizon past the first second
    assert (table[0, 9:, 0] >= table[0, 9:, 1]).all()
    cover = _coverage(
        Predictor.motion(MotionConfig.of(kind)), corpora.test_set("shipped", data_root), Protocol()
    )
    assert 0.90 <= cover <= 0.99, cover


@pytest.fixture(scope="module")
def tiny_net():
    """A learned model with deviations, trained for one epoch on a slice (not calibrated)."""
    torch.manual_seed(0)
    tracks, _ = corpora.split_train_val(corpora.corpus("shipped"))
    cfg = ModelConfig(d_embed=8, n_memory=8, d_readout=16, modes=3, uncertainty=True)
    return Trainer(cfg, TrainConfig(epochs=1, threads=2), progress=False).fit(tracks[:300])


def test_a_trained_models_deviations_are_calibrated_on_the_validation_split(val, tiny_net):
    net, cfg = copy.deepcopy(tiny_net), tiny_net.cfg
    pred = Predictor(net, "ipnet", "test")
    before = point_coverage(pred, val)
    scale = fit_std_scale(pred, val)
    assert scale.shape == (cfg.pred_steps,) and (scale > 0).all()
    net.std_scale.copy_(torch.from_numpy(scale).float())
    after = point_coverage(Predictor(net, "ipnet", "test"), val)
    assert after == pytest.approx(FIT_QUANTILE, abs=0.01), (before, after)
    # per window (``ipnet evaluate``'s coverage_95), on the same windows: near it, not equal
    assert _coverage(Predictor(net, "ipnet", "test"), val, calibration_protocol()) == pytest.approx(
        FIT_QUANTILE, abs=0.04
    )
    # a lower quantile gives narrower ellipses at every horizon that has points
    assert (fit_std_scale(pred, val, quantile=0.9) <= scale + 1e-9).all()


def test_ipnet_calibrate_refits_a_trained_checkpoint_in_place(val, tiny_net, tmp_path, capsys):
    path = tmp_path / "ipnet.pt"
    save_checkpoint(path, tiny_net, {"name": "ipnet", "corpus": "shipped", "train_seconds": 1.0})
    before = path.read_bytes()
    assert cli.main(["calibrate", "--weights", str(tmp_path)]) == 0
    assert str(path) in capsys.readouterr().out
    net, meta = load_checkpoint(path)
    assert meta["calibration"]["fit_quantile"] == FIT_QUANTILE and meta["train_seconds"] == 1.0
    assert meta["version"] != f"ipnet-{state_fingerprint(tiny_net.state_dict())[:10]}"
    assert not torch.equal(net.std_scale, tiny_net.std_scale)
    assert point_coverage(Predictor(net, "ipnet", "test"), val) == pytest.approx(FIT_QUANTILE, abs=0.01)
    # the rest of the model is the trained one: only the factors changed
    assert all(
        torch.equal(v, tiny_net.state_dict()[k]) for k, v in net.state_dict().items() if k != "std_scale"
    )
    assert path.read_bytes() != before


def test_ipnet_calibrate_refuses_what_it_cannot_calibrate(tiny_net, tmp_path, capsys):
    no_corpus = tmp_path / "no_corpus.pt"
    save_checkpoint(no_corpus, tiny_net, {"name": "ipnet"})
    before = no_corpus.read_bytes()
    assert cli.main(["calibrate", "--weights", str(no_corpus)]) == 2
    assert "names no corpus" in capsys.readouterr().err
    assert no_corpus.read_bytes() == before  # nothing written
    assert cli.main(["calibrate", "--weights", str(tmp_path / "absent")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
