"""Compact model of a magnetic tunnel junction (MTJ) neuron whose working memory is its temperature.

Every parameter is in SI units and tagged like the sourced notes in ``../shared/docs/mtj-physics.md``:
``[S]`` a number stated in a cited source, ``[D]`` derived here from sourced numbers, ``[A]`` an
assumption of ours (to calibrate against a real device). The physics, in the order a step applies it:

1. Thermal node (lumped): ``C_th dT/dt = P(t) - (T - T0)/R_th`` with ``tau_th = R_th C_th``. For a
   piecewise-constant power the exact solution over an interval ``dt`` is
   ``T' = T0 + P R_th + (T - T0 - P R_th) exp(-dt/tau_th)``: stable for any ``dt >= 0``, exact for
   irregular sampling and dropped frames, differentiable.
2. Joule heating ``P = V^2 / R_P`` while the neuron is driven (the device is read in its parallel state;
   R_P is nearly temperature-flat for thick barriers [S: Ma et al.]).
3. Intrinsic plasticity: thermally activated switching. ``Delta(T) = Delta0 (T0/T) k(T)`` and
   ``I_c0(T) = I_c0 k(T)`` with ``k(T) = (m(T)/m(T0))^n``, ``m(T) = 1 - (T/T_C)^{3/2}``;
   ``tau_sw = tau0 exp[Delta(T) (1 - I/I_c0(T))^b]`` and ``P_sw = 1 - exp(-t_p/tau_sw)``. A hot neuron
   has a lower barrier and a lower critical current, so it switches (fires) more easily: it is more excitable.

The time-scale bridge (section 6 of the notes): a device cools in nanoseconds while a perception stream
samples every ~100 ms. ``time_scale`` maps one scene second to ``time_scale`` device seconds (default
1e-8: a 100 ms frame is a 1 ns device window). It is a simulation convention, not a physical claim, and
every result records it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

K_B = 1.380649e-23  # J/K, Boltzmann constant (exact, SI 2019)
# [A] sharpness of the smooth clamp of the switching drive 1 - I/I_c0 at zero (a differentiable max(., 0))
SOFTPLUS_BETA = 20.0


@dataclass(frozen=True)
class MTJParams:
    """Device parameters (SI units). Tags: [S] sourced, [D] derived, [A] assumption."""

    diameter_m: float = 50e-9  # [A] pillar diameter (notes section 5)
    ra_ohm_m2: float = 10e-12  # [S] resistance-area product 10 Ohm um^2 (acemap; RA=8 STT-MRAM process)
    tmr_p0: float = (
        0.765  # [D] spin polarisation at 0 K, fitted to TMR 280% (20 K) / 180% (300 K), Skowronski
    )
    tmr_a: float = 1.93e-5  # [D] K^-1.5, P(T) = P0 (1 - a T^1.5) (Shang PRB 1998 form)
    tmr_v_half_v: float = 0.5  # [A] bias at which TMR halves (Gonzalez-Ruano: collapse above ~0.5 V)
    v_max_v: float = (
        0.6  # [D] drive clamp: keeps T0 + R_th V^2/R_P <= t_max_k, below breakdown (V_bd >~ 1 V [A])
    )
    t0_k: float = 300.0  # [A] ambient temperature
    t_max_k: float = 450.0  # [A] ceiling for validity (Delta T <= 150 K, cf. 145 K FEM case, D.H. Lee)
    r_th_k_per_w: float = 2.0e6  # [D] thermal resistance: 49 uW -> 100 K rise (notes section 2)
    tau_th_min_s: float = 1e-9  # [A] fastest device (notes default tau_th = 1 ns)
    tau_th_max_s: float = 30e-9  # [A] slowest device: tens of ns are supported (20 ns TA-MRAM heating, Sousa)
    duty: float = 0.5  # [A] fraction of each device window during which the drive is applied (PWM)
    time_scale: float = 1e-8  # [A] device seconds per scene second: 100 ms frame -> 1 ns window
    tau0_s: float = 1e-9  # convention: attempt time (Soumah arXiv 2402.03452 discusses it)
    delta0: float = 30.0  # [A] thermal stability factor at T0 for a stochastic-leaning neuron
    ic0_a: float = 100e-6  # [A] critical current at T0
    switching_exponent_b: float = 2.0  # [S] Taniguchi arXiv 1204.1190
    t_curie_k: float = 1000.0  # [A] CoFeB Curie temperature (not found in sources)
    anisotropy_exponent_n: float = 2.0  # [A] Callen-Callen exponent
    # [A] the switching attempt that reads the neuron is the last t_sense of its drive pulse, at the drive's
    # voltage: inside the pulse (duty x window) at every rate up to 25 Hz (0.4 ns window, 0.2 ns pulse at the
    # default time_scale and duty), so its heat is in the thermal step and its energy in the drive's. (The
    # notes' worked example uses a 10 ns attempt: longer than a 10 Hz frame's 1 ns window.)
    t_sense_s: float = 0.2e-9
    max_drive_s: float = (
        300e-9  # [A] one observation drives for at most this long (10 tau_max); longer gaps only cool
    )

    @property
    def area_m2(self) -> float:
        """Junction area for a circular pillar."""
        return math.pi * self.diameter_m**2 / 4.0

    @property
    def r_p_ohm(self) -> float:
        """Parallel-state resistance R_P = RA / area (5.09 kOhm at the defaults)."""
        return self.ra_ohm_m2 / self.area_m2

    def tau_scene_s(self, tau_th_s: float) -> float:
        """Scene-time constant of a device whose thermal time constant is ``tau_th_s``."""
        return tau_th_s / self.time_scale

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# --- device physics as differentiable functions (tensors or floats broadcast) -------------------------


def thermal_step(temp: Tensor, power_w: Tensor, dt_s: Tensor, tau_s: Tensor, p: MTJParams) -> Tensor:
    """Exact solution of ``C_th dT/dt = P - (T - T0)/R_th`` over ``dt_s`` device seconds at constant ``P``."""
    t_ss = p.t0_k + power_w * p.r_th_k_per_w
    decay = torch.exp(-torch.clamp(dt_s, min=0.0) / tau_s)
    return t_ss + (temp - t_ss) * decay


def polarization(temp: Tensor, p: MTJParams) -> Tensor:
    """Spin polarisation P(T) = P0 (1 - a T^1.5)."""
    return p.tmr_p0 * (1.0 - p.tmr_a * torch.clamp(temp, min=0.0) ** 1.5)


def tmr(temp: Tensor, p: MTJParams, bias_v: Tensor | float = 0.0) -> Tensor:
    """TMR(T, V) = 2P^2/(1-P^2) / (1 + V^2/V_h^2): 180% at 300 K, falling with T and bias."""
    pol = polarization(temp, p)
    bias = torch.as_tensor(bias_v, dtype=temp.dtype)
    return 2 * pol**2 / (1 - pol**2) / (1 + bias**2 / p.tmr_v_half_v**2)


def resistance(temp: Tensor, antiparallel: bool, p: MTJParams, bias_v: Tensor | float = 0.0) -> Tensor:
    """R_P (temperature-flat) or R_AP = R_P (1 + TMR(T, V))."""
    r_p = torch.full_like(temp, p.r_p_ohm)
    return r_p * (1 + tmr(temp, p, bias_v)) if antiparallel else r_p


def reduced_magnetization(temp: Tensor, p: MTJParams) -> Tensor:
    """m(T) = 1 - (T/T_C)^1.5 (Bloch law), kept positive."""
    return torch.clamp(1.0 - (torch.clamp(temp, min=0.0) / p.t_curie_k) ** 1.5, min=1e-3)


def anisotropy_scale(temp: Tensor, p: MTJParams) -> Tensor:
    """k(T) = (m(T)/m(T0))^n."""
    m0 = 1.0 - (p.t0_k / p.t_curie_k) ** 1.5
    return (reduced_magnetization(temp, p) / m0) ** p.anisotropy_exponent_n


def energy_barrier(temp: Tensor, p: MTJParams) -> Tensor:
    """Delta(T) = Delta0 (T0/T) k(T), kept >= 1 so Arrhenius statistics stay meaningful."""
    return torch.clamp(p.delta0 * (p.t0_k / temp) * anisotropy_scale(temp, p), min=1.0)


def critical_current(temp: Tensor, p: MTJParams) -> Tensor:
    """I_c0(T) = I_c0(T0) k(T)."""
    return p.ic0_a * anisotropy_scale(temp, p)


def _pow(x: Tensor, e: float) -> Tensor:
    # exponents of 2 and 1.5 are the common case: avoid the generic pow kernel on the hot path
    if e == 2.0:
        return x * x
    if e == 1.5:
        return x * torch.sqrt(x)
    return x**e


def switching_log_rate(current_a: Tensor, temp: Tensor, p: MTJParams) -> Tensor:
    """z = ln(t_p/tau_sw), so that P_sw = 1 - exp(-exp(z)); computed in the log domain for stable gradients.

    Same law as ``energy_barrier`` and ``critical_current`` (k(T) computed once). The bracket
    ``1 - I/I_c0(T)`` is softplus-clamped at zero so that overdriven neurons stay differentiable.
    Written with few tensor operations: it runs for every neuron of every agent on the serving path.
    """
    m0 = 1.0 - (p.t0_k / p.t_curie_k) ** 1.5
    x = torch.clamp(temp, min=0.0) / p.t_curie_k
    m = torch.clamp(1.0 - x * torch.sqrt(x), min=1e-3)
    k = _pow(m, p.anisotropy_exponent_n) * (1.0 / m0**p.anisotropy_exponent_n)  # k(T) = (m/m0)^n
    delta = torch.clamp((p.delta0 * p.t0_k) * k / temp, min=1.0)
    # softplus(beta u) / beta, in one kernel
    u = torch.nn.functional.softplus(1.0 - current_a / (p.ic0_a * k), beta=SOFTPLUS_BETA)
    return math.log(p.t_sense_s / p.tau0_s) - delta * _pow(u, p.switching_exponent_b)


def switching_probability(current_a: Tensor, temp: Tensor, p: MTJParams) -> Tensor:
    """Expected switching probability of one sense pulse: the neuron's differentiable output."""
    z = torch.clamp(switching_log_rate(current_a, temp, p), max=30.0)
    return -torch.expm1(-torch.exp(z))


LOG2_E = 1.0 / math.log(2.0)  # exp(x) = 2^(x log2(e))


@dataclass(frozen=True)
class FusedSwitching:
    """``switching_probability(v_max d / R_P, T, p)`` in 15 cheap tensor operations instead of about 25.

    The serving hot path runs it for every neuron of every agent. Valid, and so built by :meth:`of`, only
    for the Callen-Callen and switching exponents of 2 and while the temperature stays in [T0, T_max]
    (the layer keeps it there), where the general function's safety clamps never bind: m(T) stays far
    above zero, Delta(T) >= 1 and z <= ln(t_sense/tau0) <= 30. Constants are folded once:
    ``I / I_c0(T) = c_i d / m(T)^2`` and ``Delta(T) = c_delta m(T)^2 / T``. The exponentials are taken
    base 2, log2(e) folded into a multiplier that is there anyway: torch's CPU ``exp2`` kernel is several
    times cheaper than its ``exp`` (and the softplus kernel), and the results agree to within one rounding
    of the argument. ``tests/models/test_mtj.py`` checks it against the general law over the whole range.
    """

    t_curie_pow: float  # T_C^-1.5
    c_i: float  # v_max m(T0)^2 / (R_P I_c0(T0))
    c_delta: float  # Delta0 T0 / m(T0)^2
    rate: float  # t_sense / tau0 = exp(z) at a zero barrier

    @functools.cached_property
    def log2_rate(self) -> Tensor:
        """log2(rate) as a 0-d tensor (an operand of one fused multiply-add)."""
        return torch.tensor(math.log2(self.rate), dtype=torch.float64)  # 0-d: takes the operands' dtype

    @staticmethod
    def of(p: MTJParams) -> FusedSwitching | None:
        """The fused form for these parameters, or None where only the general law is right."""
        if p.anisotropy_exponent_n != 2.0 or p.switching_exponent_b != 2.0:
            return None
        if not 0.0 < p.t0_k < p.t_max_k < p.t_curie_k:
            return None
        m0 = 1.0 - (p.t0_k / p.t_curie_k) ** 1.5
        m_hot = 1.0 - (p.t_max_k / p.t_curie_k) ** 1.5
        c_delta = p.delta0 * p.t0_k / m0**2
        rate = p.t_sense_s / p.tau0_s
        # Delta(T) falls with T: its clamp at 1 never binds if it holds at T_max; likewise m(T) and z
        if m_hot <= 1e-3 or c_delta * m_hot**2 / p.t_max_k < 1.0 or math.log(rate) > 30.0:
            return None
        return FusedSwitching(p.t_curie_k**-1.5, p.v_max_v * m0**2 / (p.r_p_ohm * p.ic0_a), c_delta, rate)

    def __call__(self, drive01: Tensor, temp: Tensor) -> Tensor:
        """P_sw of neurons driven at ``drive01 * v_max`` volts, at ``temp`` kelvin in [T0, T_max]."""
        m = torch.rsub(temp * torch.sqrt(temp), 1.0, alpha=self.t_curie_pow)  # m(T) = 1 - (T/T_C)^1.5
        m2 = m * m
        # u = 1 - I/I_c0(T) softplus-clamped at zero as in switching_log_rate: ln(1 + e^(beta u'))/beta, here
        # as beta u = ln(1 + 2^w) with w = beta log2(e) u' (the scale folded into the rsub). The softplus
        # threshold (beta u' > 20) is never reached: u' <= 1.
        beta = SOFTPLUS_BETA
        bu = torch.log1p(torch.exp2(torch.rsub(drive01 / m2, beta * LOG2_E, alpha=beta * LOG2_E * self.c_i)))
        # z log2(e) = log2(t_sense/tau_sw) = log2(rate) - log2(e) Delta(T) u^2, u^2 = bu^2 / beta^2
        z2 = torch.addcmul(self.log2_rate, m2 / temp, bu * bu, value=-self.c_delta * LOG2_E / beta**2)
        # P = 1 - exp(-exp(z)) = 1 - 2^(-log2(e) 2^z2); not -expm1(-exp(z)): equal to within float32
        # resolution, which is all the readout resolves, and an exp2 is much cheaper than an expm1
        return torch.rsub(torch.exp2(torch.exp2(z2) * -LOG2_E), 1.0)


def tau_spread(n: int, p: MTJParams, spread: bool = True) -> Tensor:
    """Device thermal time constants: log-spaced between the min and max (devices sized on purpose).

    ``spread=False`` gives every device the geometric mean, for the ablation that measures whether
    several time scales help.
    """
    if not spread or n == 1:
        return torch.full((n,), math.sqrt(p.tau_th_min_s * p.tau_th_max_s), dtype=torch.float64)
    return torch.logspace(math.log10(p.tau_th_min_s), math.log10(p.tau_th_max_s), n, dtype=torch.float64)
