"""Models: the streaming step equals the batched sequence forward; the state is the only memory."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.catalog import CATALOG, LEARNED, model_config
from models.kinematics import KinState, type_indices
from models.nets import MODEL_KINDS, ModelConfig, TrajectoryNet
from models.predictor import Predictor
from models.windows import encode_sequences


def _random_tracks(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ts, xys, types = [], [], []
    for i in range(n):
        length = int(rng.integers(3, 25))
        dt = rng.choice([0.1, 0.2, 0.5], size=length) * rng.uniform(0.9, 1.1, size=length)
        t = 1000.0 + np.cumsum(dt)
        heading = rng.uniform(-np.pi, np.pi)
        speed = rng.uniform(0, 15)
        steps = np.array([np.cos(heading), np.sin(heading)])[None, :] * speed * dt[:, None] + rng.normal(
            0, 0.1, (length, 2)
        )
        xy = np.array([5000.0, -3000.0]) + np.cumsum(steps, axis=0)
        ts.append(t)
        xys.append(xy)
        types.append(["vehicle", "pedestrian", "cyclist", "unknown"][i % 4])
    return ts, xys, types


def _trained_like(name: str, modes: int = 1) -> TrajectoryNet:
    """A small net of a model name of the catalog (or of a bare kind) with every weight perturbed; with
    ``modes`` > 1 it has that many futures and deviations."""
    torch.manual_seed(1)
    base = ModelConfig(
        n_memory=16, d_embed=8, d_readout=16, pred_steps=10, modes=modes, uncertainty=modes > 1
    )
    net = TrajectoryNet(model_config(name, base) if name in CATALOG else replace(base, kind=name))
    # the readout starts at zero (pure constant velocity); perturb it so the memory matters
    with torch.no_grad():
        for prm in net.parameters():
            prm.add_(0.3 * torch.randn_like(prm))
    return net.eval()


@pytest.mark.parametrize(
    ("kind", "modes"), [*((k, 1) for k in LEARNED), *((k, 6) for k in ("ipnet", "gru", "lstm", "ctgru"))]
)
def test_streaming_step_equals_sequence_forward(kind: str, modes: int) -> None:
    """Every mode, its probability and its deviations: the serving step gives what the batched forward does."""
    net = _trained_like(kind, modes)
    with torch.no_grad():
        net.std_scale.copy_(torch.linspace(0.5, 2.0, net.cfg.pred_steps))  # a calibration to carry
    ts, xys, types = _random_tracks(12)
    enc = encode_sequences(ts, xys, types)
    with torch.no_grad():
        seq = net.forward_sequence(
            torch.from_numpy(enc.feats), torch.from_numpy(enc.dt), torch.from_numpy(enc.valid)
        )
    seq_last = seq[torch.arange(len(ts)), torch.from_numpy(enc.last_index)]

    # one observation at a time, agents in a different order each step, as a server would see them
    pred = Predictor(net, kind, "test")
    kin = KinState.empty(len(ts))
    mem = pred.initial_memory(len(ts))
    last: list = [None] * len(ts)
    tindex = type_indices(types)
    for k in range(max(len(t) for t in ts)):
        idx = np.array([i for i in range(len(ts)) if k < len(ts[i])])
        sub_kin = KinState(kin.last_xy[idx], kin.last_v[idx], kin.heading[idx], kin.n[idx])
        xy = np.stack([xys[i][k] for i in idx])
        dt = np.array([ts[i][k] - ts[i][k - 1] if k else 0.0 for i in idx])
        res = pred.step(sub_kin, mem[idx], xy, dt, tindex[idx])
        kin.last_xy[idx], kin.last_v[idx], kin.heading[idx], kin.n[idx] = (
            res.kin.last_xy,
            res.kin.last_v,
            res.kin.heading,
            res.kin.n,
        )
        mem[idx] = res.memory
        for j, i in enumerate(idx):
            last[i] = (res.modes[j], res.probs[j], None if res.std is None else res.std[j])
    from models.kinematics import cv_offsets, to_world, world_std
    from models.predictor import repeat_kin

    b = len(ts)
    fc = pred.decode(seq_last, b, tindex)  # the batched forward's last step, decoded and sorted
    assert fc.corr.shape[1] == modes
    prior = cv_offsets(enc.kin_last, pred.horizons_s)[:, None]
    world = to_world(repeat_kin(enc.kin_last, modes), (prior + fc.corr).reshape(b * modes, -1, 2))
    np.testing.assert_allclose(np.stack([m for m, _, _ in last]), world.reshape(b, modes, -1, 2), atol=1e-4)
    probs = np.stack([p for _, p, _ in last])
    np.testing.assert_allclose(probs, fc.probs, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (np.diff(probs, axis=1) <= 1e-12).all()  # most probable first
    if modes == 1:
        assert last[0][2] is None and fc.std is None
    else:
        assert fc.std is not None
        np.testing.assert_allclose(
            np.stack([s for _, _, s in last]), world_std(enc.kin_last, fc.std), rtol=1e-5
        )


@pytest.mark.parametrize("kind", LEARNED)
def test_prediction_depends_on_history(kind: str) -> None:
    """Same last three observations, different past -> different prediction (memory is used); not for the
    no-heat ablation, whose devices cool completely between frames."""
    net = _trained_like(kind)
    pred = Predictor(net, kind, "test")
    t = np.arange(10) * 0.1
    straight = np.stack([t * 10.0, np.zeros_like(t)], 1)
    curved = straight.copy()
    curved[:7, 1] = np.linspace(-4, -0.5, 7)  # arrived from the side: the same last three points, so the
    # same newest kinematics (speed, acceleration, turn rate): only a memory tells the two apart
    outs = []
    for xy in (straight, curved):
        kin, mem = KinState.empty(1), pred.initial_memory(1)
        for k in range(len(t)):
            res = pred.step(kin, mem, xy[k : k + 1], np.array([0.1 if k else 0.0]), np.array([0]))
            kin, mem = res.kin, res.memory
        outs.append(res.trajectory[0])
    assert (np.abs(outs[0] - outs[1]).max() > 1e-3) == (kind != "ipnet_tau0")


def test_untrained_model_is_constant_velocity() -> None:
    net = TrajectoryNet(ModelConfig(kind="ipnet", n_memory=8, d_embed=8, d_readout=8, pred_steps=5)).eval()
    pred = Predictor(net, "ipnet", "x")
    kin, mem = KinState.empty(1), pred.initial_memory(1)
    for k, xy in enumerate([[0.0, 0.0], [1.0, 1.0]]):
        res = pred.step(kin, mem, np.array([xy]), np.array([0.5 if k else 0.0]), np.array([0]))
        kin, mem = res.kin, res.memory
    np.testing.assert_allclose(res.trajectory[0, -1], [1 + 2 * 0.5, 1 + 2 * 0.5], atol=1e-9)


def test_ipnet_memory_is_only_temperatures_and_finite() -> None:
    net = _trained_like("ipnet")
    assert net.memory_size == net.cfg.n_memory
    pred = Predictor(net, "ipnet", "x")
    kin, mem = KinState.empty(3), pred.initial_memory(3)
    assert np.allclose(mem, 300.0)
    xy = np.array([[0.0, 0.0], [1e5, -1e5], [3.0, 4.0]])
    for dt in (0.0, 0.1, 1e-6, 3600.0):
        res = pred.step(kin, mem, xy + dt, np.full(3, dt), np.array([0, 1, 2]))
        kin, mem = res.kin, res.memory
        assert np.isfinite(res.trajectory).all() and np.isfinite(mem).all()
        assert (mem >= 299.99).all() and (mem <= 450.01).all()


def test_interval_input_by_kind_and_checkpoint_migration(tmp_path) -> None:
    from models.checkpoint import load_checkpoint, save_checkpoint
    from models.kinematics import FEATURE_NAMES, N_FEATURES

    # IPNet knows time through its neurons only; the recurrent baselines get the interval as an input
    assert not ModelConfig(kind="ipnet").sees_interval
    assert ModelConfig(kind="gru").sees_interval and ModelConfig(kind="lstm").sees_interval
    assert ModelConfig(kind="ipnet", interval_input=True).sees_interval  # the ablation
    col = FEATURE_NAMES.index("log_dt_rel_100ms")
    feats = torch.randn(5, N_FEATURES)
    other = feats.clone()
    other[:, col] += 1.0
    for kind in MODEL_KINDS:
        net = _trained_like(kind)
        same = torch.equal(net.embed(feats), net.embed(other))
        assert same == (kind in ("ipnet", "leaky")), kind
    # a checkpoint written before the option existed: its IPNet saw the interval, and still does
    net = _trained_like("ipnet")
    save_checkpoint(tmp_path / "old.pt", net, {})
    ckpt = torch.load(tmp_path / "old.pt", weights_only=True)
    del ckpt["model_args"]["interval_input"]
    torch.save(ckpt, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")[0].cfg.sees_interval
    assert not load_checkpoint(_save(net, tmp_path / "new.pt"))[0].cfg.sees_interval


def _save(net: TrajectoryNet, path):
    from models.checkpoint import save_checkpoint

    save_checkpoint(path, net, {})
    return path


def test_continuous_time_memories_decay_over_the_real_interval() -> None:
    """CT-GRU: a long gap empties the hidden state before the update; the leaky control (no recurrent matrix)
    integrates over real time exactly: two half intervals with the same input equal one whole."""
    ct = _trained_like("ctgru")
    e = torch.randn(3, ct.cfg.d_embed)
    h = torch.randn(3, ct.memory_size)
    assert ct.ct is not None
    after_gap, _ = ct.ct(h, e, torch.full((3,), 1e4))
    from_zero, _ = ct.ct(torch.zeros_like(h), e, torch.full((3,), 1e4))
    torch.testing.assert_close(after_gap, from_zero)
    assert not torch.allclose(ct.ct(h, e, torch.full((3,), 0.1))[0], from_zero)
    leaky = _trained_like("leaky")
    assert leaky.ct is not None
    one, _ = leaky.ct(h, e, torch.full((3,), 0.4))
    half, _ = leaky.ct(leaky.ct(h, e, torch.full((3,), 0.2))[0], e, torch.full((3,), 0.2))
    torch.testing.assert_close(one, half, rtol=0, atol=1e-6)


def test_every_catalog_name_builds_its_configuration() -> None:
    for name, entry in CATALOG.items():
        if entry.role == "motion":
            with pytest.raises(ValueError, match="not a learned model"):
                model_config(name)
            continue
        cfg = model_config(name)
        for key, value in entry.overrides.items():
            assert getattr(cfg, key) == value, (name, key)
    shipped = model_config("ipnet")
    # the shipped IPNet: one time constant, one-polarity drive, nothing digital reads the temperatures back
    assert (shipped.tau, shipped.drive, shipped.lateral, shipped.sees_interval) == (
        "single",
        "sigmoid",
        "none",
        False,
    )
    with pytest.raises(ValueError, match="unknown lateral"):
        ModelConfig(lateral="sideways")


def test_a_step_asked_for_fewer_modes_returns_the_most_probable_ones_unchanged() -> None:
    net = _trained_like("ipnet", 6)
    pred = Predictor(net, "ipnet", "test")
    _, xys, types = _random_tracks(5)
    tindex = type_indices(types)
    kin, mem = KinState.empty(5), pred.initial_memory(5)
    for k in range(4):
        xy = np.stack([x[k] for x in xys])
        full = pred.step(kin, mem, xy, np.full(5, 0.1 if k else 0.0), tindex)
        two = pred.step(kin, mem, xy, np.full(5, 0.1 if k else 0.0), tindex, modes=2)
        kin, mem = full.kin, full.memory
    assert two.modes.shape[1] == 2 and two.std is not None and full.std is not None
    np.testing.assert_array_equal(two.modes, full.modes[:, :2])
    np.testing.assert_array_equal(two.probs, full.probs[:, :2])
    np.testing.assert_array_equal(two.std, full.std[:, :2])
    np.testing.assert_array_equal(two.memory, full.memory)
