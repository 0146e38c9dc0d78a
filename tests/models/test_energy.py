"""Memory energy model: derived from the documented parameters, never typed in."""

from __future__ import annotations

import itertools

import pytest
import torch

from models.energy import (
    COMPONENTS,
    DriveFigures,
    HardwareAssumptions,
    ipnet_components,
    report,
    with_time_scale,
)
from models.mtj import MTJParams
from models.nets import ModelConfig, MTJNeuronLayer, TrajectoryNet


def _nets(**ip: object) -> dict[str, TrajectoryNet]:
    torch.manual_seed(0)
    return {
        "ipnet": TrajectoryNet(ModelConfig(kind="ipnet", **ip)).eval(),  # type: ignore[arg-type]
        "gru": TrajectoryNet(ModelConfig(kind="gru")).eval(),
        "lstm": TrajectoryNet(ModelConfig(kind="lstm")).eval(),
    }


def test_the_drive_is_the_joule_heat_the_layer_reports() -> None:
    p = MTJParams()
    nets = _nets()
    comps = ipnet_components(nets["ipnet"], DriveFigures.worst_case(p), HardwareAssumptions())
    # 64 neurons at v_max for duty * (time_scale * 0.1 s): 64 * 0.5 * 0.36 V^2 / 5093 Ohm * 1 ns
    expected = 64 * 0.5 * 0.36 / p.r_p_ohm * 1e-9
    assert comps["drive"] == pytest.approx(expected, rel=1e-12)
    layer = MTJNeuronLayer(1, 64, p)  # the layer's own accounting, every neuron driven at v_max
    with torch.no_grad():
        layer.drive.weight.zero_()
        layer.drive.bias.fill_(50.0)
    _, _, e = layer(layer.initial(1), torch.zeros(1, 1), torch.tensor([0.1]))
    assert float(e) == pytest.approx(expected, rel=1e-5)


def test_components_come_from_their_cited_parameters_and_sum_to_the_total() -> None:
    hw = HardwareAssumptions()
    nets = _nets()
    rep = report(nets, DriveFigures(0.1, 20.0), hw)
    for name, m in rep["models"].items():
        assert set(m["components"]) == set(COMPONENTS), name
        assert m["joules_per_update"] == pytest.approx(sum(m["components"].values()), rel=1e-12)
    ip, gru, lstm = (rep["models"][k]["components"] for k in ("ipnet", "gru", "lstm"))
    # 64 float32 values read and written: 2 * 64 * 32 bits at 10 pJ per 64 bits (Horowitz, 8 KB)
    assert gru["state_sram"] == pytest.approx(2 * 64 * 32 * 10e-12 / 64) and lstm[
        "state_sram"
    ] == pytest.approx(2 * gru["state_sram"])
    assert ip["state_sram"] == pytest.approx(gru["state_sram"])  # the digital hold keeps 64 temperatures
    # a conversion is FoM x 2^bits per neuron; the read pulse V^2 / R_P x t_read
    # (the shipped readout senses the temperatures only: no switching outcome to sense)
    assert ip["adc"] == pytest.approx(64 * 8.7e-15 * 2**8) and ip["sense"] == 0.0
    both = ipnet_components(_nets(readout="both")["ipnet"], DriveFigures(0.1, 20.0), hw)
    assert both["sense"] == pytest.approx(64 * 8.7e-15 * 2) and both["adc"] == ip["adc"]
    assert ip["read"] == pytest.approx(64 * 0.01 / MTJParams().r_p_ohm * 0.2e-9)
    # reheat: C_th (T - T0) per neuron, C_th = tau / R_th
    tau = float(nets["ipnet"].mtj.time_constants()[0])  # type: ignore[union-attr]
    assert ip["reheat"] == pytest.approx(64 * tau / MTJParams().r_th_k_per_w * 20.0, rel=1e-6)
    # the GRU's matrix products counted by hand: encoder, 3 gates of input and hidden products, readout
    e, n, r, h2 = 32, 64, 128, 100
    enc = 11 * e + e * e
    assert gru["macs"] == pytest.approx((enc + 3 * (e * n + n * n) + (e + n) * r + r * r + r * h2) * 4.6e-12)
    assert ip["macs"] == pytest.approx((enc + e * n + (e + n) * r + r * r + r * h2) * 4.6e-12)
    # the thermal hold keeps the heat in the devices: no SRAM, no reheat
    thermal = report(nets, DriveFigures(0.1, 20.0), HardwareAssumptions(hold="thermal"))["models"]["ipnet"]
    assert thermal["components"]["state_sram"] == 0 and thermal["components"]["reheat"] == 0
    assert rep["ratios"]["lstm_over_ipnet"] == pytest.approx(
        rep["models"]["lstm"]["joules_per_update"] / rep["models"]["ipnet"]["joules_per_update"]
    )
    with pytest.raises(ValueError, match="hold"):
        HardwareAssumptions(hold="magic")


def test_time_scale_moves_the_drive_and_reheat_not_the_digital_terms_nor_a_prediction() -> None:
    """The reviewer's free constant: the device time constants scale with time_scale, predictions do not move."""
    nets = _nets()
    base = nets["ipnet"]
    drive = DriveFigures(0.1, 20.0)
    hw = HardwareAssumptions()
    c0 = ipnet_components(base, drive, hw)
    scaled = TrajectoryNet(with_time_scale(base.cfg, 1e-9)).eval()
    # the same weights; the devices' time constants are the scaled configuration's own
    scaled.load_state_dict({k: v for k, v in base.state_dict().items() if k != "mtj.tau_dev_s"}, strict=False)
    assert float(scaled.mtj.tau_dev_s[0]) == pytest.approx(0.1 * float(base.mtj.tau_dev_s[0]))  # type: ignore[union-attr]
    c1 = ipnet_components(scaled, drive, hw)
    for k in COMPONENTS:
        want = 0.1 * c0[k] if k in ("drive", "reheat") else c0[k]
        assert c1[k] == pytest.approx(want, rel=1e-6), k
    feats = torch.randn(5, base.cfg.n_features)
    mem = base.initial_memory(5)
    with torch.no_grad():
        for dt in (0.0, 0.1, 0.5, 40.0):
            a, out_a, _ = base.step(mem, feats, torch.full((5,), dt))
            b, out_b, _ = scaled.step(mem, feats, torch.full((5,), dt))
            torch.testing.assert_close(out_a, out_b, rtol=0, atol=1e-5)
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
            mem = a
    sweep = report(nets, drive, hw)["time_scale_sweep"]
    assert sweep[0]["time_scale"] == 1e-10 and sweep[-1]["time_scale"] == 1e-6
    drive_only = [r["drive_only"]["lstm_over_ipnet"] for r in sweep]
    assert all(
        a > b for a, b in itertools.pairwise(drive_only)
    )  # a longer window costs the drive in proportion


def test_measured_drive_is_the_drive_the_layer_applies_lateral_term_included() -> None:
    """``measured_drive`` against the layer's own Joule heat, step by step, for an IPNet whose drive also
    reads the temperatures (the dense lateral ablation): E = sum V^2 duty / R_P x drive seconds."""
    import numpy as np

    from models.data import Track
    from models.pipeline import measured_drive
    from models.predictor import Predictor
    from models.windows import encode_sequences

    torch.manual_seed(0)
    net = TrajectoryNet(ModelConfig(kind="ipnet", lateral="dense", n_memory=16, d_embed=8, d_readout=8))
    with torch.no_grad():
        for prm in net.parameters():
            prm.add_(torch.randn_like(prm) * 0.5)
    net.eval()
    t = np.arange(30) * 0.1
    tracks = [Track("s", f"a{i}", "vehicle", t, np.stack([t * (3 + i), np.sin(t * i)], 1)) for i in range(4)]
    p = net.mtj.params  # type: ignore[union-attr]
    enc = encode_sequences([tr.t for tr in tracks], [tr.xy for tr in tracks], ["vehicle"] * 4)
    temp = net.initial_memory(4)
    heat, driven = 0.0, 0
    with torch.no_grad():
        for k in range(len(t)):
            dt = torch.from_numpy(enc.dt[:, k])
            temp, _, energy = net.mtj(temp, net.embed(torch.from_numpy(enc.feats[:, k])), dt)  # type: ignore[misc]
            if k:  # the first observation closes no interval
                heat += float((energy / (p.duty / p.r_p_ohm * p.time_scale * dt)).sum())
                driven += 4 * net.cfg.n_memory
    by_hand = heat / driven
    assert measured_drive(Predictor(net, "ipnet", "t"), tracks).mean_v2 == pytest.approx(by_hand, rel=1e-5)
    # without the lateral term (the drive of the embedding alone) the figure would differ
    with torch.no_grad():
        net.mtj.lateral.weight.zero_()  # type: ignore[union-attr]
    assert measured_drive(Predictor(net, "ipnet", "t"), tracks).mean_v2 != pytest.approx(by_hand, rel=1e-3)
