"""The serving step (``models.inference``) and IPNet's compiled MTJ kernel (``models.native``) against the
torch definition (``TrajectoryNet.step``): same memory, corrections and energy to float32 rounding, over the
device's whole temperature range, saturated drives, dropped frames, every model kind and the fallbacks."""

from __future__ import annotations

import logging
import os
import runpy
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from tests.support import AV2_LOG, REPO

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


def test_the_kernels_are_extensions_built_with_the_package() -> None:
    # the package's build (pip install, editable or not) compiles them: nothing is compiled at run time
    import models._mtj_native
    import service._frame_reader_native
    import service._points_json_native

    for mod in (models._mtj_native, service._points_json_native, service._frame_reader_native):
        assert Path(mod.__file__).suffix == ".so"
    ext = native.load()
    assert ext is not None and ext.lib.mtj_frame is models._mtj_native.lib.mtj_frame


@pytest.mark.slow
def test_the_wheel_carries_the_extensions_and_installs_without_a_compiler(tmp_path: Path) -> None:
    # a copy of the sources without weights, previous builds or in-place extensions: each build starts clean
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("weights", "__pycache__", "*.so", "build", "*.egg-info")
    for name in ("models", "service", "clients"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)

    def wheel_extensions(out: str, **env: str) -> list[str]:
        cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q"]
        done = subprocess.run(
            [*cmd, "-w", str(tmp_path / out)], env={**os.environ, **env}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        shutil.rmtree(src / "build", ignore_errors=True)
        [whl] = (tmp_path / out).glob("*.whl")
        return sorted(n.split(".")[0] for n in zipfile.ZipFile(whl).namelist() if n.endswith(".so"))

    assert wheel_extensions("with-cc") == [
        "models/_mtj_native",
        "service/_frame_reader_native",
        "service/_points_json_native",
    ]
    # no compiler: the extensions are optional, the wheel is made without them (the service falls back)
    assert wheel_extensions("no-cc", CC=str(tmp_path / "no-such-compiler")) == []


def _builder(name: str, cdef: tuple[str, str] | None = None) -> Any:
    """``models/native_build.py``'s builder ``name`` (run by path, as the package's build does), its paths made
    absolute (``compile`` works in its own directory) and, with ``cdef = (old, new)``, its declaration edited."""
    import cffi

    good = runpy.run_path(str(REPO / "models" / "native_build.py"))[name]
    decl = good._cdefsources[0]
    if cdef is not None:
        assert cdef[0] in decl
        decl = decl.replace(*cdef)
    module, source, _, kwargs = good._assigned_source
    kwargs = dict(kwargs)
    for key in ("sources", "include_dirs"):
        kwargs[key] = [str(REPO / p) for p in kwargs[key]]
    ffi = cffi.FFI()
    ffi.cdef(decl)
    ffi.set_source(module, source, **kwargs)
    return ffi


@pytest.mark.parametrize(
    ("builder", "old", "new"),
    [
        # a parameter dropped from the declaration
        (
            "mtj_builder",
            "int64_t out_stride,\n                   float *drive_sq_sum);",
            "int64_t out_stride);",
        ),
        # a pointer declared as another type
        ("writer_builder", "char *out, int64_t *ends", "char *out, double *ends"),
        # a struct field the C does not have
        ("mtj_builder", "float ln_eps;", "float eps;"),
    ],
)
def test_a_declaration_that_drifts_from_the_c_fails_the_build(
    builder: str, old: str, new: str, tmp_path: Path
) -> None:
    import cffi

    # as declared, it builds: the failure below is the drift's
    assert Path(_builder(builder).compile(tmpdir=str(tmp_path / "good"))).is_file()
    with pytest.raises(cffi.VerificationError, match="CompileError"):
        _builder(builder, (old, new)).compile(tmpdir=str(tmp_path / "drifted"))


def test_without_the_extension_the_service_keeps_the_torch_form(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh_load: None
) -> None:
    monkeypatch.setitem(sys.modules, "models._mtj_native", None)  # as if never built: the import fails
    with caplog.at_level(logging.WARNING, logger="models.native"):
        assert native.load() is None
    assert "is not built" in caplog.text and "using the torch form" in caplog.text
    net = _net()
    step = InferenceStep(net, use_native=True)
    assert not step.native
    _compare(net, step)
