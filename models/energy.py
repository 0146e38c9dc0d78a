"""Modeled memory energy of one state update, per model, from documented parameters only.

- IPNet: the Joule heat dissipated in the neurons that hold the memory. Each neuron is driven at
  ``V = v_max * sigmoid(a)`` for a fraction ``duty`` of a device window ``time_scale * dt``:
  ``E = sum_i duty * V_i^2 / R_P * time_scale * dt``. The worst case drives every neuron at ``v_max``; the
  typical case uses the drive the trained model actually applies on real data (``measured_ipnet_energy``).
- GRU / LSTM: reading and writing the hidden state (and the LSTM cell state) once per step, 32-bit words,
  at the SRAM energy per 64-bit access of Horowitz, ISSCC 2014 (45 nm, 0.9 V): 10 pJ (8 KB array),
  20 pJ (32 KB), 100 pJ (1 MB). The 8 KB figure is the most favourable to the digital baselines.
- Window buffer (3D-CNN-style temporal memory, for reference): the last ``window_frames`` input embeddings
  are kept; each step writes one frame and reads the whole window.

Only memory is counted: arithmetic, drivers and periphery are left out on both sides (the MTJ numbers omit
drivers and sense amplifiers; the SRAM numbers are array accesses), so the ratio is of memory alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from models.motion import MotionConfig
from models.mtj import MTJParams
from models.nets import ModelConfig

PAPER_RATIO_LSTM = 2874.0  # IPNet paper: memory power, LSTM / IPNet
PAPER_RATIO_3DCNN = 90920.0  # IPNet paper: memory power, 3D-CNN / IPNet

#: Horowitz ISSCC 2014 (DOI 10.1109/ISSCC.2014.6757323), 45 nm, energy per 64-bit SRAM access [S]
SRAM_PJ_PER_64BIT = {"8KB": 10.0, "32KB": 20.0, "1MB": 100.0}


@dataclass(frozen=True)
class DigitalMemory:
    """Digital memory assumptions for the recurrent and window-buffer references."""

    sram: str = "8KB"  # key of SRAM_PJ_PER_64BIT
    bits_per_value: int = 32  # float32 state
    window_frames: int = 20  # 3D-CNN-style buffer: 2 s at 10 Hz

    @property
    def joules_per_bit(self) -> float:
        return SRAM_PJ_PER_64BIT[self.sram] * 1e-12 / 64.0


def ipnet_energy_per_update(
    n_neurons: int, p: MTJParams, dt_s: float = 0.1, mean_v2: float | None = None
) -> float:
    """Joule heat of one update of ``n_neurons`` MTJ neurons (J). ``mean_v2`` defaults to the worst case v_max^2."""
    v2 = p.v_max_v**2 if mean_v2 is None else mean_v2
    return n_neurons * p.duty * v2 / p.r_p_ohm * p.time_scale * dt_s


def recurrent_energy_per_update(kind: str, hidden: int, mem: DigitalMemory) -> float:
    """Read + write of the recurrent state once per step (J): GRU h; LSTM h and c."""
    values = hidden * (2 if kind == "lstm" else 1)
    return 2 * values * mem.bits_per_value * mem.joules_per_bit


def window_buffer_energy_per_update(d_frame: int, mem: DigitalMemory) -> float:
    """Write one frame, read the whole window (J)."""
    values = d_frame * (mem.window_frames + 1)
    return values * mem.bits_per_value * mem.joules_per_bit


def energy_table(
    cfg: ModelConfig | None = None,
    dt_s: float = 0.1,
    ipnet_mean_v2: float | None = None,
    mem: DigitalMemory | None = None,
) -> dict[str, Any]:
    """Per-update memory energy of every model and the ratios against IPNet, beside the paper's."""
    cfg = cfg or ModelConfig()
    mem = mem or DigitalMemory()
    p = MTJParams(**cfg.mtj)
    e_ip_worst = ipnet_energy_per_update(cfg.n_memory, p, dt_s)
    e_ip = (
        ipnet_energy_per_update(cfg.n_memory, p, dt_s, ipnet_mean_v2)
        if ipnet_mean_v2 is not None
        else e_ip_worst
    )
    e_gru = recurrent_energy_per_update("gru", cfg.n_memory, mem)
    e_lstm = recurrent_energy_per_update("lstm", cfg.n_memory, mem)
    e_win = window_buffer_energy_per_update(cfg.d_embed, mem)
    return {
        "dt_s": dt_s,
        "n_memory": cfg.n_memory,
        "ipnet_drive": "measured" if ipnet_mean_v2 is not None else "worst case (v_max on every neuron)",
        "digital_memory": asdict(mem),
        "joules_per_update": {
            "ipnet": e_ip,
            "ipnet_worst_case": e_ip_worst,
            "gru": e_gru,
            "lstm": e_lstm,
            "window_buffer": e_win,
        },
        "ratio_vs_ipnet": {"gru": e_gru / e_ip, "lstm": e_lstm / e_ip, "window_buffer": e_win / e_ip},
        "paper_ratio_vs_ipnet": {"lstm": PAPER_RATIO_LSTM, "3d_cnn": PAPER_RATIO_3DCNN},
    }


def digital_state_floats(cfg: ModelConfig | MotionConfig) -> int:
    """Floats of state a digital model reads and writes per update (0 for IPNet, whose state is heat)."""
    if isinstance(cfg, MotionConfig):
        return 0 if cfg.kind == "cv" else 2  # smoothed acceleration and turn rate
    if cfg.kind == "ipnet":
        return 0
    return 2 * cfg.n_memory if cfg.kind == "lstm" else cfg.n_memory


def memory_energy_per_update_j(
    cfg: ModelConfig | MotionConfig, dt_s: float, mem: DigitalMemory | None = None
) -> float:
    """Energy charged to one state update in serving (worst-case drive for IPNet when not measured)."""
    mem = mem or DigitalMemory()
    if isinstance(cfg, ModelConfig) and cfg.kind == "ipnet":
        return ipnet_energy_per_update(cfg.n_memory, MTJParams(**cfg.mtj), dt_s)
    return 2 * digital_state_floats(cfg) * mem.bits_per_value * mem.joules_per_bit
