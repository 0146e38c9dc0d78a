"""Physics of the MTJ neuron: thermal relaxation, steady state, excitability, step composition, robustness."""

from __future__ import annotations

import math

import pytest
import torch

from models.mtj import (
    FusedSwitching,
    MTJParams,
    energy_barrier,
    resistance,
    switching_probability,
    tau_spread,
    thermal_step,
    tmr,
)
from models.nets import MTJNeuronLayer

P = MTJParams()
F64 = torch.float64


def t(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


def test_derived_device_values_match_the_parameter_sheet() -> None:
    # notes section 1: R_P = RA / (pi d^2 / 4) = 5.09 kOhm for d = 50 nm, RA = 10 Ohm um^2
    assert P.r_p_ohm == pytest.approx(5093, rel=1e-3)
    # TMR 180% at 300 K from the fitted polarisation law, falling with T (144% at 400 K, 112% at 500 K)
    assert float(tmr(t(300.0), P)) == pytest.approx(1.80, abs=0.01)
    assert float(tmr(t(400.0), P)) == pytest.approx(1.44, abs=0.02)
    assert float(tmr(t(500.0), P)) == pytest.approx(1.12, abs=0.02)
    assert float(resistance(t(300.0), True, P)) == pytest.approx(14.3e3, rel=0.01)
    # the drive clamp keeps the steady state within T_max
    assert P.t0_k + P.v_max_v**2 / P.r_p_ohm * P.r_th_k_per_w <= P.t_max_k


def test_relaxation_to_ambient_follows_tau() -> None:
    tau = t(5e-9)
    t_hot = t(400.0)
    for k in (0.5, 1.0, 3.0):
        got = thermal_step(t_hot, t(0.0), tau * k, tau, P)
        assert float(got) == pytest.approx(P.t0_k + 100.0 * math.exp(-k), rel=1e-12)
    assert float(thermal_step(t_hot, t(0.0), tau * 60, tau, P)) == pytest.approx(P.t0_k, abs=1e-9)


def test_steady_state_under_constant_drive() -> None:
    power = t(49e-6)
    tau = t(2e-9)
    temp = t(P.t0_k)
    for _ in range(200):
        temp = thermal_step(temp, power, t(1e-9), tau, P)
    assert float(temp) == pytest.approx(P.t0_k + P.r_th_k_per_w * 49e-6, rel=1e-9)  # ~ +98 K


def test_two_half_steps_equal_one_step_without_input() -> None:
    tau = tau_spread(8, P)
    temp0 = torch.linspace(310, 440, 8, dtype=F64)
    dt = t(3e-9)
    one = thermal_step(temp0, t(0.0), dt, tau, P)
    two = thermal_step(thermal_step(temp0, t(0.0), dt / 2, tau, P), t(0.0), dt / 2, tau, P)
    torch.testing.assert_close(one, two, rtol=0, atol=1e-10)


def test_excitability_rises_monotonically_with_temperature() -> None:
    temps = torch.linspace(300, 450, 151, dtype=F64)
    for frac in (0.2, 0.5, 0.8):
        p_sw = switching_probability(t(frac * P.ic0_a), temps, P)
        assert torch.all(torch.diff(p_sw) > 0)
    assert torch.all(torch.diff(energy_barrier(temps, P)) < 0)


def test_worked_example_of_the_parameter_sheet() -> None:
    # notes section 3: Delta(300 K) = 30, I = 0.5 I_c0, t_p = 10 ns, b = 2 (the layer's own attempt is shorter,
    # P.t_sense_s, so that it fits in the drive pulse: the same law)
    expected = {300.0: 0.006, 350.0: 0.10, 400.0: 0.55, 450.0: 0.96}
    notes = MTJParams(t_sense_s=10e-9)
    for temp, p in expected.items():
        got = float(switching_probability(t(0.5 * P.ic0_a), t(temp), notes))
        assert got == pytest.approx(p, abs=0.02), temp


def test_the_sensing_attempt_fits_in_the_drive_pulse_up_to_25_hz() -> None:
    # the attempt is the end of the drive pulse: its heat and energy are the drive's at every such rate
    assert P.t_sense_s <= P.duty * P.time_scale * (1 / 25.0) + 1e-18


def test_no_nan_or_inf_for_any_dt_and_extreme_inputs() -> None:
    torch.manual_seed(0)
    layer = MTJNeuronLayer(4, 16, P)
    x = torch.tensor([[0.0] * 4, [1e6] * 4, [-1e6] * 4, [3.0, -2.0, 1e3, -1e3]])
    temp = layer.initial(4)
    for dt in (0.0, 1e-12, 0.1, 1.0, 1e3, 1e9, float("inf")):
        temp, out, energy = layer(temp, x, torch.full((4,), dt))
        for tensor in (temp, out, energy):
            assert torch.isfinite(tensor).all(), dt
        assert (temp >= P.t0_k - 1e-3).all() and (temp <= P.t_max_k + 1e-3).all()
        assert ((out >= 0) & (out <= 1)).all()


def test_gradients_flow_through_the_neuron() -> None:
    torch.manual_seed(0)
    layer = MTJNeuronLayer(3, 8, P)
    temp = layer.initial(2)
    x = torch.randn(2, 3)
    for _ in range(3):
        temp, out, _ = layer(temp, x, torch.full((2,), 0.1))
    out.sum().backward()
    grad = layer.drive.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_hot_neuron_fires_more_easily_than_a_cold_one() -> None:
    # intrinsic plasticity at the layer level: same input, one neuron recently driven hard
    torch.manual_seed(0)
    layer = MTJNeuronLayer(1, 1, P, tau="single", drive="sigmoid")
    with torch.no_grad():
        layer.drive.weight.fill_(1.0)
        layer.drive.bias.fill_(0.0)
    cold = layer.initial(1)
    hot = cold.clone()
    for _ in range(10):
        hot, _, _ = layer(hot, torch.tensor([[4.0]]), torch.tensor([0.1]))
    probe = torch.tensor([[0.0]])
    _, out_cold, _ = layer(cold, probe, torch.tensor([0.1]))
    _, out_hot, _ = layer(hot, probe, torch.tensor([0.1]))
    assert float(hot) > float(cold) + 10
    assert float(out_hot) > float(out_cold)
    # and it forgets: after many time constants without drive it is back to ambient
    cooled, _, _ = layer(hot, torch.tensor([[-50.0]]), torch.tensor([100.0]))
    assert float(cooled) == pytest.approx(P.t0_k, abs=0.5)


def test_time_constants_are_spread_log_uniformly() -> None:
    taus = tau_spread(5, P)
    assert float(taus[0]) == pytest.approx(P.tau_th_min_s)
    assert float(taus[-1]) == pytest.approx(P.tau_th_max_s)
    ratios = taus[1:] / taus[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, float(ratios[0])))
    same = tau_spread(5, P, spread=False)
    assert torch.all(same == same[0])
    # the documented scene-time mapping: 1 ns device at 1e-8 s/s is 100 ms of scene time
    assert P.tau_scene_s(1e-9) == pytest.approx(0.1)


def test_fused_switching_equals_the_general_law_over_the_whole_range() -> None:
    # the serving form folds constants and drops clamps that cannot bind in [T0, T_max]: same numbers
    fused = FusedSwitching.of(P)
    assert fused is not None
    temps = torch.linspace(P.t0_k, P.t_max_k, 301, dtype=F64)[:, None].expand(301, 201)
    drive01 = torch.linspace(0.0, 1.0, 201, dtype=F64)[None, :].expand(301, 201)
    general = switching_probability(drive01 * (P.v_max_v / P.r_p_ohm), temps, P)
    assert float((fused(drive01, temps) - general).abs().max()) < 1e-12
    # float32, as served: within float32 resolution of the float64 law
    f32 = fused(drive01.float(), temps.float()).double()
    assert float((f32 - general).abs().max()) < 2e-6
    # both ends of the excitability range are reached, so the comparison covers the transition
    ceiling = 1 - math.exp(-P.t_sense_s / P.tau0_s)  # an attempt over no barrier at all
    assert float(general.min()) < 1e-6 and float(general.max()) > 0.99 * ceiling


def test_fused_switching_is_refused_where_a_clamp_of_the_general_law_could_bind() -> None:
    assert FusedSwitching.of(MTJParams(anisotropy_exponent_n=2.5)) is None
    assert FusedSwitching.of(MTJParams(switching_exponent_b=1.5)) is None
    assert FusedSwitching.of(MTJParams(t_max_k=1200.0)) is None  # above the Curie temperature
    assert FusedSwitching.of(MTJParams(delta0=1.0)) is None  # the barrier would be clamped at 1 when hot


def test_layer_with_the_fused_law_equals_the_layer_with_the_general_one() -> None:
    torch.manual_seed(0)
    fast = MTJNeuronLayer(8, 16, P, tau="spread", lateral="dense").double()
    nn_init = torch.nn.init
    nn_init.normal_(fast.lateral.weight, std=0.3)
    slow = MTJNeuronLayer(8, 16, P, tau="spread", lateral="dense").double()
    slow.load_state_dict(fast.state_dict())
    slow.fused = None  # the general switching law
    temp_a = temp_b = fast.initial(32).double()
    for k in range(12):
        x = torch.randn(32, 8, dtype=F64) * 2
        dt = torch.rand(32, dtype=F64) * 0.5 + (40.0 if k == 6 else 0.0)  # once a gap that only cools
        temp_a, out_a, e_a = fast(temp_a, x, dt)
        temp_b, out_b, e_b = slow(temp_b, x, dt)
        assert torch.allclose(temp_a, temp_b, rtol=0, atol=1e-9)
        assert torch.allclose(out_a, out_b, rtol=0, atol=1e-12)
        assert torch.allclose(e_a, e_b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("r_th", [P.r_th_k_per_w, 4 * P.r_th_k_per_w])
def test_temperature_stays_in_range_with_and_without_the_clamp(r_th: float) -> None:
    # default devices: the steady state at full drive stays below T_max, so the layer skips the clamp;
    # four times the thermal resistance would overshoot T_max without it
    params = MTJParams(r_th_k_per_w=r_th)
    layer = MTJNeuronLayer(4, 16, params).double()
    assert layer.needs_clamp == (r_th > P.r_th_k_per_w)
    torch.manual_seed(0)
    temp = layer.initial(64).double()
    for _ in range(40):
        temp, _, _ = layer(temp, torch.randn(64, 4, dtype=F64) * 50, torch.rand(64, dtype=F64) * 2)
        assert float(temp.min()) >= params.t0_k - 1e-9
        assert float(temp.max()) <= params.t_max_k
    assert float(temp.max()) > (
        params.t_max_k - 1.0 if layer.needs_clamp else params.t0_k + 10.0
    )  # driven hard


def _pair(lateral: str = "none", **kw: object) -> tuple[MTJNeuronLayer, MTJNeuronLayer]:
    """A layer and a copy without the option (same weights), in float64."""
    torch.manual_seed(0)
    a = MTJNeuronLayer(4, 6, P, lateral=lateral, **kw).double()  # type: ignore[arg-type]
    b = MTJNeuronLayer(4, 6, P).double()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if k in b.state_dict()})
    return a, b


def test_thermal_coupling_is_exact_conserves_heat_and_vanishes_with_the_conductance() -> None:
    coupled, plain = _pair("diffusion")
    temp = coupled.initial(3).double() + torch.tensor([0.0, 40.0, 5.0, 80.0, 20.0, 60.0], dtype=F64)
    x = torch.randn(3, 4, dtype=F64)
    dt = torch.full((3,), 0.3, dtype=F64)
    with torch.no_grad():
        coupled.log_kappa.fill_(-60.0)  # no conductance between devices: the uncoupled layer exactly
        torch.testing.assert_close(coupled(temp, x, dt)[0], plain(temp, x, dt)[0], rtol=0, atol=1e-9)
        coupled.log_kappa.fill_(math.log(2.0))
        one = coupled(temp, x, dt)[0]
        half = coupled(coupled(temp, x, dt / 2)[0], x, dt / 2)[0]
        torch.testing.assert_close(one, half, rtol=0, atol=1e-9)  # exact for any interval, like the lerp
        # heat flows between devices and is not created: with one time constant the layer's mean is the
        # uncoupled layer's, while the spread between neighbours shrinks
        torch.testing.assert_close(one.mean(dim=1), plain(temp, x, dt)[0].mean(dim=1), rtol=0, atol=1e-9)
        assert float(one.std(dim=1).mean()) < float(plain(temp, x, dt)[0].std(dim=1).mean())


def test_learned_time_constants_stay_within_the_device_range() -> None:
    layer = MTJNeuronLayer(3, 8, P, tau="learned")
    assert layer.learned_tau is not None
    opt = torch.optim.SGD(layer.parameters(), lr=1e4)
    for sign in (1.0, -1.0):
        for _ in range(5):
            temp, out, _ = layer(layer.initial(4), torch.randn(4, 3), torch.full((4,), 0.2))
            loss = sign * (temp.sum() + out.sum())
            opt.zero_grad()
            loss.backward()
            opt.step()
        taus = layer.time_constants()
        assert float(taus.min()) >= P.tau_th_min_s * (1 - 1e-6) and float(taus.max()) <= P.tau_th_max_s * (
            1 + 1e-6
        )


def test_both_polarities_heat_a_bipolar_drive() -> None:
    layer = MTJNeuronLayer(1, 1, P, drive="tanh").double()
    with torch.no_grad():
        layer.drive.weight.fill_(1.0)
        layer.drive.bias.fill_(0.0)
    temps = {}
    for v in (-3.0, 0.0, 3.0):
        temp, out, energy = layer(
            layer.initial(1).double(), torch.tensor([[v]], dtype=F64), torch.tensor([0.5], dtype=F64)
        )
        temps[v] = float(temp)
        assert 0.0 <= float(out) <= 1.0 and float(energy) >= 0.0
    assert temps[-3.0] == pytest.approx(temps[3.0]) and temps[3.0] > temps[0.0] + 10.0
    assert temps[0.0] == pytest.approx(P.t0_k)


def test_without_lateral_coupling_the_heat_is_the_only_memory_and_the_no_heat_ablation_has_none() -> None:
    x = torch.randn(2, 4, dtype=F64)
    dt = torch.full((2,), 0.1, dtype=F64)
    for scale, remembers in ((1.0, True), (1e-3, False)):
        torch.manual_seed(0)
        layer = MTJNeuronLayer(4, 6, P, tau_scale=scale).double()
        assert all(not name.startswith("lateral") for name, _ in layer.named_parameters())
        cold = layer.initial(2).double()
        hot = cold + 100.0  # a different past, the same new observation
        a, b = layer(cold, x, dt)[0], layer(hot, x, dt)[0]
        assert bool((a - b).abs().max() > 1.0) == remembers
