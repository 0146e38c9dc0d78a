"""Training on a small real slice: determinism, learning, checkpoints that carry their config and data hash."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
import torch

import models.train as train_module
from models.checkpoint import load_checkpoint, save_checkpoint
from models.data import load_tracks
from models.evaluate import Protocol, evaluate
from models.nets import Forecast, ModelConfig
from models.predictor import Predictor
from models.train import TrainConfig, Trainer, data_hash, forecast_loss, loss_weights

TINY = ModelConfig(d_embed=8, n_memory=8, d_readout=16, pred_steps=30)
FAST = TrainConfig(epochs=3, batch_size=32, chunk_len=25, chunk_stride=15, lr=5e-3, threads=1)


@pytest.fixture(scope="module")
def slice_tracks(data_root):
    tracks = load_tracks(
        data_root / "kitti" / "normalized" / "kitti_tracking_10hz.csv", agent_types=["vehicle"]
    )
    return [t for t in tracks if t.scene_id in ("kitti_0011", "kitti_0020") and len(t.t) >= 40][:60]


def test_training_is_deterministic_and_learns(slice_tracks) -> None:
    cfg = dataclasses.replace(TINY, kind="ipnet")
    a = Trainer(cfg, FAST, progress=False)
    net_a = a.fit(slice_tracks, slice_tracks[:10])
    b = Trainer(cfg, FAST, progress=False)
    net_b = b.fit(slice_tracks, slice_tracks[:10])
    for (k, va), (_, vb) in zip(net_a.state_dict().items(), net_b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), k
    assert a.history == b.history
    # the untrained model is constant velocity: training must improve on it on the data it saw
    res = evaluate(
        slice_tracks,
        {"ipnet": Predictor(net_a, "ipnet", "t"), "cv": Predictor.constant_velocity()},
        Protocol(),
    )["models"]
    assert res["ipnet"]["n_windows"] > 50
    assert res["ipnet"]["ade_m"] < res["cv"]["ade_m"]


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_recurrent_baselines_train_with_the_same_budget(slice_tracks, kind) -> None:
    net = Trainer(
        dataclasses.replace(TINY, kind=kind), dataclasses.replace(FAST, epochs=1), progress=False
    ).fit(slice_tracks)
    assert net.cfg.kind == kind and net.cfg.n_memory == TINY.n_memory


def test_checkpoint_round_trip_carries_model_args_and_data_hash(slice_tracks, tmp_path) -> None:
    net = Trainer(
        dataclasses.replace(TINY, kind="gru"), dataclasses.replace(FAST, epochs=1), progress=False
    ).fit(slice_tracks)
    digest = data_hash(slice_tracks)
    ckpt = save_checkpoint(tmp_path / "gru.pt", net, {"data_hash": digest, "train_config": FAST.to_dict()})
    loaded, meta = load_checkpoint(tmp_path / "gru.pt")
    assert meta["model_args"] == net.cfg.to_dict()
    assert meta["data_hash"] == digest and meta["version"] == ckpt["version"]
    for (k, va), (_, vb) in zip(net.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(va, vb), k


def test_data_hash_changes_with_the_data(slice_tracks) -> None:
    h = data_hash(slice_tracks)
    assert h == data_hash(list(reversed(slice_tracks)))  # order-independent
    moved = dataclasses.replace(slice_tracks[0], xy=slice_tracks[0].xy + np.array([0.0, 1e-3]))
    assert data_hash([moved, *slice_tracks[1:]]) != h


def test_checkpoints_refuse_pickled_objects(tmp_path) -> None:
    # any class outside torch's allow-list stands for code a pickle could run on load
    torch.save({"format": 1, "evil": argparse.Namespace(cmd="rm -rf /")}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match=r"(?i)weights_only|unsupported|global"):
        load_checkpoint(tmp_path / "evil.pt")


def test_augmentation_without_noise_keeps_recorded_positions(slice_tracks) -> None:
    """The shipped recipe degrades rates, drops and timing but never moves a recorded position."""
    from models.train import build_training_set

    horizons = np.asarray(TINY.horizons_s)
    recorded = {tuple(np.round(p, 9)) for t in slice_tracks for p in t.xy}

    def first_positions(cfg: TrainConfig) -> set[tuple[float, ...]]:
        # the encoded features do not keep positions: rebuild the perturbed chunks with the same rng draws
        from models import train as tr

        seen: list[np.ndarray] = []
        orig = tr.perturb_observed

        def spy(t, xy, pert, rng):
            out = orig(t, xy, pert, rng)
            seen.append(out[1])
            return out

        tr.perturb_observed = spy
        try:
            build_training_set(slice_tracks, cfg, horizons, np.random.default_rng(0))
        finally:
            tr.perturb_observed = orig
        return {tuple(np.round(p, 9)) for xy in seen for p in xy}

    quiet = first_positions(dataclasses.replace(FAST, augment=True, augment_noise=False))
    noisy = first_positions(dataclasses.replace(FAST, augment=True))
    assert quiet <= recorded
    assert not noisy <= recorded  # with noise, some positions are moved


def test_time_weighting_counts_seconds_not_observations(slice_tracks) -> None:
    """With ``loss_weight="time"`` a chunk resampled to 2 Hz weighs each step by the 0.5 s it closes (five
    10 Hz steps), so the low-rate copies of the streams are not drowned by the recorded rate."""
    from models.train import build_training_set

    horizons = np.asarray(TINY.horizons_s)
    tracks = slice_tracks[:20]
    cfg = dataclasses.replace(
        FAST, augment=True, augment_noise=False, augment_rate_prob=1.0, augment_rates_hz=(2.0,)
    )
    step = build_training_set(
        tracks, dataclasses.replace(cfg, loss_weight="step"), horizons, np.random.default_rng(0)
    )
    timed = build_training_set(
        tracks, dataclasses.replace(cfg, loss_weight="time"), horizons, np.random.default_rng(0)
    )
    supervised = step.tmask > 0
    assert torch.equal(supervised, timed.tmask > 0)  # the same targets, weighed differently
    assert set(torch.unique(step.tmask[supervised]).tolist()) == {1.0}
    ratio = (timed.tmask / step.tmask.clamp(min=1e-9))[..., 0]  # (C, L): one weight per step
    dt = timed.dt
    steps = supervised[..., 0]
    slow, fast = steps & (dt > 0.45) & (dt < 0.55), steps & (dt < 0.15)
    assert int(slow.sum()) > 50 and int(fast.sum()) > 50  # both kinds of chunk are there
    # the recorded streams are 10 Hz: a 0.5 s step weighs about five recorded steps, a 0.1 s step one
    assert float(ratio[slow].min()) > 4.0 and float(ratio[slow].max()) < 6.0
    assert float(ratio[fast].max()) < 1.5
    with pytest.raises(ValueError, match="loss_weight"):
        build_training_set(
            tracks, dataclasses.replace(cfg, loss_weight="loud"), horizons, np.random.default_rng(0)
        )


def test_the_train_command_writes_every_seed_and_evaluate_reads_them(slice_tracks, tmp_path) -> None:
    import csv
    import json
    import subprocess
    import sys

    data = tmp_path / "slice.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scene_id", "agent_id", "agent_type", "t_s", "x_m", "y_m"])
        for tr in slice_tracks[:30]:
            for t, (x, y) in zip(tr.t, tr.xy, strict=True):
                w.writerow([tr.scene_id, tr.agent_id, tr.agent_type, f"{t:.3f}", f"{x:.3f}", f"{y:.3f}"])
    out = tmp_path / "weights"

    def ipnet(*args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr
        return run.stdout

    ipnet(
        "train",
        "--data",
        str(data),
        "--recipe",
        "10hz",
        "--models",
        "ipnet,gru_nodt",
        "--seeds",
        "0,1",
        "--epochs",
        "1",
        "--n-memory",
        "8",
        "--threads",
        "1",
        "--out",
        str(out),
        "--quiet",
    )
    for seed in (0, 1):
        for name in ("ipnet", "gru_nodt"):
            net, meta = load_checkpoint(out / f"seed{seed}" / f"{name}.pt")
            assert meta["name"] == name and meta["recipe"] == "10hz" and meta["train_config"]["seed"] == seed
            assert meta["loss_weights"] == loss_weights()
            assert net.cfg.n_memory == 8 and meta["version"].startswith(f"{name}-")
    res = json.loads(
        ipnet(
            "evaluate", "--data", str(data), "--weights", str(out), "--models", "ipnet,gru_nodt,cv", "--json"
        )
    )
    assert res["models"]["ipnet"]["n_seeds"] == 2 and res["models"]["cv"]["n_seeds"] == 1
    assert res["ipnet_vs_best_baseline"]["baseline"] == "gru_nodt"
    lo, hi = res["ipnet_vs_best_baseline"]["ci95"]
    assert lo <= res["ipnet_vs_best_baseline"]["ade_reduction"] <= hi


def _forecast(k: int = 3, h: int = 4, seed: int = 0) -> tuple[Forecast, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randn(5, k, h, 2, generator=g, requires_grad=True)
    logits = torch.randn(5, k, generator=g, requires_grad=True)
    target = torch.randn(5, h, 2, generator=g)
    weight = torch.ones(5, h)
    weight[0, 2:] = 0.0  # a window whose last points have no target
    return Forecast(offsets, None, logits), target, weight


def test_the_expected_displacement_term_is_the_probability_weighted_displacement(monkeypatch) -> None:
    forecast, target, weight = _forecast()
    monkeypatch.setattr(train_module, "TOP1_WEIGHT", 0.0)
    without = forecast_loss(forecast, target, weight)
    monkeypatch.setattr(train_module, "TOP1_WEIGHT", 0.5)
    with_term = forecast_loss(forecast, target, weight)
    dist = torch.linalg.vector_norm(forecast.offsets - target[:, None], dim=-1)  # (5, K, H)
    per_mode = (dist * weight[:, None]).sum(-1)  # (5, K)
    expected = (torch.softmax(forecast.logits, -1) * per_mode).sum() / weight.sum()
    torch.testing.assert_close(with_term - without, 0.5 * expected)
    # unlike winner-takes-all, it pulls every mode (by its probability), not the closest one only
    (g_off,) = torch.autograd.grad(with_term - without, forecast.offsets)
    assert (g_off.abs().sum(dim=(-1, -2)) > 0).all()


def test_one_mode_without_deviations_is_the_displacement_alone(monkeypatch) -> None:
    forecast, target, weight = _forecast(k=1)
    monkeypatch.setattr(train_module, "TOP1_WEIGHT", 0.5)
    dist = torch.linalg.vector_norm(forecast.offsets[:, 0] - target, dim=-1)
    torch.testing.assert_close(forecast_loss(forecast, target, weight), (dist * weight).sum() / weight.sum())
