"""``TrajectoryNet.step`` for inference: the same function with fewer, cheaper operations.

On the serving path a step is dozens of small tensor operations whose dispatch, not arithmetic, is most of
the time below a few hundred agents. :class:`InferenceStep` folds what is constant once the weights are
frozen and writes every part of the readout's input into one buffer:

- every model: the encoder's interval mask into its first weight (a zero column), the activations in place,
  no concatenation (the embedding and the sensed memory are written into one ``(B, E + sensed)`` block);
- IPNet with the shipped kind of layer (one thermal time constant, the fused switching law, a readout of the
  temperatures, with or without the switching probabilities): everything after the drive's matrix product
  (two with the lateral matrix of an ablation, whose ``- T0`` is folded into the drive's bias) in one
  compiled pass (``models.native``); otherwise its torch form;
- GRU and LSTM: torch's own cell, as in training.

The encoder and readout code is the same for every model, so the benchmark's IPNet/GRU ratio compares the
memories. ``TrajectoryNet.step`` remains the definition (training uses it); ``tests/models/test_native.py``
holds this to it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from models import native
from models.mtj import LOG2_E, SOFTPLUS_BETA
from models.nets import TrajectoryNet


def _linear_parts(layers: nn.Sequential) -> list[tuple[Tensor, Tensor]]:
    """(bias, weight transposed) of each Linear, in order: the operands of ``torch.addmm``."""
    return [(m.bias.detach(), m.weight.detach().t()) for m in layers if isinstance(m, nn.Linear)]


class _NativeMTJ:
    """IPNet's memory update through the compiled kernel; None from :meth:`of` where it does not apply."""

    def __init__(self, net: TrajectoryNet, ext: native.Extension) -> None:
        mtj = net.mtj
        assert mtj is not None and mtj.fused is not None
        p = mtj.params
        self.fn = ext.lib.mtj_frame
        ffi = self.ffi = ext.ffi
        self.params = p
        self.with_p = net.cfg.readout == "both"
        self.neg_inv_tau = -1.0 / float(mtj.tau_dev_s[0])
        drive_b = mtj.drive.bias.detach().double()
        self.drive_wt = mtj.drive.weight.detach().t()
        self.lateral_wt: Tensor | None = None
        if mtj.lateral is not None:
            # pre = drive(e) + (T - T0) W_l^T / (T_max - T0) = [b - T0 W_l 1 / (T_max - T0)] + e W_d^T + T W_l'^T
            alpha = 1.0 / (p.t_max_k - p.t0_k)
            w_l = mtj.lateral.weight.detach().double() * alpha
            drive_b = drive_b - p.t0_k * w_l.sum(dim=1)
            self.lateral_wt = w_l.float().t().contiguous()
        self.drive_b = drive_b.float()
        norm = net.memory_norm
        self.gamma = norm.weight.detach().contiguous()
        self.beta = norm.bias.detach().contiguous()
        f = mtj.fused
        self.c_params = ffi.new(
            "mtj_params *",
            {
                "t0": p.t0_k,
                "t_max": p.t_max_k,
                "c_ss": mtj.c_ss,
                "a": f.t_curie_pow,
                "c_i": f.c_i,
                "bl": SOFTPLUS_BETA * LOG2_E,
                "log2_rate": math.log2(f.rate),
                "kz": -f.c_delta * LOG2_E / SOFTPLUS_BETA**2,
                "log2e": LOG2_E,
                "ln_eps": norm.eps * (p.t_max_k - p.t0_k) ** 2,
                "clamp": int(mtj.needs_clamp),
            },
        )
        # energy of a frame = sum(d^2) v_max^2 duty / R_P x drive seconds (as MTJNeuronLayer.forward)
        self.energy_per_d2_s = p.v_max_v**2 * p.duty / p.r_p_ohm

    @staticmethod
    def of(net: TrajectoryNet, use_native: bool) -> _NativeMTJ | None:
        mtj = net.mtj
        if not use_native or mtj is None or mtj.fused is None or net.cfg.readout == "p_switch":
            return None
        cfg = net.cfg
        if cfg.tau != "single" or cfg.drive != "sigmoid" or cfg.lateral == "diffusion":
            return None  # the kernel takes one decay per agent and the one-polarity drive
        ext = native.load()
        return None if ext is None else _NativeMTJ(net, ext)

    def __call__(
        self, temp: Tensor, e: Tensor, dt_s: np.ndarray, sensed: Tensor
    ) -> tuple[Tensor, np.ndarray]:
        """New temperatures (B, N) and the frame's Joule heat (B,) J; into ``sensed`` the normalised
        temperatures, after the switching probabilities when the readout senses both."""
        p = self.params
        b, n = temp.shape
        window = p.time_scale * dt_s
        drive_s = np.minimum(window, p.max_drive_s)
        heat = (-np.expm1(drive_s * self.neg_inv_tau)).astype(np.float32)
        decay = None
        if b and float(window.max()) > p.max_drive_s:  # rare: dropped frames outlast the drive window
            decay = np.exp((window - drive_s) * self.neg_inv_tau).astype(np.float32)
        temp = temp.to(torch.float32).contiguous()  # the kernel reads float32 rows
        assert sensed.dtype == torch.float32 and sensed.stride(1) == 1, "the kernel writes float32 rows"
        pre = torch.addmm(self.drive_b, e, self.drive_wt)
        if self.lateral_wt is not None:
            if decay is not None:  # the lateral input senses the temperatures after the cooling
                cooled = torch.from_numpy(decay)[:, None] * (temp - p.t0_k) + p.t0_k
                pre.addmm_(cooled, self.lateral_wt)
            else:
                pre.addmm_(temp, self.lateral_wt)
        out = torch.empty(b, n)
        d2_sum = np.empty(b, np.float32)
        stride = sensed.stride(0)
        f32 = self.ffi.cast  # every array is float32 and contiguous along its rows (checked above)
        self.fn(
            self.c_params,
            b,
            n,
            f32("float *", pre.data_ptr()),
            pre.stride(0),
            f32("float *", temp.data_ptr()),
            temp.stride(0),
            f32("float *", decay.ctypes.data) if decay is not None else self.ffi.NULL,
            f32("float *", heat.ctypes.data),
            f32("float *", self.gamma.data_ptr()),
            f32("float *", self.beta.data_ptr()),
            f32("float *", out.data_ptr()),
            f32("float *", sensed.data_ptr()) if self.with_p else self.ffi.NULL,
            # float32: the normalised temperatures follow the N probabilities, or come alone
            f32("float *", sensed.data_ptr() + (4 * n if self.with_p else 0)),
            stride,
            f32("float *", d2_sum.ctypes.data),
        )
        return out, d2_sum.astype(np.float64) * (self.energy_per_d2_s * drive_s)


class InferenceStep:
    """``net.step`` for a frozen net (``eval``, no gradients): same inputs, same outputs, less overhead.

    The folded constants are taken from the weights at construction: a net trained further needs a new one
    (``Predictor`` builds one per loaded checkpoint).
    """

    def __init__(self, net: TrajectoryNet, use_native: bool = True) -> None:
        self.net = net
        cfg = net.cfg
        self.encoder = _linear_parts(net.encoder)
        if self.encoder and not cfg.sees_interval:
            bias, weight_t = self.encoder[0]
            self.encoder[0] = (bias, (weight_t.t() * net.feature_mask).t())  # the interval column zeroed
        self.readout = _linear_parts(net.readout)
        self.d_embed = cfg.d_embed
        self.width = self.readout[0][1].shape[0]  # E + sensed signals
        self.native_mtj = _NativeMTJ.of(net, use_native)

    @property
    def native(self) -> bool:
        """Whether the memory update runs the compiled kernel."""
        return self.native_mtj is not None

    def embed_into(self, feats: Tensor, e: Tensor) -> None:
        """The encoder, its last activation written into ``e`` (a view of the readout's input block)."""
        x = feats
        if not self.encoder:
            e.copy_(x)
            return
        for k, (bias, weight_t) in enumerate(self.encoder):
            if k == len(self.encoder) - 1:
                torch.tanh(torch.addmm(bias, x, weight_t), out=e)
            else:
                x = torch.addmm(bias, x, weight_t).tanh_()

    def update(
        self, memory: Tensor, e: Tensor, dt_s: np.ndarray, sensed: Tensor
    ) -> tuple[Tensor, np.ndarray]:
        """The memory alone (``TrajectoryNet.update``): new memory, energy (B,) J; the sensed signals into
        ``sensed`` (a ``(B, sensed)`` view)."""
        if self.native_mtj is not None:
            return self.native_mtj(memory, e, dt_s, sensed)
        net = self.net
        if net.cell is not None:  # GRU / LSTM: the cell, its norm straight into the block (no energy tensor)
            memory, h = net.cell(memory, e)
            norm = net.memory_norm
            sensed.copy_(F.layer_norm(h, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
            return memory, np.zeros(len(dt_s))
        dt_t = torch.from_numpy(dt_s.astype(np.float32))
        memory, parts, energy = self.net.update(memory, e, dt_t)
        torch.cat(parts, dim=1, out=sensed)
        return memory, energy.numpy().astype(np.float64)

    def __call__(self, memory: Tensor, feats: Tensor, dt_s: np.ndarray) -> tuple[Tensor, Tensor, np.ndarray]:
        """One observation per agent.

        Args:
            memory: (B, memory_size) state before the observation.
            feats: (B, n_features) encoded observation.
            dt_s: (B,) float64 seconds since the previous observation (0 for a track's first).

        Returns:
            memory (B, memory_size), the readout's output (B, head_size) (``TrajectoryNet.decode``), energy
            (B,) joules.
        """
        block = torch.empty(feats.shape[0], self.width)  # [embedding | sensed memory]: the readout's input
        e = block[:, : self.d_embed]
        self.embed_into(feats, e)
        memory, energy = self.update(memory, e, dt_s, block[:, self.d_embed :])
        (b0, w0), *rest = self.readout
        h = F.gelu(torch.addmm(b0, block, w0))
        for k, (bias, weight_t) in enumerate(rest):
            h = torch.addmm(bias, h, weight_t)
            if k < len(rest) - 1:
                h = F.gelu(h)
        return memory, h, energy
