"""Batched streaming inference: the object the evaluation and the service both call.

The network runs through ``models.inference.InferenceStep`` (``TrajectoryNet.step`` with constants folded;
IPNet's MTJ layer compiled where it builds).

``Predictor.step`` advances B agents by one observation each and returns their world-frame futures: K modes
sorted by probability (the first is the single-trajectory answer) and, where the model has them, standard
deviations per point. Motion models (CV, CA, CTRV) are one mode whose deviations grow with the horizon as
fitted on the validation split (``models.calibration``).
The full per-agent state is plain data: ``kin`` (7 float64: last position, last velocity, heading, step
count) and ``memory`` (float32: neuron temperatures, or the recurrent hidden state).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.calibration import motion_deviations
from models.checkpoint import load_checkpoint
from models.inference import InferenceStep
from models.kinematics import KinState, cv_offsets, observe, to_world, to_world_with_prior, world_std
from models.motion import MotionConfig, MotionModel
from models.nets import ModelConfig, TrajectoryNet


@dataclass
class StepResult:
    kin: KinState
    memory: np.ndarray  # (B, M) float32
    modes: np.ndarray  # (B, K, H, 2) world metres at horizons_s after each observation, most probable first
    probs: np.ndarray  # (B, K) float64 mode probabilities, descending, summing to 1
    # (B, K, H', 2) world-axis standard deviations (x, y), metres, at the first H' <= H horizons
    # (``std_horizons``); None: not modeled
    std: np.ndarray | None
    energy_j: np.ndarray  # (B,) modeled physical energy of the memory update (IPNet), joules
    # (B, K, H, 2) the deviations along / across the heading (``kin.heading``): the axes of the 95% ellipse
    std_agent: np.ndarray | None = None

    @property
    def trajectory(self) -> np.ndarray:
        """(B, H, 2) the most probable mode: the single-trajectory answer."""
        return self.modes[:, 0]


@dataclass
class AgentForecast:
    """Decoded futures in the agent frame, most probable mode first."""

    corr: np.ndarray  # (B, K, H, 2) corrections to the prior (constant velocity, or nothing)
    probs: np.ndarray  # (B, K) float64
    std: np.ndarray | None  # (B, K, H, 2) float64 deviations along and across the heading, metres


def repeat_kin(kin: KinState, k: int) -> KinState:
    """Each agent's state ``k`` times in a row (for B x K futures)."""
    if k == 1:
        return kin
    return KinState(*(np.repeat(a, k, axis=0) for a in (kin.last_xy, kin.last_v, kin.heading, kin.n)))


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
        motion_std: np.ndarray | None = None,
    ) -> None:
        """``native``: IPNet's MTJ layer through the compiled kernel where it builds (``models.native``);
        ``motion_std``: (agent types, H, 2) deviations along / across the heading of a motion model (None: not
        modeled)."""
        self.net: TrajectoryNet | None = net if isinstance(net, TrajectoryNet) else None
        self.motion_model: MotionModel | None = net if isinstance(net, MotionModel) else None
        self.name = name
        self.version = version
        self.cfg: ModelConfig | MotionConfig = net.cfg if net is not None else (cfg or MotionConfig())
        self.horizons_s = np.asarray(self.cfg.horizons_s)
        self.infer: InferenceStep | None = None
        self.motion_std = None if motion_std is None else np.asarray(motion_std, dtype=np.float64)
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
    def n_modes(self) -> int:
        """Futures per agent (1 for motion models)."""
        return self.net.cfg.modes if self.net is not None else 1

    @property
    def has_uncertainty(self) -> bool:
        """Whether the futures carry standard deviations."""
        return self.net.cfg.uncertainty if self.net is not None else self.motion_std is not None

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
    def constant_velocity(cls, std: np.ndarray | None = None) -> Predictor:
        """Constant velocity; ``std`` (agent types, H, 2): its fitted deviations (default: the shipped fit,
        ``models.calibration``)."""
        if std is None:
            std = motion_deviations("cv")
        return cls(None, "cv", "cv-1", MotionConfig.of("cv"), motion_std=std)

    @classmethod
    def motion(cls, cfg: MotionConfig, std: np.ndarray | None = None) -> Predictor:
        """A non-learned motion model (``models.motion``); CV takes the fast path (no state)."""
        if std is None:
            std = motion_deviations(cfg.kind)
        if cfg.kind == "cv":
            return cls.constant_velocity(std)
        version = f"{cfg.kind}-1" + (f"-s{cfg.smoothing_s:g}" if cfg.smoothing_s else "")
        return cls(MotionModel(cfg), cfg.kind, version, motion_std=std)

    @property
    def memory_size(self) -> int:
        model = self.sequence_model
        return model.memory_size if model is not None else 0

    def initial_memory(self, b: int) -> np.ndarray:
        model = self.sequence_model
        if model is None:
            return np.zeros((b, 0), dtype=np.float32)
        return model.initial_memory(b).numpy()

    def decode(
        self, head: torch.Tensor | None, b: int, types: np.ndarray, modes: int | None = None
    ) -> AgentForecast:
        """The model's raw output for B agents -> agent-frame futures sorted by probability.

        ``head``: a network's readout output (B, head_size), a motion model's corrections (B, H, 2), or None
        (constant velocity: no correction); ``types``: (B,) agent type indices (a motion model's deviations
        are fitted per type); ``modes``: only the most probable ones (their probabilities as the model gives
        them, not renormalised; None: every mode).
        """
        h = len(self.horizons_s)
        if self.net is not None:
            assert head is not None
            fc = self.net.decode(head)
            probs = torch.softmax(fc.logits.double(), dim=-1).numpy()
            k = probs.shape[1] if modes is None else min(modes, probs.shape[1])
            # only the kept futures are gathered (whole (H, 2) blocks) and their deviations exponentiated:
            # reordering every future's points and deviations was most of a 1,000-agent step
            keep = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (B, k)
            rows = np.arange(len(probs))[:, None]
            corr = fc.offsets.numpy()[rows, keep]
            std = None
            if fc.log_std is not None:
                std = fc.log_std.numpy()[rows, keep].astype(np.float64)
                np.exp(std, out=std)  # in place: one array of (B, k, H, 2) less
            return AgentForecast(corr, probs[rows, keep], std)
        corr = np.zeros((b, 1, h, 2), np.float32) if head is None else head.numpy().reshape(b, 1, h, 2)
        std = None if self.motion_std is None else self.motion_std[types][:, None]
        return AgentForecast(corr, np.ones((b, 1)), std)

    @torch.inference_mode()  # not only no_grad: no version counters or view tracking either
    def step(
        self,
        kin: KinState,
        memory: np.ndarray,
        xy: np.ndarray,
        dt: np.ndarray,
        types: np.ndarray,
        modes: int | None = None,
        std_horizons: int | None = None,
    ) -> StepResult:
        """Advance B agents by one observation each (one batched forward); ``modes``: return only the most
        probable ones (their probabilities as the model gives them, not renormalised; None: every mode);
        ``std_horizons``: the world-axis deviations (``StepResult.std``) of the first horizons only (the
        ones an answer shows; None: all)."""
        kin2, feats = observe(kin, xy, dt, types)
        energy = np.zeros(len(xy))
        dt_s = np.where(kin.n == 0, 0.0, dt)
        b = len(xy)
        head: torch.Tensor | None = None
        if self.infer is not None:
            mem_t, head, energy = self.infer(torch.from_numpy(memory), torch.from_numpy(feats), dt_s)
            memory = mem_t.numpy()
        elif self.motion_model is not None:
            mem_t, head, _ = self.motion_model.step(
                torch.from_numpy(memory), torch.from_numpy(feats), torch.from_numpy(dt_s)
            )
            memory = mem_t.numpy()
        # the futures not asked for are not gathered nor turned into world coordinates (the single answer's path)
        fc = self.decode(head, b, types, modes)
        k = fc.corr.shape[1]
        kin_k = repeat_kin(kin2, k)
        flat = fc.corr.reshape(b * k, -1, 2)
        if self.cfg.cv_prior:
            # + the constant-velocity prior, added in the world frame: rotating R^T v to the agent frame and
            # back is the identity, so the prior is just v h (one compiled pass with the rotation)
            world = to_world_with_prior(kin_k, flat, self.horizons_s)
        else:
            world = to_world(kin_k, flat.astype(np.float64))
        std = None if fc.std is None else world_std(kin2, fc.std, std_horizons)
        return StepResult(kin2, memory, world.reshape(b, k, -1, 2), fc.probs, std, energy, fc.std)
