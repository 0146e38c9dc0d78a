"""The serving step (``models.inference``) and IPNet's compiled MTJ kernel (``models.native``) against the
torch definition (``TrajectoryNet.step``): same memory, corrections and energy to float32 rounding, over the
device's whole temperature range, saturated drives, dropped frames, every model kind and the fallbacks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models import native
from models.data import load_tracks
from models.inference import InferenceStep
from models.kinematics import KinState, type_indices
from models.mtj import MTJParams
from models.nets import ModelConfig, TrajectoryNet
from models.predictor import Predictor
from tests.support import AV2_LOG

P = MTJParams()


@pytest.fixture
def fresh_load() -> Iterator[None]:
    """``native.load`` is cached per process: clear it around a test that changes its environment."""
    native.load.cache_clear()
    yield
    native.load.cache_clear()


def _net(seed: int = 0, **cfg: object) -> TrajectoryNet:
    torch.manual_seed(seed)
    net = TrajectoryNet(ModelConfig(**cfg))  # type: ignore[arg-type]
    with torch.no_grad():  # a trained-looking net: every weight non-zero, the lateral coupling included
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return net.eval()


def _frame(net: TrajectoryNet, b: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Temperatures over [T0, T_max], features, and intervals: first observations, 10 Hz, 5 Hz, a 45 s gap
    (longer than the drive window: the cooling branch)."""
    g = torch.Generator().manual_seed(seed)
    if net.mtj is not None:
        p = net.mtj.params
        memory = p.t0_k + torch.rand(b, net.memory_size, generator=g) * (p.t_max_k - p.t0_k)
    else:
        memory = torch.randn(b, net.memory_size, generator=g)
    feats = torch.randn(b, net.cfg.n_features, generator=g) * 2.0
    dt = np.resize(np.array([0.0, 0.1, 0.2, 0.1, 45.0, 0.05]), b)
    return memory, feats, dt


def _compare(net: TrajectoryNet, step: InferenceStep, b: int = 257) -> None:
    memory, feats, dt = _frame(net, b)
    with torch.inference_mode():
        mem_ref, corr_ref, e_ref = net.step(memory, feats, torch.from_numpy(dt.astype(np.float32)))
        mem, corr, e = step(memory, feats, dt)
    scale = 1.0 if net.mtj is None else net.mtj.params.t_max_k
    assert torch.allclose(mem, mem_ref, rtol=0, atol=2e-6 * scale), (mem - mem_ref).abs().max()
    assert torch.allclose(corr, corr_ref, rtol=1e-4, atol=2e-4), (corr - corr_ref).abs().max()
    np.testing.assert_allclose(e, e_ref.numpy(), rtol=1e-4, atol=1e-30)


@pytest.mark.parametrize(
    "cfg",
    [
        {},  # the shipped kind: one time constant, no lateral coupling, readout of the temperatures
        {"readout": "both"},  # the temperatures and the switching probabilities
        {"lateral": "dense"},  # the learned lateral matrix (an ablation)
        {"tau_scale": 1e-3},  # the no-heat ablation: every frame cools completely
        # a hotter drive: the steady state can pass T_max, so the layer clamps (the kernel's clamp branch)
        {"mtj": {**P.to_dict(), "v_max_v": 0.9}},
    ],
    ids=["shipped-kind", "readout-both", "dense-lateral", "no-heat", "clamped"],
)
def test_kernel_step_equals_the_torch_step(cfg: dict) -> None:
    net = _net(**cfg)
    step = InferenceStep(net, use_native=True)
    assert step.native, "the kernel did not build on this machine (gcc is a test dependency)"
    if "mtj" in cfg:
        assert net.mtj is not None and net.mtj.needs_clamp
    _compare(net, step)


def test_kernel_saturated_drives_and_single_agent() -> None:
    net = _net(seed=3)
    with torch.no_grad():
        net.mtj.drive.weight.mul_(40.0)  # type: ignore[union-attr]  # pre-activations far past +-30
    step = InferenceStep(net, use_native=True)
    assert step.native, "the kernel did not build on this machine (gcc is a test dependency)"
    _compare(net, step, b=1)
    _compare(net, step, b=64)


@pytest.mark.parametrize(
    "cfg",
    [
        {"kind": "gru"},
        {"kind": "lstm"},
        {"tau": "spread"},  # one time constant per neuron: the torch form
        {"tau": "learned"},
        {"lateral": "diffusion"},
        {"drive": "tanh"},
        {"readout": "p_switch"},  # the torch form
        {"kind": "gru", "interval_input": False},
        {"kind": "ctgru"},
        {"kind": "leaky"},
        {"kind": "leaky", "lateral": "dense"},
    ],
    ids=[
        "gru",
        "lstm",
        "ipnet-tau-spread",
        "ipnet-tau-learned",
        "ipnet-diffusion",
        "ipnet-bipolar",
        "ipnet-p-switch-readout",
        "gru-no-interval",
        "ctgru",
        "leaky",
        "leaky-rnn",
    ],
)
def test_torch_form_steps_equal_the_definition(cfg: dict) -> None:
    net = _net(**cfg)
    step = InferenceStep(net, use_native=True)
    assert not step.native
    _compare(net, step)


def test_disabled_kernel_gives_the_torch_form() -> None:
    net = _net()
    assert not InferenceStep(net, use_native=False).native
    _compare(net, InferenceStep(net, use_native=False))


def test_shipped_predictors_agree_with_and_without_the_kernel_on_a_real_log(
    data_root: Path, weights: Path
) -> None:
    tracks = [tr for tr in load_tracks(data_root / "av2" / "raw" / "sensor_logs" / AV2_LOG) if len(tr) >= 30]
    assert len(tracks) >= 10
    n = 30
    xy = np.stack([tr.xy[:n] for tr in tracks], axis=1)  # (n, B, 2)
    t = np.stack([tr.t[:n] for tr in tracks], axis=1)
    types = type_indices([tr.agent_type for tr in tracks])
    fast = Predictor.from_checkpoint(weights / "ipnet.pt", native=True)
    slow = Predictor.from_checkpoint(weights / "ipnet.pt", native=False)
    assert fast.infer is not None and fast.infer.native
    assert slow.infer is not None and not slow.infer.native
    b = len(tracks)
    states = {p: (KinState.empty(b), p.initial_memory(b)) for p in (fast, slow)}
    worst_m, worst_k = 0.0, 0.0
    for k in range(n):
        dt = t[k] - t[k - 1] if k else np.zeros(b)
        out = {}
        for p, (kin, mem) in states.items():
            r = p.step(kin, mem, xy[k], dt, types)
            states[p] = (r.kin, r.memory)
            out[p] = r
        worst_m = max(worst_m, float(np.abs(out[fast].trajectory - out[slow].trajectory).max()))
        worst_k = max(worst_k, float(np.abs(out[fast].memory - out[slow].memory).max()))
        np.testing.assert_allclose(out[fast].energy_j, out[slow].energy_j, rtol=1e-4)
    assert worst_m < 1e-3, f"trajectories differ by {worst_m} m"  # a millimetre, on metre-scale errors
    assert worst_k < 1e-3, f"temperatures differ by {worst_k} K"
    assert float(states[fast][1].max()) > P.t0_k + 1.0  # the neurons did heat: the comparison is not vacuous


def test_build_is_cached_and_a_cached_build_needs_no_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = native.build(tmp_path)
    assert first.is_file() and first.parent == tmp_path
    stamp = first.stat().st_mtime_ns
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert native.build(tmp_path) == first and first.stat().st_mtime_ns == stamp
    with pytest.raises(RuntimeError, match="no-such-compiler"):
        native.build(tmp_path / "empty")


def test_a_failing_compiler_is_an_error_with_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\necho 'cc: broken on purpose' >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    with pytest.raises(RuntimeError, match="broken on purpose"):
        native.build(tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.so"))


def test_without_a_compiler_the_service_keeps_the_torch_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh_load: None
) -> None:
    monkeypatch.setenv("IPNET_KERNEL_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger="models.native"):
        assert native.load() is None
    assert "using the torch form" in caplog.text
    net = _net()
    step = InferenceStep(net, use_native=True)
    assert not step.native
    _compare(net, step)
