"""IPNet and its learned baselines: one encoder, one memory, one readout.

``TrajectoryNet`` = encoder (features -> embedding) + memory + readout (embedding, sensed memory ->
correction to constant velocity in the agent frame). Only the memory differs between models:

- ``ipnet``: a layer of MTJ neurons driven by the embedding; the neuron temperatures are the only state.
  The heat decays over the real elapsed time of each step (physics), so irregular sampling needs no padding.
  By default nothing digital feeds the temperatures back (``lateral="none"``): what the layer remembers is
  the heat its devices still hold. ``lateral="dense"`` is the earlier design, in which a learned matrix read
  the temperatures into the next drive (a digital recurrence); ``lateral="diffusion"`` couples neighbouring
  devices by heat flow (physical, local, positive).
- ``gru`` / ``lstm``: recurrent cells of the same width; they see the interval as an input feature (or not:
  ``interval_input=False``, the ``gru_nodt`` baseline).
- ``ctgru``: a continuous-time GRU (GRU-D / CT-GRU style): between observations its hidden state decays as
  ``exp(-dt/tau)`` with a learned time constant per unit, then the GRU cell updates it.
- ``leaky``: a leaky-integrator RNN whose units have IPNet's time constants (in scene seconds):
  ``h' = a h + (1 - a) tanh(W e [+ U h])``, ``a = exp(-dt/tau)``. The control for "is it the physics, or any
  memory that fades over real time?".

Every model exposes the same streaming step ``step(memory, features, dt) -> (memory, head, energy)``;
``forward_sequence`` is a loop over that very step, so training and serving cannot disagree. ``head`` is the
readout's raw output; ``decode`` turns it into a ``Forecast``: K futures (corrections to constant velocity in
the agent frame), their probabilities and, with ``uncertainty``, a standard deviation per point and axis.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.kinematics import FEATURE_NAMES, N_FEATURES
from models.mtj import FusedSwitching, MTJParams, switching_probability, tau_spread

MODEL_KINDS = ("ipnet", "gru", "lstm", "ctgru", "leaky")
TAU_MODES = ("single", "spread", "learned")
LATERAL_MODES = ("none", "dense", "diffusion")
DRIVE_MODES = ("sigmoid", "tanh")
READOUT_MODES = ("both", "temperature", "p_switch")


@dataclass
class ModelConfig:
    """Architecture of one learned model (stored in every checkpoint as ``model_args``)."""

    kind: str = "ipnet"
    n_features: int = N_FEATURES
    d_embed: int = 32
    encoder_layers: int = 2
    n_memory: int = 64  # MTJ neurons, or units of the recurrent baselines
    d_readout: int = 128
    pred_dt_s: float = 0.1
    pred_steps: int = 50  # 5 s at 0.1 s
    # IPNet and the leaky control: the devices' thermal time constants. "single": every device at the
    # geometric mean of tau_th_min and tau_th_max; "spread": log-spaced over that range (devices sized on
    # purpose); "learned": each device's size (its time constant) is trained, kept within that range
    tau: str = "single"
    # multiplies every time constant: 1e-3 is the "no heat carried between frames" ablation
    tau_scale: float = 1.0
    # IPNet: how devices influence each other (see the module docstring); the leaky control: "dense" adds
    # the recurrent matrix U, "none" leaves it out
    lateral: str = "none"
    # IPNet: the drive voltage, v_max sigmoid(a) (one polarity) or v_max tanh(a) (both polarities heat)
    drive: str = "sigmoid"
    # IPNet: what the readout senses of its neurons: "temperature" (chosen on the validation split), "both"
    # (also the switching probabilities) or "p_switch"
    readout: str = "temperature"
    cv_prior: bool = True  # predict a correction to constant velocity (False: the whole agent-frame future)
    # The observed interval as an encoder input; None: by kind. GRU, LSTM and CT-GRU get it (a discrete
    # recurrence counts steps; dt is how it can learn time). IPNet and the leaky control do without: their
    # memory fades over the physical time that passed, and a readout that never sees the interval cannot
    # misread a rate it was not trained at.
    interval_input: bool | None = None
    # futures per observation (winner-takes-all training, a probability each); 1: a single trajectory
    modes: int = 1
    # a standard deviation per predicted point and agent-frame axis (Gaussian likelihood of the winning mode)
    uncertainty: bool = False
    mtj: dict[str, float] = field(default_factory=lambda: MTJParams().to_dict())

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("kind", self.kind, MODEL_KINDS),
            ("tau", self.tau, TAU_MODES),
            ("lateral", self.lateral, LATERAL_MODES),
            ("drive", self.drive, DRIVE_MODES),
            ("readout", self.readout, READOUT_MODES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")
        if self.kind == "leaky" and self.lateral == "diffusion":
            raise ValueError("the leaky control has no devices to couple: lateral is 'none' or 'dense'")
        if not self.tau_scale > 0:
            raise ValueError(f"tau_scale must be positive, got {self.tau_scale}")
        if self.modes < 1:
            raise ValueError(f"modes must be at least 1, got {self.modes}")

    @property
    def head_size(self) -> int:
        """Floats of the readout's output: K x H x 2 offsets, [K x H x 2 log-deviations], [K mode logits]."""
        per_mode = self.pred_steps * 2
        return self.modes * per_mode * (2 if self.uncertainty else 1) + (self.modes if self.modes > 1 else 0)

    @property
    def sees_interval(self) -> bool:
        """Whether the encoder gets the observed interval (``interval_input``, or by kind when None)."""
        if self.interval_input is None:
            return self.kind in ("gru", "lstm", "ctgru")
        return self.interval_input

    @property
    def horizons_s(self) -> list[float]:
        return [self.pred_dt_s * (j + 1) for j in range(self.pred_steps)]

    def to_dict(self) -> dict:
        return asdict(self)


def device_time_constants(n: int, p: MTJParams, mode: str, scale: float = 1.0) -> Tensor:
    """(n,) float64 device seconds for the fixed modes ("single", "spread"); the learned mode starts spread."""
    return tau_spread(n, p, spread=mode != "single") * scale


class LearnedTimeConstants(nn.Module):
    """Per-unit time constants trained within ``[lo, hi]`` (log-uniform start): device sizes chosen in training."""

    def __init__(self, init: Tensor, lo: float, hi: float) -> None:
        super().__init__()
        self.log_lo, self.log_hi = math.log(lo), math.log(hi)
        frac = ((init.log() - self.log_lo) / (self.log_hi - self.log_lo)).clamp(0.02, 0.98)
        self.u = nn.Parameter(torch.logit(frac).to(torch.float32))

    def forward(self) -> Tensor:
        """(n,) time constants, in the units of ``lo`` and ``hi``."""
        return torch.exp(self.log_lo + (self.log_hi - self.log_lo) * torch.sigmoid(self.u))


class Forecast(NamedTuple):
    """A decoded readout (leading dims ``...``: batch, or batch and sequence).

    offsets: (..., K, H, 2) agent-frame corrections to constant velocity per mode.
    log_std: (..., K, H, 2) log standard deviation per point and axis (along, across), calibrated; None
        without ``uncertainty``.
    logits: (..., K) mode scores (softmax: probabilities); zeros for a single mode.
    """

    offsets: Tensor
    log_std: Tensor | None
    logits: Tensor


class MTJNeuronLayer(nn.Module):
    """A layer of MTJ neurons: drive -> Joule heat -> temperature (memory) -> switching probability."""

    def __init__(
        self,
        n_in: int,
        n_neurons: int,
        params: MTJParams,
        tau: str = "single",
        tau_scale: float = 1.0,
        lateral: str = "none",
        drive: str = "tanh",
    ) -> None:
        super().__init__()
        self.params = params
        self.drive_mode = drive
        self.drive = nn.Linear(n_in, n_neurons)
        if drive == "tanh":
            # tanh(0) = 0 heats nothing and has no gradient through V^2: start the devices spread over
            # their drive range instead
            with torch.no_grad():
                self.drive.bias.uniform_(-2.0, 2.0)
        # lateral="dense": the pulse of each neuron also depends on the sensed temperatures of the layer
        # (read just before the pulse): the earlier design, a learned digital recurrence
        self.lateral = nn.Linear(n_neurons, n_neurons, bias=False) if lateral == "dense" else None
        if self.lateral is not None:
            nn.init.zeros_(self.lateral.weight)
        # lateral="diffusion": devices in a row share heat with their neighbours through a conductance
        # kappa / R_th (kappa >= 0, trained; starts at 0.1)
        self.log_kappa = nn.Parameter(torch.tensor(math.log(0.1))) if lateral == "diffusion" else None
        base = device_time_constants(n_neurons, params, tau, tau_scale)
        self.learned_tau = (
            LearnedTimeConstants(base, params.tau_th_min_s * tau_scale, params.tau_th_max_s * tau_scale)
            if tau == "learned"
            else None
        )
        self.tau_dev_s: Tensor
        self.register_buffer("tau_dev_s", base.to(torch.float32))
        self.fused = FusedSwitching.of(params)
        # steady-state rise at full drive, kelvin. The relaxation mixes T (in [T0, T_max]) with its steady state
        # T0 + c_ss d^2 <= T0 + c_ss: when that is <= T_max the result stays in range by itself, and the clamp
        # is one pass for nothing. Diffusion only moves heat between devices: the bound holds there too
        self.c_ss = params.v_max_v**2 * params.duty * params.r_th_k_per_w / params.r_p_ohm
        self.needs_clamp = params.t0_k + self.c_ss > params.t_max_k
        self.t0_k: Tensor
        # 0-d: the operand of torch.add that builds the steady state (torch.add needs a tensor there)
        self.register_buffer("t0_k", torch.tensor(params.t0_k), persistent=False)
        n = n_neurons
        lap = 2 * torch.eye(n) - torch.diag(torch.ones(n - 1), 1) - torch.diag(torch.ones(n - 1), -1)
        lap[0, 0] = lap[-1, -1] = 1.0  # a row of devices: the two ends have one neighbour each
        self.laplacian: Tensor
        self.register_buffer("laplacian", lap, persistent=False)

    @property
    def n_neurons(self) -> int:
        return self.drive.out_features

    def time_constants(self) -> Tensor:
        """(N,) device thermal time constants, seconds."""
        return self.learned_tau() if self.learned_tau is not None else self.tau_dev_s

    def initial(self, b: int) -> Tensor:
        """Every neuron at ambient temperature: (B, N) kelvin."""
        return torch.full((b, self.n_neurons), self.params.t0_k)

    def drive01(self, pre: Tensor) -> Tensor:
        """Drive voltage / v_max from the pre-activation: (0, 1) for sigmoid, (-1, 1) for tanh."""
        return torch.sigmoid(pre) if self.drive_mode == "sigmoid" else torch.tanh(pre)

    def pre_activation(self, temp: Tensor, x: Tensor) -> Tensor:
        """(B, N) drive pre-activations: the embedding, plus the sensed temperatures when ``lateral="dense"``."""
        pre = self.drive(x)
        if self.lateral is not None:
            p = self.params
            # + lateral(sensed temperature rise (T - T0)/(T_max - T0)), the 1/(T_max - T0) folded into addmm
            pre = torch.addmm(pre, temp - p.t0_k, self.lateral.weight.t(), alpha=1.0 / (p.t_max_k - p.t0_k))
        return pre

    def forward(self, temp: Tensor, x: Tensor, dt_s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One frame.

        Args:
            temp: (B, N) temperatures before the frame, kelvin.
            x: (B, n_in) embedding of the new observation.
            dt_s: (B,) scene seconds since the previous observation (0 for a track's first).

        Returns:
            new temperatures (B, N), switching probabilities (B, N), Joule heat of the frame (B,) joules.
        """
        p = self.params
        window = (p.time_scale * dt_s)[:, None]  # device seconds, (B, 1)
        # a long gap (dropped frames) is mostly cooling: the drive covers at most max_drive_s of it,
        # the end of the window, so energy stays bounded and the newest motion is what heats the neuron
        drive_s = torch.clamp(window, max=p.max_drive_s)
        neg_inv_tau = -1.0 / self.time_constants()  # (N,)
        pre = None
        if self.lateral is None:
            pre = self.pre_activation(temp, x)  # the drive does not read the temperatures: any order
        if self.log_kappa is not None:
            if len(dt_s) and float(window.max()) > p.max_drive_s:
                temp = self._diffuse(temp, torch.zeros_like(temp), window - drive_s, neg_inv_tau)
            assert pre is not None
            v = self.drive01(pre)
            d2 = v * v
            temp = self._diffuse(temp, d2, drive_s, neg_inv_tau)
        else:
            # cooling without drive, then the drive: two exact steps of thermal_step (inlined: hot path).
            # The first is the identity unless a gap outlasts max_drive_s (rare): skipped then, for speed.
            if len(dt_s) and float(window.max()) > p.max_drive_s:
                temp = torch.lerp(
                    torch.full_like(temp, p.t0_k), temp, torch.exp((window - drive_s) * neg_inv_tau)
                )
            if pre is None:
                pre = self.pre_activation(temp, x)
            v = self.drive01(pre)  # (B, N) drive voltage / v_max
            d2 = v * v
            # relax towards the steady state under the mean drive power V^2/R_P (V = v_max v):
            # T' = T decay + (1 - decay)(T0 + c d^2) = lerp(T, T0 + c d^2, 1 - decay)
            heat = -torch.expm1(drive_s * neg_inv_tau)  # 1 - decay, (B, N) or (B, 1)
            temp = torch.lerp(temp, torch.add(self.t0_k, d2, alpha=self.c_ss), heat)
        if self.needs_clamp:
            temp = torch.clamp(temp, min=p.t0_k, max=p.t_max_k)
        # the sense pulse: the switching probability at the drive's magnitude (the device is read from the
        # state its polarity can leave), at the temperature the history left it with
        mag = v if self.drive_mode == "sigmoid" else v.abs()
        if self.fused is not None:
            out = self.fused(mag, temp)
        else:
            out = switching_probability(mag * (p.v_max_v / p.r_p_ohm), temp, p)
        energy = d2.sum(dim=1) * (p.v_max_v**2 * p.duty / p.r_p_ohm) * drive_s[:, 0]  # Joule heat, J
        return temp, out, energy

    def _diffuse(self, temp: Tensor, d2: Tensor, span_s: Tensor, neg_inv_tau: Tensor) -> Tensor:
        """Exact step of ``C_j dT_j/dt = P_j - (T_j - T0)/R_th - (kappa/R_th) sum_k~j (T_j - T_k)`` over
        ``span_s`` (B, 1) device seconds at constant power ``P_j ~ d2_j``.

        With x = T - T0, D = diag(1/tau) and M = I + kappa L (L the row's Laplacian):
        dx/dt = D (c_ss d2 - M x). In y = D^-1/2 x the system matrix S = D^1/2 M D^1/2 is symmetric:
        S = U diag(lam) U^T, and each eigenmode relaxes on its own: exact for any span, like the lerp.
        """
        kappa = torch.exp(self.log_kappa) if self.log_kappa is not None else temp.new_zeros(())
        inv_tau = -neg_inv_tau  # (N,)
        sq = inv_tau.sqrt()
        m = torch.eye(len(inv_tau), dtype=temp.dtype) + kappa * self.laplacian.to(temp.dtype)
        s = sq[:, None] * m * sq[None, :]
        lam, u = torch.linalg.eigh(s)
        x0 = (temp - self.params.t0_k) / sq  # y = D^-1/2 x, (B, N)
        z0 = x0 @ u  # U^T y per row
        drive = (self.c_ss * d2 * sq) @ u  # U^T D^1/2 (c_ss d2): dy/dt = D^1/2 c d2 - S y
        z_ss = drive / lam
        z = z_ss + (z0 - z_ss) * torch.exp(-span_s * lam)
        return self.params.t0_k + (z @ u.t()) * sq


class RecurrentCell(nn.Module):
    """GRU or LSTM cell; the LSTM's state is [h, c]."""

    def __init__(self, kind: str, n_in: int, n: int) -> None:
        super().__init__()
        self.kind = kind
        self.n = n
        self.cell: nn.GRUCell | nn.LSTMCell = nn.GRUCell(n_in, n) if kind == "gru" else nn.LSTMCell(n_in, n)

    @property
    def size(self) -> int:
        return 2 * self.n if self.kind == "lstm" else self.n

    def forward(self, memory: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        """New state (B, size) and the hidden state the readout senses (B, n)."""
        if isinstance(self.cell, nn.GRUCell):
            memory = self.cell(e, memory)
            return memory, memory
        h, c = self.cell(e, (memory[:, : self.n], memory[:, self.n :]))
        return torch.cat([h, c], dim=1), h


class CTGRUCell(nn.Module):
    """Continuous-time GRU: the hidden state decays as exp(-dt/tau) (learned tau per unit), then a GRU update.

    The decay runs over the real interval, the update once per observation: the digital rival of a memory
    that fades over real time. Time constants start log-spaced over IPNet's range in scene seconds.
    """

    def __init__(self, n_in: int, n: int, tau_init_s: Tensor) -> None:
        super().__init__()
        self.n = n
        self.cell = nn.GRUCell(n_in, n)
        self.log_tau = nn.Parameter(tau_init_s.log().to(torch.float32))

    @property
    def size(self) -> int:
        return self.n

    def forward(self, h: Tensor, e: Tensor, dt_s: Tensor) -> tuple[Tensor, Tensor]:
        decayed = h * torch.exp(-dt_s[:, None] * torch.exp(-self.log_tau))
        h = self.cell(e, decayed)
        return h, h


class LeakyCell(nn.Module):
    """Leaky-integrator RNN: ``h' = a h + (1 - a) tanh(W e [+ U h])``, ``a = exp(-dt/tau)`` per unit."""

    def __init__(
        self, n_in: int, n: int, tau_s: Tensor, recurrent: bool, learned: LearnedTimeConstants | None
    ):
        super().__init__()
        self.n = n
        self.inp = nn.Linear(n_in, n)
        self.rec = nn.Linear(n, n, bias=False) if recurrent else None
        if self.rec is not None:
            nn.init.zeros_(self.rec.weight)
        self.learned_tau = learned
        self.tau_s: Tensor
        self.register_buffer("tau_s", tau_s.to(torch.float32))

    @property
    def size(self) -> int:
        return self.n

    def forward(self, h: Tensor, e: Tensor, dt_s: Tensor) -> tuple[Tensor, Tensor]:
        tau = self.learned_tau() if self.learned_tau is not None else self.tau_s
        pre = self.inp(e)
        if self.rec is not None:
            pre = pre + self.rec(h)
        keep = torch.exp(-dt_s[:, None] / tau)
        h = torch.lerp(torch.tanh(pre), h, keep)
        return h, h


class TrajectoryNet(nn.Module):
    """Encoder + memory + readout. The memory is a plain tensor passed in and out of ``step``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        d_in = cfg.n_features
        for _ in range(cfg.encoder_layers):
            layers += [nn.Linear(d_in, cfg.d_embed), nn.Tanh()]
            d_in = cfg.d_embed
        self.encoder = nn.Sequential(*layers)
        self.feature_mask: Tensor
        mask = torch.ones(cfg.n_features)
        mask[FEATURE_NAMES.index("log_dt_rel_100ms")] = 0.0
        self.register_buffer("feature_mask", mask, persistent=False)
        self.mtj: MTJNeuronLayer | None = None
        self.cell: RecurrentCell | None = None
        self.ct: CTGRUCell | LeakyCell | None = None
        p = MTJParams(**cfg.mtj)
        if cfg.kind == "ipnet":
            self.mtj = MTJNeuronLayer(
                cfg.d_embed, cfg.n_memory, p, cfg.tau, cfg.tau_scale, cfg.lateral, cfg.drive
            )
        elif cfg.kind in ("gru", "lstm"):
            self.cell = RecurrentCell(cfg.kind, cfg.d_embed, cfg.n_memory)
        else:
            # the leaky control and the CT-GRU start from IPNet's time constants, in scene seconds
            scene_s = device_time_constants(cfg.n_memory, p, cfg.tau, cfg.tau_scale) / p.time_scale
            if cfg.kind == "ctgru":
                self.ct = CTGRUCell(cfg.d_embed, cfg.n_memory, tau_spread(cfg.n_memory, p) / p.time_scale)
            else:
                lo, hi = (
                    p.tau_th_min_s * cfg.tau_scale / p.time_scale,
                    p.tau_th_max_s * cfg.tau_scale / p.time_scale,
                )
                learned = LearnedTimeConstants(scene_s, lo, hi) if cfg.tau == "learned" else None
                self.ct = LeakyCell(cfg.d_embed, cfg.n_memory, scene_s, cfg.lateral == "dense", learned)
        n_sensed = 2 * cfg.n_memory if (cfg.kind == "ipnet" and cfg.readout == "both") else cfg.n_memory
        # The readout normalises the memory signal across units (per agent, so streaming-safe), for every model
        # alike. For IPNet it is the sense amplifier: neuron temperatures differ by a few kelvin on a common
        # rise, too small a signal for the readout unless normalised.
        self.memory_norm = nn.LayerNorm(cfg.n_memory)
        self.readout = nn.Sequential(
            nn.Linear(cfg.d_embed + n_sensed, cfg.d_readout),
            nn.GELU(),
            nn.Linear(cfg.d_readout, cfg.d_readout),
            nn.GELU(),
            nn.Linear(cfg.d_readout, cfg.head_size),
        )
        # start at "no correction": the untrained model is constant velocity, with 1 m deviations. Several
        # modes start a little apart (small random weights): identical modes would tie for every target and
        # winner-takes-all would train one of them only
        last = self.readout[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        if cfg.modes > 1:
            with torch.no_grad():
                last.weight[: cfg.modes * cfg.pred_steps * 2].normal_(0.0, 0.01)
        # per-horizon factor on the deviations, fitted after training on the validation split so that 95% of
        # true points fall in the predicted 95% region (``models.calibration``); 1 until then
        self.std_scale: Tensor
        self.register_buffer("std_scale", torch.ones(cfg.pred_steps))

    @property
    def memory_size(self) -> int:
        """Floats of learned state per agent."""
        if self.cell is not None:
            return self.cell.size
        return self.cfg.n_memory

    def initial_memory(self, b: int) -> Tensor:
        """(B, memory_size) state of a new track."""
        if self.mtj is not None:
            return self.mtj.initial(b)
        return torch.zeros(b, self.memory_size)

    def embed(self, feats: Tensor) -> Tensor:
        """(..., n_features) encoded observations -> (..., d_embed) embeddings."""
        if not self.cfg.sees_interval:
            feats = feats * self.feature_mask  # the interval column zeroed
        return self.encoder(feats)

    def update(self, memory: Tensor, e: Tensor, dt_s: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
        """The memory alone: new memory, the signals the readout senses of it, and its physical energy.

        What differs between the models (the encoder and the readout are shared); ``clients.benchmarks``
        times it on its own.

        Args:
            memory: (B, memory_size) state before the observation.
            e: (B, d_embed) embedded observation.
            dt_s: (B,) seconds since the previous observation.

        Returns:
            memory (B, memory_size), sensed signals [(B, n_memory), ...], energy (B,) joules (zeros for
            the digital memories).
        """
        if self.mtj is not None:
            memory, p_sw, energy = self.mtj(memory, e, dt_s)
            # = memory_norm((T - T0)/(T_max - T0)): the normalisation is invariant to the sensing's scale
            # but for eps, rescaled here (one pass fewer); the rise over T0 keeps float32 precision
            mp = self.mtj.params
            norm = self.memory_norm
            sensed = F.layer_norm(
                memory - mp.t0_k,
                norm.normalized_shape,
                norm.weight,
                norm.bias,
                norm.eps * (mp.t_max_k - mp.t0_k) ** 2,
            )
            if self.cfg.readout == "p_switch":
                return memory, [p_sw], energy
            if self.cfg.readout == "temperature":
                return memory, [sensed], energy
            return memory, [p_sw, sensed], energy
        if self.cell is not None:
            memory, h = self.cell(memory, e)
        else:
            assert self.ct is not None
            memory, h = self.ct(memory, e, dt_s)
        return memory, [self.memory_norm(h)], torch.zeros(e.shape[0])

    def step(self, memory: Tensor, feats: Tensor, dt_s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The streaming step shared by training and serving.

        Args:
            memory: (B, memory_size) state before the observation.
            feats: (B, n_features) encoded observation (``models.kinematics.observe``).
            dt_s: (B,) seconds since the previous observation.

        Returns:
            memory (B, memory_size), the readout's output (B, head_size) (``decode`` reads it), and the
            modeled physical energy of the memory update (B,) joules (IPNet only; zeros otherwise:
            the digital memory energy model is in ``models.energy``).
        """
        e = self.embed(feats)  # (B, E)
        memory, sensed_parts, energy = self.update(memory, e, dt_s)
        out = self.readout(torch.cat([e, *sensed_parts], dim=1))  # one concatenation: (B, E + sensed)
        return memory, out, energy

    def decode(self, head: Tensor) -> Forecast:
        """(..., head_size) readout output -> ``Forecast`` (deviations with the calibration applied)."""
        cfg = self.cfg
        lead = head.shape[:-1]
        k, n = cfg.modes, cfg.modes * cfg.pred_steps * 2
        offsets = head[..., :n].reshape(*lead, k, cfg.pred_steps, 2)
        log_std = None
        if cfg.uncertainty:
            # clamped: 1 cm to 150 m, so one wild output cannot make the likelihood infinite
            raw = head[..., n : 2 * n].reshape(*lead, k, cfg.pred_steps, 2).clamp(-4.6, 5.0)
            log_std = raw + self.std_scale.log()[:, None]
        logits = head[..., -k:] if k > 1 else head.new_zeros((*lead, 1))
        return Forecast(offsets, log_std, logits)

    def forward_sequence(self, feats: Tensor, dt_s: Tensor, valid: Tensor) -> Tensor:
        """Run the streaming step over padded sequences (training and evaluation).

        Args:
            feats: (B, L, F); dt_s: (B, L); valid: (B, L) bool, True where an observation exists.

        Returns:
            (B, L, head_size) readout outputs at every step (garbage where not valid; ``decode`` reads them).
        """
        b, seq_len, _ = feats.shape
        memory = self.initial_memory(b)
        outs = []
        for k in range(seq_len):
            new_mem, out, _ = self.step(memory, feats[:, k], dt_s[:, k])
            keep = valid[:, k : k + 1]
            memory = torch.where(keep, new_mem, memory)
            outs.append(out)
        return torch.stack(outs, dim=1)
