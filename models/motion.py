"""Non-learned motion models: constant velocity (CV), constant acceleration (CA), constant turn rate and
velocity (CTRV).

They read the same per-observation kinematics as the learned models (``models.kinematics``: speed,
tangential acceleration and turn rate from the last observations, over the real interval) and predict in the
agent frame, as a correction to constant velocity, so the evaluation and the service run them through the
same code as the networks. CA keeps the heading and changes the speed at a constant rate (never below
zero: a braking car stops); CTRV keeps the speed and turns at a constant rate.

One-step finite differences of positions are noisy, the more so at high rates: CA and CTRV can smooth their
acceleration and turn rate over real time (an exponential average with time constant ``smoothing_s``, the
state they keep per agent). The constant is chosen on the validation split, never on the test set
(``SMOOTHING_S``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from models.kinematics import FEATURE_NAMES, HEADING_MIN_SPEED_MPS

MOTION_KINDS = ("cv", "ca", "ctrv")
#: smoothing time constants (s) chosen on the validation split: the lowest mean ADE over 10, 5 and 2 Hz among
#: ``SMOOTHING_GRID_S`` (``python -m models.motion`` prints that comparison)
SMOOTHING_GRID_S = (0.0, 0.5, 1.0, 2.0, 4.0)
SMOOTHING_S = {"cv": 0.0, "ca": 4.0, "ctrv": 2.0}
_SPEED, _ACCEL, _TURN, _HAS_PREV_V = (
    FEATURE_NAMES.index(n) for n in ("speed_10mps", "accel_10mps2", "turn_rate_2radps", "has_prev_velocity")
)
#: integration sub-steps per prediction step (midpoint rule): a 4 rad/s turn over 0.02 s is a 0.08 rad chord
SUBSTEPS = 5


@dataclass
class MotionConfig:
    """A non-learned model; the same prediction grid as the networks (``ModelConfig``)."""

    kind: str = "cv"
    pred_dt_s: float = 0.1
    pred_steps: int = 50
    smoothing_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in MOTION_KINDS:
            raise ValueError(f"unknown motion model {self.kind!r}; expected one of {MOTION_KINDS}")

    @staticmethod
    def of(kind: str) -> MotionConfig:
        return MotionConfig(kind=kind, smoothing_s=SMOOTHING_S[kind])

    @property
    def cv_prior(self) -> bool:
        return True

    @property
    def horizons_s(self) -> list[float]:
        return [self.pred_dt_s * (j + 1) for j in range(self.pred_steps)]

    def to_dict(self) -> dict:
        return asdict(self)


class MotionModel:
    """CV, CA or CTRV behind the networks' streaming interface (``step``, ``forward_sequence``)."""

    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg
        tau = torch.arange(cfg.pred_steps * SUBSTEPS, dtype=torch.float64) + 0.5
        self.sub_dt = cfg.pred_dt_s / SUBSTEPS
        self.tau_mid = tau * self.sub_dt  # (K,) midpoints of the sub-steps, seconds after the anchor

    @property
    def memory_size(self) -> int:
        """Smoothed acceleration and turn rate (CA, CTRV); nothing for CV."""
        return 0 if self.cfg.kind == "cv" else 2

    def initial_memory(self, b: int) -> Tensor:
        return torch.zeros(b, self.memory_size)

    def step(self, memory: Tensor, feats: Tensor, dt_s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """New memory, agent-frame correction to constant velocity (B, H, 2), energy (B,) zeros."""
        b = feats.shape[0]
        zero = torch.zeros(b)
        if self.cfg.kind == "cv":
            return memory, torch.zeros(b, self.cfg.pred_steps, 2), zero
        raw = torch.stack([feats[:, _ACCEL] * 10.0, feats[:, _TURN] * 2.0], dim=1).to(memory.dtype)
        has_v = feats[:, _HAS_PREV_V : _HAS_PREV_V + 1] > 0.5
        if self.cfg.smoothing_s > 0:
            w = -torch.expm1(-dt_s.to(memory.dtype)[:, None] / self.cfg.smoothing_s)
            smooth = torch.lerp(memory, raw, w)
        else:
            smooth = raw
        memory = torch.where(has_v, smooth, memory)
        speed = (feats[:, _SPEED] * 10.0).double()
        accel = memory[:, 0].double() if self.cfg.kind == "ca" else torch.zeros(b, dtype=torch.float64)
        turn = memory[:, 1].double() if self.cfg.kind == "ctrv" else torch.zeros(b, dtype=torch.float64)
        return memory, self.correction(speed, accel, turn).float(), zero

    def correction(self, speed: Tensor, accel: Tensor, turn: Tensor) -> Tensor:
        """(B, H, 2) agent-frame path of constant tangential acceleration and turn rate, less CV's."""
        tau = self.tau_mid[None, :]
        s = torch.clamp(speed[:, None] + accel[:, None] * tau, min=0.0)  # a braking agent stops
        theta = turn[:, None] * tau
        step = torch.stack([s * torch.cos(theta), s * torch.sin(theta)], dim=-1) * self.sub_dt
        path = step.cumsum(dim=1)[:, SUBSTEPS - 1 :: SUBSTEPS]  # (B, H, 2) at the prediction grid
        h = torch.tensor(self.cfg.horizons_s, dtype=torch.float64)
        cv = torch.stack([speed[:, None] * h[None, :], torch.zeros_like(path[..., 1])], dim=-1)
        # below the heading speed the agent frame's axis is the old heading, not the motion: no correction
        moving = (speed > HEADING_MIN_SPEED_MPS)[:, None, None]
        return torch.where(moving, path - cv, torch.zeros_like(path))

    def forward_sequence(self, feats: Tensor, dt_s: Tensor, valid: Tensor) -> Tensor:
        """(B, L, H, 2) corrections at every step, as ``TrajectoryNet.forward_sequence``."""
        b, seq_len, _ = feats.shape
        memory = self.initial_memory(b)
        outs = []
        for k in range(seq_len):
            new_mem, out, _ = self.step(memory, feats[:, k], dt_s[:, k])
            memory = torch.where(valid[:, k : k + 1], new_mem, memory)
            outs.append(out)
        return torch.stack(outs, dim=1)


def _choose_smoothing() -> None:  # pragma: no cover (a command: python -m models.motion)
    """Print the validation ADE of CA and CTRV for each smoothing constant (how ``SMOOTHING_S`` was chosen)."""
    from models.corpus import corpus, split_train_val
    from models.evaluate import Protocol, evaluate
    from models.predictor import Predictor
    from models.windows import Perturbation

    _, val = split_train_val(corpus("shipped"))
    for kind in ("ca", "ctrv"):
        means = {}
        for sm in SMOOTHING_GRID_S:
            pred = Predictor.motion(MotionConfig(kind=kind, smoothing_s=sm))
            row = []
            for hz in (None, 5.0, 2.0):
                proto = Protocol(stride_s=0.5, perturbation=Perturbation(resample_hz=hz))
                row.append(evaluate(val, {kind: pred}, proto)["models"][kind]["ade_m"])
            means[sm] = sum(row) / len(row)
            print(
                f"{kind:5s} smoothing {sm:4.1f} s: ADE at 10 / 5 / 2 Hz {' / '.join(f'{v:.3f}' for v in row)} m"
            )
        print(f"{kind:5s} chosen: {min(means, key=means.__getitem__):g} s (shipped: {SMOOTHING_S[kind]:g} s)")
    cv = evaluate(val, {"cv": Predictor.constant_velocity()}, Protocol(stride_s=0.5))
    print(f"cv    ADE at 10 Hz {cv['models']['cv']['ade_m']:.3f} m")


if __name__ == "__main__":  # pragma: no cover
    _choose_smoothing()
