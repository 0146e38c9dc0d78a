"""Every named model and training recipe of the project, in one place.

A *model name* is what ``ipnet train --models``, ``ipnet evaluate --models``, the weight files
(``<folder>/<name>.pt``) and ``TRAJPRED_BASELINE`` use. Each maps to a ``ModelConfig`` (learned) or to a
motion model (``models.motion``: no training). Roles:

- ``ipnet``: the product's model.
- ``baseline``: the fair rivals. Learned ones are trained with the same data, augmentation, width, epochs,
  learning rate and seeds as IPNet; "IPNet vs the best baseline" means the best of every learned one.
- ``motion``: non-learned references (constant velocity, acceleration, turn rate).
- ``ablation``: IPNet retrained with one thing changed (never switched off at inference), and the control
  for "is it the physics or any memory that fades over real time?" (``leaky``).

A *recipe* is the data and augmentation a set of models is trained with: ``shipped`` (the served weights)
and ``10hz`` (10 Hz data only, no augmentation: the test of rates never seen in training).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from models.motion import MOTION_KINDS
from models.nets import ModelConfig
from models.train import TrainConfig


@dataclass(frozen=True)
class Entry:
    """One named model."""

    role: str  # "ipnet", "baseline", "motion" or "ablation"
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields (learned models)


CATALOG: dict[str, Entry] = {
    "ipnet": Entry(
        "ipnet",
        "IPNet: MTJ neurons whose temperatures are the only memory, sensed by the readout",
        {"kind": "ipnet"},
    ),
    "gru": Entry("baseline", "GRU, the observed interval as an input", {"kind": "gru"}),
    "lstm": Entry("baseline", "LSTM, the observed interval as an input", {"kind": "lstm"}),
    "gru_nodt": Entry("baseline", "GRU without the interval input", {"kind": "gru", "interval_input": False}),
    "ctgru": Entry(
        "baseline",
        "continuous-time GRU: hidden state decays as exp(-dt/tau), learned tau per unit; interval input",
        {"kind": "ctgru"},
    ),
    "cv": Entry("motion", "constant velocity from the last step"),
    "ca": Entry("motion", "constant tangential acceleration (smoothed), heading kept"),
    "ctrv": Entry("motion", "constant turn rate (smoothed) and velocity"),
    "ipnet_tau0": Entry(
        "ablation",
        "IPNet whose devices cool completely between frames (time constants x 1e-3): no heat carried",
        {"kind": "ipnet", "tau_scale": 1e-3},
    ),
    "ipnet_dense": Entry(
        "ablation",
        "IPNet with a learned lateral matrix reading the temperatures into the drive (a digital recurrence)",
        {"kind": "ipnet", "lateral": "dense"},
    ),
    "ipnet_diffusion": Entry(
        "ablation",
        "IPNet whose neighbouring devices exchange heat (thermal coupling, trained conductance)",
        {"kind": "ipnet", "lateral": "diffusion"},
    ),
    "ipnet_spread": Entry(
        "ablation",
        "IPNet with device time constants log-spaced over 1-30 ns",
        {"kind": "ipnet", "tau": "spread"},
    ),
    "ipnet_learned_tau": Entry(
        "ablation",
        "IPNet whose per-device time constants (device sizes) are trained within 1-30 ns",
        {"kind": "ipnet", "tau": "learned"},
    ),
    "ipnet_bipolar": Entry(
        "ablation",
        "IPNet driven at v_max tanh(a): both polarities heat (the shipped drive is one-polarity, sigmoid)",
        {"kind": "ipnet", "drive": "tanh"},
    ),
    "ipnet_tau_short": Entry(
        "ablation",
        "IPNet with devices of 0.3 times the shipped time constant (1.6 ns: 0.16 s of scene time)",
        {"kind": "ipnet", "tau_scale": 0.3},
    ),
    "ipnet_tau_long": Entry(
        "ablation",
        "IPNet with devices of 3 times the shipped time constant (16 ns: 1.6 s of scene time)",
        {"kind": "ipnet", "tau_scale": 3.0},
    ),
    "ipnet_readout_both": Entry(
        "ablation",
        "IPNet whose readout also senses the neurons' switching probabilities (their heat-dependent excitability)",
        {"kind": "ipnet", "readout": "both"},
    ),
    "ipnet_readout_p": Entry(
        "ablation",
        "IPNet whose readout senses the switching probabilities only",
        {"kind": "ipnet", "readout": "p_switch"},
    ),
    "ipnet_dt": Entry(
        "ablation",
        "IPNet whose encoder also sees the observed interval",
        {"kind": "ipnet", "interval_input": True},
    ),
    "leaky": Entry(
        "ablation",
        "leaky-integrator RNN with IPNet's time constants and no recurrent matrix: IPNet's memory, digital",
        {"kind": "leaky"},
    ),
    "leaky_rnn": Entry(
        "ablation",
        "leaky-integrator RNN with IPNet's time constants and a recurrent matrix",
        {"kind": "leaky", "lateral": "dense"},
    ),
}

LEARNED_BASELINES = tuple(n for n, e in CATALOG.items() if e.role == "baseline")
MOTION_BASELINES = tuple(n for n, e in CATALOG.items() if e.role == "motion")
ABLATIONS = tuple(n for n, e in CATALOG.items() if e.role == "ablation")
#: every learned model of a recipe: what ``ipnet train --models all`` trains
LEARNED = ("ipnet", *LEARNED_BASELINES, *ABLATIONS)


def model_config(name: str, base: ModelConfig | None = None) -> ModelConfig:
    """The ``ModelConfig`` of a learned model name."""
    entry = CATALOG.get(name)
    if entry is None or entry.role == "motion":
        raise ValueError(f"{name!r} is not a learned model; expected one of {LEARNED}")
    return replace(base or ModelConfig(), **entry.overrides)


def is_motion(name: str) -> bool:
    return name in MOTION_KINDS


@dataclass(frozen=True)
class Recipe:
    """Training data and augmentation of a set of models (the same for every model of the set)."""

    corpus: str
    description: str
    train: TrainConfig


RECIPES: dict[str, Recipe] = {
    "shipped": Recipe(
        "shipped",
        "KITTI + Lyft + ETH/UCY, degraded at random per chunk: rates 10/5/3.3/2 Hz, drops up to 60%, timestamp "
        "jitter up to 30 ms (none on 30% of chunks), no position noise",
        TrainConfig(augment=True, augment_noise=False),
    ),
    "10hz": Recipe(
        "10hz",
        "KITTI + Lyft only, as recorded (10 Hz, no augmentation): every other rate is unseen in training",
        TrainConfig(),
    ),
}
