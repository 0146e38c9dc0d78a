"""IPNet and its recurrent baselines: one encoder, one memory, one readout.

``TrajectoryNet`` = encoder (features -> embedding) + memory + readout (embedding, memory output ->
correction to constant velocity in the agent frame). Only the memory differs between models:

- ``ipnet``: a layer of MTJ neurons driven by the embedding; the neuron temperatures are the only state.
  The heat decays over the real elapsed time of each step (physics), so irregular sampling needs no padding.
- ``gru`` / ``lstm``: recurrent cells with the same width; they see the interval only as an input feature.

Every model exposes the same streaming step ``step(memory, features, dt) -> (memory, offsets, energy)``;
``forward_sequence`` is a loop over that very step, so training and serving cannot disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models.kinematics import FEATURE_NAMES, N_FEATURES
from models.mtj import FusedSwitching, MTJParams, switching_probability, tau_spread

MODEL_KINDS = ("ipnet", "gru", "lstm")


@dataclass
class ModelConfig:
    """Architecture of one learned model (stored in every checkpoint as ``model_args``)."""

    kind: str = "ipnet"
    n_features: int = N_FEATURES
    d_embed: int = 32
    encoder_layers: int = 2
    n_memory: int = 64  # MTJ neurons, or hidden units of the GRU/LSTM
    d_readout: int = 128
    pred_dt_s: float = 0.1
    pred_steps: int = 50  # 5 s at 0.1 s
    # IPNet: log-spaced thermal time constants (False: every device at their geometric mean)
    tau_spread: bool = False
    readout: str = "both"  # IPNet: what the readout senses: "p_switch", "temperature" or "both"
    # IPNet: the driver reads each neuron's temperature before its pulse (lateral coupling)
    lateral: bool = True
    cv_prior: bool = True  # predict a correction to constant velocity (False: the whole agent-frame future)
    # The observed interval as an encoder input; None: by kind. The recurrent baselines need it (they count
    # steps, dt is how they learn time). IPNet does without: its neurons integrate the physical time that
    # passed, and a readout that never sees the interval cannot misread a rate it was not trained at
    # (measured: with it, IPNet lost its advantage at 5 and 2 Hz; see the model card).
    interval_input: bool | None = None
    mtj: dict[str, float] = field(default_factory=lambda: MTJParams().to_dict())

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.kind!r}; expected one of {MODEL_KINDS}")

    @property
    def sees_interval(self) -> bool:
        """Whether the encoder gets the observed interval (``interval_input``, or by kind when None)."""
        return self.kind != "ipnet" if self.interval_input is None else self.interval_input

    @property
    def horizons_s(self) -> list[float]:
        return [self.pred_dt_s * (j + 1) for j in range(self.pred_steps)]

    def to_dict(self) -> dict:
        return asdict(self)


class MTJNeuronLayer(nn.Module):
    """A layer of MTJ neurons: drive -> Joule heat -> temperature (memory) -> switching probability."""

    def __init__(
        self, n_in: int, n_neurons: int, params: MTJParams, spread: bool = True, lateral: bool = False
    ) -> None:
        super().__init__()
        self.params = params
        self.drive = nn.Linear(n_in, n_neurons)
        # lateral coupling: the pulse of each neuron also depends on the sensed temperatures of the layer
        # (read just before the pulse); the temperatures stay the only state
        self.lateral = nn.Linear(n_neurons, n_neurons, bias=False) if lateral else None
        if self.lateral is not None:
            nn.init.zeros_(self.lateral.weight)
        self.tau_dev_s: Tensor
        self.neg_inv_tau: Tensor
        taus = tau_spread(n_neurons, params, spread)
        self.register_buffer("tau_dev_s", taus.to(torch.float32))
        # derived, not saved: checkpoints keep only tau_dev_s. One value when every device has the same time
        # constant (the shipped models): the decay factors are then one per agent, not one per neuron.
        neg_inv = -(1.0 / taus).to(torch.float32)
        self.register_buffer(
            "neg_inv_tau", neg_inv[:1] if bool((neg_inv == neg_inv[0]).all()) else neg_inv, persistent=False
        )
        self.fused = FusedSwitching.of(params)
        # steady-state rise at full drive, kelvin. The relaxation mixes T (in [T0, T_max]) with its steady state
        # T0 + c_ss d^2 <= T0 + c_ss: when that is <= T_max the result stays in range by itself, and the clamp
        # is one pass for nothing
        self.c_ss = params.v_max_v**2 * params.duty * params.r_th_k_per_w / params.r_p_ohm
        self.needs_clamp = params.t0_k + self.c_ss > params.t_max_k
        self.t0_k: Tensor
        # 0-d: the operand of torch.add that builds the steady state (torch.add needs a tensor there)
        self.register_buffer("t0_k", torch.tensor(params.t0_k), persistent=False)

    def initial(self, b: int) -> Tensor:
        """Every neuron at ambient temperature: (B, N) kelvin."""
        return torch.full((b, self.drive.out_features), self.params.t0_k)

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
        # cooling without drive, then the drive: two exact steps of thermal_step (inlined: hot path).
        # The first is the identity unless a gap outlasts max_drive_s (rare): skipped then, for speed.
        if len(dt_s) and float(window.max()) > p.max_drive_s:
            temp = torch.lerp(
                torch.full_like(temp, p.t0_k), temp, torch.exp((window - drive_s) * self.neg_inv_tau)
            )
        pre = self.drive(x)
        if self.lateral is not None:
            # + lateral(sensed temperature rise (T - T0)/(T_max - T0)), the 1/(T_max - T0) folded into addmm
            pre = torch.addmm(pre, temp - p.t0_k, self.lateral.weight.t(), alpha=1.0 / (p.t_max_k - p.t0_k))
        drive01 = torch.sigmoid(pre)  # (B, N) drive voltage / v_max
        d2 = drive01 * drive01
        # relax towards the steady state under the mean drive power V^2/R_P (V = v_max drive01):
        # T' = T decay + (1 - decay)(T0 + c d^2) = lerp(T, T0 + c d^2, 1 - decay), two passes. The weight is
        # (B, 1) when every device has the same time constant. One broadcast operand per pass: an addcmul
        # with two of them (the previous form) ran several times slower on CPU, off torch's vectorised loop
        heat = -torch.expm1(drive_s * self.neg_inv_tau)  # 1 - decay
        temp = torch.lerp(temp, torch.add(self.t0_k, d2, alpha=self.c_ss), heat)
        if self.needs_clamp:
            temp = torch.clamp(temp, min=p.t0_k, max=p.t_max_k)
        if self.fused is not None:
            out = self.fused(drive01, temp)
        else:
            out = switching_probability(drive01 * (p.v_max_v / p.r_p_ohm), temp, p)
        energy = d2.sum(dim=1) * (p.v_max_v**2 * p.duty / p.r_p_ohm) * drive_s[:, 0]  # Joule heat, J
        return temp, out, energy


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
        self.cell: nn.Module | None = None
        if cfg.kind == "ipnet":
            self.mtj = MTJNeuronLayer(
                cfg.d_embed, cfg.n_memory, MTJParams(**cfg.mtj), cfg.tau_spread, cfg.lateral
            )
        elif cfg.kind == "gru":
            self.cell = nn.GRUCell(cfg.d_embed, cfg.n_memory)
        else:
            self.cell = nn.LSTMCell(cfg.d_embed, cfg.n_memory)
        n_sensed = 2 * cfg.n_memory if (cfg.kind == "ipnet" and cfg.readout == "both") else cfg.n_memory
        # The readout normalises the memory signal across units (per agent, so streaming-safe), for every model
        # alike. For IPNet it is the sense amplifier: neuron temperatures differ by a few kelvin on a ~20 K
        # common rise, invisible to the readout unless normalised (without it IPNet was worse than constant velocity on AV2).
        self.memory_norm = nn.LayerNorm(cfg.n_memory)
        self.readout = nn.Sequential(
            nn.Linear(cfg.d_embed + n_sensed, cfg.d_readout),
            nn.GELU(),
            nn.Linear(cfg.d_readout, cfg.d_readout),
            nn.GELU(),
            nn.Linear(cfg.d_readout, 2 * cfg.pred_steps),
        )
        # start at "no correction": the untrained model is constant velocity
        last = self.readout[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    @property
    def memory_size(self) -> int:
        """Floats of learned state per agent."""
        return 2 * self.cfg.n_memory if self.cfg.kind == "lstm" else self.cfg.n_memory

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

        What differs between IPNet and the recurrent baselines (the encoder and the readout are shared);
        ``clients.benchmarks`` times it on its own.

        Args:
            memory: (B, memory_size) state before the observation.
            e: (B, d_embed) embedded observation.
            dt_s: (B,) seconds since the previous observation.

        Returns:
            memory (B, memory_size), sensed signals [(B, n_memory), ...], energy (B,) joules (zeros for
            the recurrent baselines).
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
                sensed_parts = [p_sw]
            elif self.cfg.readout == "temperature":
                sensed_parts = [sensed]
            else:
                sensed_parts = [p_sw, sensed]
        else:
            memory, h = self.recurrent_update(memory, e)
            sensed_parts = [self.memory_norm(h)]
            energy = torch.zeros(e.shape[0])
        return memory, sensed_parts, energy

    def recurrent_update(self, memory: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        """The GRU/LSTM cell: new memory (B, memory_size) and the hidden state the readout senses
        (B, n_memory)."""
        assert self.cell is not None
        if self.cfg.kind == "gru":
            memory = self.cell(e, memory)
            return memory, memory
        n = self.cfg.n_memory
        h, c = self.cell(e, (memory[:, :n], memory[:, n:]))
        return torch.cat([h, c], dim=1), h

    def step(self, memory: Tensor, feats: Tensor, dt_s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The streaming step shared by training and serving.

        Args:
            memory: (B, memory_size) state before the observation.
            feats: (B, n_features) encoded observation (``models.kinematics.observe``).
            dt_s: (B,) seconds since the previous observation.

        Returns:
            memory (B, memory_size), agent-frame correction to constant velocity (B, H, 2), and the
            modeled physical energy of the memory update (B,) joules (IPNet only; zeros otherwise:
            the digital memory energy model is in ``models.energy``).
        """
        e = self.embed(feats)  # (B, E)
        memory, sensed_parts, energy = self.update(memory, e, dt_s)
        out = self.readout(torch.cat([e, *sensed_parts], dim=1))  # one concatenation: (B, E + sensed)
        return memory, out.view(-1, self.cfg.pred_steps, 2), energy

    def forward_sequence(self, feats: Tensor, dt_s: Tensor, valid: Tensor) -> Tensor:
        """Run the streaming step over padded sequences (training and evaluation).

        Args:
            feats: (B, L, F); dt_s: (B, L); valid: (B, L) bool, True where an observation exists.

        Returns:
            (B, L, H, 2) corrections at every step (garbage where not valid).
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
