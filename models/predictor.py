"""Batched streaming inference: the object the evaluation and the service both call.

The network runs through ``models.inference.InferenceStep`` (``TrajectoryNet.step`` with constants folded;
IPNet's MTJ layer compiled where it builds).

``Predictor.step`` advances B agents by one observation each and returns their world-frame futures.
The full per-agent state is plain data: ``kin`` (7 float64: last position, last velocity, heading, step
count) and ``memory`` (float32: neuron temperatures, or the recurrent hidden state).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_checkpoint
from models.inference import InferenceStep
from models.kinematics import KinState, cv_offsets, observe, to_world, to_world_with_prior
from models.motion import MotionConfig, MotionModel
from models.nets import ModelConfig, TrajectoryNet


@dataclass
class StepResult:
    kin: KinState
    memory: np.ndarray  # (B, M) float32
    trajectory: np.ndarray  # (B, H, 2) world metres at horizons_s after each observation
    energy_j: np.ndarray  # (B,) modeled physical energy of the memory update (IPNet), joules


def prior_offsets(kin: KinState, horizons_s: np.ndarray, cfg: ModelConfig | MotionConfig) -> np.ndarray:
    """What the network's output is added to: constant velocity, or nothing (``cv_prior=False``)."""
    cv = cv_offsets(kin, horizons_s)
    return cv if cfg.cv_prior else np.zeros_like(cv)


class Predictor:
    """A learned model (``TrajectoryNet``), a motion model (CA, CTRV) or constant velocity (neither) behind
    one streaming API."""

    def __init__(
        self,
        net: TrajectoryNet | MotionModel | None,
        name: str,
        version: str,
        cfg: MotionConfig | None = None,
        native: bool = True,
    ) -> None:
        """``native``: IPNet's MTJ layer through the compiled kernel where it builds (``models.native``)."""
        self.net: TrajectoryNet | None = net if isinstance(net, TrajectoryNet) else None
        self.motion_model: MotionModel | None = net if isinstance(net, MotionModel) else None
        self.name = name
        self.version = version
        self.cfg: ModelConfig | MotionConfig = net.cfg if net is not None else (cfg or MotionConfig())
        self.horizons_s = np.asarray(self.cfg.horizons_s)
        self.infer: InferenceStep | None = None
        if self.net is not None:
            self.net.eval()
            self.infer = InferenceStep(self.net, use_native=native)

    @property
    def sequence_model(self) -> TrajectoryNet | MotionModel | None:
        """What runs over whole sequences in evaluation (``forward_sequence``); None for constant velocity."""
        return self.net if self.net is not None else self.motion_model

    @property
    def native(self) -> bool:
        """Whether IPNet's MTJ layer runs the compiled kernel."""
        return self.infer is not None and self.infer.native

    @property
    def kind(self) -> str:
        """The model kind: ``ModelConfig.kind`` of a network, or cv / ca / ctrv."""
        return self.cfg.kind

    @property
    def is_thermal(self) -> bool:
        """Whether the memory is MTJ neurons (temperatures whose Joule heat the step itself reports)."""
        return isinstance(self.net, TrajectoryNet) and self.net.mtj is not None

    @classmethod
    def from_checkpoint(cls, path: str | Path, name: str | None = None, native: bool = True) -> Predictor:
        net, meta = load_checkpoint(path)
        return cls(net, name or net.cfg.kind, meta["version"], native=native)

    @classmethod
    def constant_velocity(cls) -> Predictor:
        return cls(None, "cv", "cv-1", MotionConfig.of("cv"))

    @classmethod
    def motion(cls, cfg: MotionConfig) -> Predictor:
        """A non-learned motion model (``models.motion``); CV takes the fast path (no state)."""
        if cfg.kind == "cv":
            return cls.constant_velocity()
        version = f"{cfg.kind}-1" + (f"-s{cfg.smoothing_s:g}" if cfg.smoothing_s else "")
        return cls(MotionModel(cfg), cfg.kind, version)

    @property
    def memory_size(self) -> int:
        model = self.sequence_model
        return model.memory_size if model is not None else 0

    def initial_memory(self, b: int) -> np.ndarray:
        model = self.sequence_model
        if model is None:
            return np.zeros((b, 0), dtype=np.float32)
        return model.initial_memory(b).numpy()

    @torch.inference_mode()  # not only no_grad: no version counters or view tracking either
    def step(
        self, kin: KinState, memory: np.ndarray, xy: np.ndarray, dt: np.ndarray, types: np.ndarray
    ) -> StepResult:
        """Advance B agents by one observation each (one batched forward)."""
        kin2, feats = observe(kin, xy, dt, types)
        energy = np.zeros(len(xy))
        dt_s = np.where(kin.n == 0, 0.0, dt)
        if self.infer is not None:
            mem_t, corr, energy = self.infer(torch.from_numpy(memory), torch.from_numpy(feats), dt_s)
        elif self.motion_model is not None:
            mem_t, corr, _ = self.motion_model.step(
                torch.from_numpy(memory), torch.from_numpy(feats), torch.from_numpy(dt_s)
            )
        else:
            return StepResult(
                kin2, memory, to_world(kin2, prior_offsets(kin2, self.horizons_s, self.cfg)), energy
            )
        if self.cfg.cv_prior:
            # + the constant-velocity prior, added in the world frame: rotating R^T v to the agent frame and
            # back is the identity, so the prior is just v h (one compiled pass with the rotation)
            world = to_world_with_prior(kin2, corr.numpy(), self.horizons_s)
        else:
            world = to_world(kin2, corr.numpy().astype(np.float64))
        return StepResult(kin2, mem_t.numpy(), world, energy)
