"""Modeled energy of one state update, per model and per component, from cited parameters only.

One update is one observation of one agent. Every number used is an :class:`Assumption` with its value, unit
and source, tagged like ``../shared/docs/mtj-physics.md``: [S] stated in the cited source, [D] derived here,
[A] an assumption of ours, [M] measured by the trained model on data. Components (the label values of
``trajpred_memory_energy_joules_total{component}``):

- ``drive``: IPNet's Joule heat in its neurons during the drive pulse, ``sum duty V_i^2 / R_P x window``,
  window = ``time_scale x dt`` (at most ``max_drive_s``). The switching attempt that the readout senses is the
  end of that pulse (``MTJParams.t_sense_s``), so its heat and energy are already here.
- ``read``: reading each neuron after its pulse (the switching outcome and the resistance that gives its
  temperature): ``V_read^2 / R_P x t_read``, a read pulse that fits in the rest of the frame's window.
- ``sense``: one sense-amplifier decision per neuron (the switching outcome, one bit), charged as a 1-bit
  conversion at the ADC figure of merit, when the readout senses the switching probabilities.
- ``adc``: the temperature converted for the readout, one ``adc_bits`` conversion per neuron,
  ``FoM x 2^bits``, when the readout senses the temperatures (the shipped IPNet's does, and only them).
- ``reheat`` and ``state_sram``: keeping a state between frames. A device cools within nanoseconds and frames
  come every 100 ms, so (the ``digital`` hold, what this service does) after each frame the N temperatures
  are written to SRAM and before the next one read back and restored by a heating pulse of
  ``C_th (T - T0)`` per neuron, ``C_th = tau_th / R_th``. The ``thermal`` hold assumes a device per agent
  whose real thermal time constant is the scene's (0.55 s): free, but no source shows such an MTJ (notes,
  section 6). The digital models keep their state in SRAM too: ``state_sram`` is one read and one write of
  it per update, 32-bit words at Horowitz's energy per 64-bit access.
- ``macs``: the digital matrix products of the step (encoder, the memory's own, readout), one FP32 multiply
  and one add each at Horowitz's 45 nm energies. Elementwise operations and the weights' own memory
  traffic are left out for every model alike.

*Memory* is every component but ``macs``; the *full system* is all of them. Ratios compare models at the
same update rate (dt) and the same state width. ``time_scale`` and the device time constant scale together
without changing a single prediction (only their ratio, the scene-time constant, matters); the drive and the
reheat scale with them, the other components do not: :func:`report` sweeps it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from models.motion import MotionConfig
from models.mtj import MTJParams
from models.nets import ModelConfig, TrajectoryNet

PAPER_RATIO_LSTM = 2874.0  # IPNet paper: memory power, LSTM / IPNet
PAPER_RATIO_3DCNN = 90920.0  # IPNet paper: memory power, 3D-CNN / IPNet
COMPONENTS = ("drive", "read", "sense", "adc", "reheat", "state_sram", "macs")
MEMORY_COMPONENTS = tuple(c for c in COMPONENTS if c != "macs")
HOLDS = ("digital", "thermal")
SWEEP_TIME_SCALES = (1e-10, 3e-10, 1e-9, 3e-9, 1e-8, 3e-8, 1e-7, 3e-7, 1e-6)

_HOROWITZ = (
    "Horowitz, ISSCC 2014 (DOI 10.1109/ISSCC.2014.6757323), 45 nm, 0.9 V; table via "
    "https://pmc.ncbi.nlm.nih.gov/articles/PMC8934428/table/T3/"
)
_ADC = (
    "SAR ADC of Sekimoto et al., Walden FoM 8.7 fJ/conversion-step at ENOB 8.27, listed in B. E. Jonsson's ADC "
    "survey (https://converterpassion.wordpress.com/tag/implementation/)"
)


@dataclass(frozen=True)
class Assumption:
    value: float | str
    unit: str
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "unit": self.unit, "source": self.source}


#: Horowitz ISSCC 2014, energy per 64-bit SRAM access [S]
SRAM_PJ_PER_64BIT = {"8KB": 10.0, "32KB": 20.0, "1MB": 100.0}


@dataclass(frozen=True)
class HardwareAssumptions:
    """The digital and read-out side of the energy model (the device side is ``MTJParams``)."""

    sram: str = "8KB"  # key of SRAM_PJ_PER_64BIT; 8 KB is the most favourable to the digital models
    bits_per_value: int = 32  # float32 state
    fp32_mult_pj: float = 3.7  # [S] Horowitz
    fp32_add_pj: float = 0.9  # [S] Horowitz
    adc_fom_fj_per_step: float = 8.7  # [S] the ADC survey's SAR design
    adc_bits: int = 8  # [A] 0.6 K steps over the 150 K range of the temperatures
    v_read_v: float = 0.1  # [A] read voltage of the notes (section 1)
    t_read_s: float = 0.2e-9  # [A] fits after the drive pulse in the window of a 25 Hz frame (0.4 ns)
    hold: str = "digital"  # how a state is kept between frames: "digital" or "thermal" (see the docstring)

    def __post_init__(self) -> None:
        if self.sram not in SRAM_PJ_PER_64BIT:
            raise ValueError(f"unknown SRAM size {self.sram!r}; expected one of {sorted(SRAM_PJ_PER_64BIT)}")
        if self.hold not in HOLDS:
            raise ValueError(f"unknown hold {self.hold!r}; expected one of {HOLDS}")

    @property
    def joules_per_bit(self) -> float:
        return SRAM_PJ_PER_64BIT[self.sram] * 1e-12 / 64.0

    @property
    def mac_j(self) -> float:
        return (self.fp32_mult_pj + self.fp32_add_pj) * 1e-12

    def conversion_j(self, bits: int) -> float:
        return self.adc_fom_fj_per_step * 1e-15 * 2**bits


@dataclass(frozen=True)
class DriveFigures:
    """What the trained IPNet does to its neurons on real data (``models.pipeline.measured_drive``)."""

    mean_v2: float  # V^2, mean over neurons and observations that close an interval
    mean_rise_k: float  # K, mean T - T0 of the neurons after an observation
    source: str = "measured"

    @staticmethod
    def worst_case(p: MTJParams) -> DriveFigures:
        """Every neuron at v_max, at the steady state of that drive."""
        return DriveFigures(p.v_max_v**2, p.duty * p.v_max_v**2 / p.r_p_ohm * p.r_th_k_per_w, "worst case")


def count_macs(net: TrajectoryNet) -> int:
    """Multiply-accumulates of one step: every matrix product of the encoder, the memory and the readout."""
    cfg = net.cfg
    n = cfg.n_memory
    total = 0
    for m in (*net.encoder, *net.readout):
        if isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
    e = cfg.d_embed
    if cfg.kind == "ipnet":
        total += e * n + (n * n if cfg.lateral == "dense" else 0)
        # heat diffusion: into the eigenbasis and back, and the drive's projection (three N x N products)
        total += 3 * n * n if cfg.lateral == "diffusion" else 0
    elif cfg.kind in ("gru", "ctgru"):
        total += 3 * (e * n + n * n)
    elif cfg.kind == "lstm":
        total += 4 * (e * n + n * n)
    else:  # the leaky control
        total += e * n + (n * n if cfg.lateral == "dense" else 0)
    return total


def state_floats(cfg: ModelConfig | MotionConfig) -> int:
    """Floats of state a model keeps per agent between frames."""
    if isinstance(cfg, MotionConfig):
        return 0 if cfg.kind == "cv" else 2  # smoothed acceleration and turn rate
    return 2 * cfg.n_memory if cfg.kind == "lstm" else cfg.n_memory


def _sram_rw(floats: int, hw: HardwareAssumptions) -> float:
    return 2 * floats * hw.bits_per_value * hw.joules_per_bit  # one read and one write per update


def ipnet_components(
    net: TrajectoryNet, drive: DriveFigures, hw: HardwareAssumptions, dt_s: float = 0.1
) -> dict[str, float]:
    """Joules per update of each component of an IPNet (see the module docstring)."""
    assert net.mtj is not None
    p = net.mtj.params
    n = net.cfg.n_memory
    window = min(p.time_scale * dt_s, p.max_drive_s)
    c_th = float(net.mtj.time_constants().mean()) / p.r_th_k_per_w
    digital = hw.hold == "digital"
    # what the readout senses decides what is read out: the switching outcome (a sense decision per neuron),
    # the temperature (a conversion per neuron), or both
    senses_switching = net.cfg.readout in ("both", "p_switch")
    senses_temperature = net.cfg.readout in ("both", "temperature")
    return {
        "drive": n * p.duty * drive.mean_v2 / p.r_p_ohm * window,
        "read": n * hw.v_read_v**2 / p.r_p_ohm * hw.t_read_s,
        "sense": n * hw.conversion_j(1) if senses_switching else 0.0,
        "adc": n * hw.conversion_j(hw.adc_bits) if senses_temperature else 0.0,
        "reheat": n * c_th * drive.mean_rise_k if digital else 0.0,
        "state_sram": _sram_rw(n, hw) if digital else 0.0,
        "macs": count_macs(net) * hw.mac_j,
    }


def digital_components(
    net: TrajectoryNet | None, cfg: ModelConfig | MotionConfig, hw: HardwareAssumptions
) -> dict[str, float]:
    """Joules per update of a digital model: its state in SRAM and its matrix products."""
    return {
        "state_sram": _sram_rw(state_floats(cfg), hw),
        "macs": (count_macs(net) if net is not None else 0) * hw.mac_j,
    }


def with_time_scale(net_cfg: ModelConfig, time_scale: float) -> ModelConfig:
    """The same model at another device-time scale: the device time constants scale with it, so every
    prediction is unchanged (only the scene-time constant ``tau / time_scale`` enters the dynamics)."""
    p = MTJParams(**net_cfg.mtj)
    k = time_scale / p.time_scale
    scaled = replace(
        p,
        time_scale=time_scale,
        tau_th_min_s=p.tau_th_min_s * k,
        tau_th_max_s=p.tau_th_max_s * k,
        max_drive_s=p.max_drive_s * k,
    )
    return replace(net_cfg, mtj=scaled.to_dict())


def assumptions(
    p: MTJParams, tau_th_s: float, drive: DriveFigures, hw: HardwareAssumptions
) -> dict[str, Assumption]:
    notes = "../shared/docs/mtj-physics.md"
    return {
        "dt_s": Assumption(0.1, "s", "[A] one update per observation of a 10 Hz stream"),
        "time_scale": Assumption(
            p.time_scale, "device s per scene s", "[A] 100 ms frame -> 1 ns window (notes, section 6)"
        ),
        "tau_th": Assumption(
            tau_th_s, "s", "[A] chosen on the validation split (model card, Design choices)"
        ),
        "r_th": Assumption(p.r_th_k_per_w, "K/W", f"[D] 49 uW -> 100 K ({notes}, section 2)"),
        "c_th": Assumption(
            tau_th_s / p.r_th_k_per_w,
            "J/K",
            "[D] tau_th / R_th; the notes derive 5e-16 J/K for tau_th = 1 ns and estimate 2e-16 J/K for a bare "
            "50 nm pillar: see the model card",
        ),
        "r_p": Assumption(p.r_p_ohm, "Ohm", f"[D] RA 10 Ohm um^2 over a 50 nm pillar ({notes}, section 1)"),
        "duty": Assumption(p.duty, "", "[A] share of the window the drive is on"),
        "v_max": Assumption(p.v_max_v, "V", "[D] keeps the steady state below T_max"),
        "mean_v2": Assumption(drive.mean_v2, "V^2", f"[M] {drive.source}: the served IPNet's drive"),
        "mean_rise": Assumption(
            drive.mean_rise_k, "K", f"[M] {drive.source}: mean T - T0 after an observation"
        ),
        "t_sense": Assumption(p.t_sense_s, "s", "[A] the switching attempt: the end of the drive pulse"),
        "v_read": Assumption(hw.v_read_v, "V", f"[A] read voltage of the notes ({notes}, section 1)"),
        "t_read": Assumption(
            hw.t_read_s, "s", "[A] a read pulse after the drive, inside a 25 Hz frame's window"
        ),
        "sram_pj_per_64bit": Assumption(
            SRAM_PJ_PER_64BIT[hw.sram], f"pJ ({hw.sram} SRAM)", f"[S] {_HOROWITZ}"
        ),
        "fp32_mult": Assumption(hw.fp32_mult_pj, "pJ", f"[S] {_HOROWITZ}"),
        "fp32_add": Assumption(hw.fp32_add_pj, "pJ", f"[S] {_HOROWITZ}"),
        "adc_fom": Assumption(hw.adc_fom_fj_per_step, "fJ/conversion-step", f"[S] {_ADC}"),
        "adc_bits": Assumption(hw.adc_bits, "bits", "[A] 0.6 K steps over the 150 K range"),
        "hold": Assumption(hw.hold, "", "[A] how a state survives between frames (digital: SRAM + reheat)"),
    }


def _ratios(models: dict[str, dict[str, float]], which: tuple[str, ...] = COMPONENTS) -> dict[str, float]:
    ip = sum(models["ipnet"][c] for c in which if c in models["ipnet"])
    out = {}
    for name in ("lstm", "gru"):
        if name in models:
            out[f"{name}_over_ipnet"] = sum(models[name][c] for c in which if c in models[name]) / ip
    return out


def report(
    nets: dict[str, TrajectoryNet],
    drive: DriveFigures,
    hw: HardwareAssumptions | None = None,
    dt_s: float = 0.1,
) -> dict[str, Any]:
    """``{"models": {name: {"joules_per_update", "components"}}, "ratios", "memory_ratios",
    "drive_only_ratios", "time_scale_sweep": [...], "assumptions": {...}}`` for IPNet and the digital nets."""
    hw = hw or HardwareAssumptions()
    ip = nets["ipnet"]
    assert ip.mtj is not None
    comps = {"ipnet": ipnet_components(ip, drive, hw, dt_s)}
    for name, net in nets.items():
        if name != "ipnet":
            comps[name] = {c: 0.0 for c in COMPONENTS} | digital_components(net, net.cfg, hw)
    comps["ipnet"] = {c: comps["ipnet"].get(c, 0.0) for c in COMPONENTS}
    p = ip.mtj.params
    sweep = []
    for ts in SWEEP_TIME_SCALES:
        scaled = TrajectoryNet(with_time_scale(ip.cfg, ts))
        c = dict(comps) | {"ipnet": ipnet_components(scaled, drive, hw, dt_s)}
        sweep.append(
            {
                "time_scale": ts,
                **_ratios(c),
                "memory": _ratios(c, MEMORY_COMPONENTS),
                "drive_only": _drive_only(c),
            }
        )
    tau = float(ip.mtj.time_constants().mean())
    return {
        "dt_s": dt_s,
        "hardware": {"sram": hw.sram, "hold": hw.hold},
        "models": {k: {"joules_per_update": sum(v.values()), "components": v} for k, v in comps.items()},
        "ratios": _ratios(comps),
        "memory_ratios": _ratios(comps, MEMORY_COMPONENTS),
        "drive_only_ratios": _drive_only(comps),
        "paper_ratios": {"lstm_over_ipnet": PAPER_RATIO_LSTM, "3d_cnn_over_ipnet": PAPER_RATIO_3DCNN},
        "time_scale_sweep": sweep,
        "assumptions": {k: a.to_dict() for k, a in assumptions(p, tau, drive, hw).items()},
    }


def _drive_only(comps: dict[str, dict[str, float]]) -> dict[str, float]:
    """The paper's kind of figure: the digital state traffic against IPNet's drive heat alone."""
    out = {}
    for name in ("lstm", "gru"):
        if name in comps:
            out[f"{name}_over_ipnet"] = comps[name]["state_sram"] / comps["ipnet"]["drive"]
    return out


def time_scale_for_drive_ratio(rep: dict[str, Any], target: float, model: str = "lstm") -> float:
    """The time_scale at which the drive-only ratio reaches ``target`` (the drive scales with time_scale)."""
    ts0 = rep["assumptions"]["time_scale"]["value"]
    return ts0 * rep["drive_only_ratios"][f"{model}_over_ipnet"] / target


def per_update_constants(
    net: TrajectoryNet | None, cfg: ModelConfig | MotionConfig, hw: HardwareAssumptions | None = None
) -> dict[str, float]:
    """What the service charges every update of a model beyond what its step reports: for IPNet every
    component but the drive and the reheat (those depend on the update: the step's Joule heat, and the heat
    of its temperatures), for the digital models all of them."""
    hw = hw or HardwareAssumptions()
    if net is not None and net.mtj is not None:
        c = ipnet_components(net, DriveFigures(0.0, 0.0), hw)
        return {k: v for k, v in c.items() if k not in ("drive", "reheat")}
    return digital_components(net, cfg, hw)


def reheat_per_kelvin(net: TrajectoryNet, hw: HardwareAssumptions | None = None) -> float:
    """J per kelvin of rise summed over an agent's neurons, to restore them before the next frame (digital
    hold; 0 for the thermal one)."""
    hw = hw or HardwareAssumptions()
    assert net.mtj is not None
    if hw.hold != "digital":
        return 0.0
    return float(net.mtj.time_constants().mean()) / net.mtj.params.r_th_k_per_w


class EnergyMeter:
    """What the service charges each update of one model, by component (the same model as :func:`report`):
    the step's own Joule heat and, with the digital hold, the heat to restore its temperatures, plus the
    per-update constants (read-out, conversions, SRAM traffic, matrix products)."""

    def __init__(
        self,
        net: TrajectoryNet | None,
        cfg: ModelConfig | MotionConfig,
        hw: HardwareAssumptions | None = None,
    ):
        self.constants = per_update_constants(net, cfg, hw)
        self.thermal = net is not None and net.mtj is not None
        self.reheat_j_per_k = reheat_per_kelvin(net, hw) if net is not None and net.mtj is not None else 0.0
        self.t0_k = net.mtj.params.t0_k if net is not None and net.mtj is not None else 0.0

    def charge(self, updates: int, drive_j: float, temperatures: Any = None) -> dict[str, float]:
        """Joules by component for ``updates`` updates whose steps reported ``drive_j`` of Joule heat and left
        ``temperatures`` (IPNet: every updated agent's neurons, kelvin)."""
        out = {c: v * updates for c, v in self.constants.items()}
        if self.thermal:
            out["drive"] = drive_j
            rise = 0.0 if temperatures is None else float((temperatures - self.t0_k).sum())
            out["reheat"] = self.reheat_j_per_k * rise
        return out
