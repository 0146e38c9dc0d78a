"""Memory energy model: derived from the documented parameters, never typed in."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.energy import (
    SRAM_PJ_PER_64BIT,
    DigitalMemory,
    energy_table,
    ipnet_energy_per_update,
    recurrent_energy_per_update,
)
from models.mtj import MTJParams
from models.nets import ModelConfig, MTJNeuronLayer, TrajectoryNet


def test_ipnet_energy_is_the_joule_heat_of_the_drive() -> None:
    p = MTJParams()
    # 64 neurons at v_max for duty * (time_scale * 0.1 s): 64 * 0.5 * 0.36 V^2 / 5093 Ohm * 1 ns
    expected = 64 * 0.5 * 0.36 / p.r_p_ohm * 1e-9
    assert ipnet_energy_per_update(64, p, 0.1) == pytest.approx(expected, rel=1e-12)
    # the layer's own accounting agrees when every neuron is driven at v_max
    layer = MTJNeuronLayer(1, 64, p)
    with torch.no_grad():
        layer.drive.weight.zero_()
        layer.drive.bias.fill_(50.0)
    _, _, e = layer(layer.initial(1), torch.zeros(1, 1), torch.tensor([0.1]))
    assert float(e) == pytest.approx(expected, rel=1e-5)


def test_recurrent_energy_uses_the_cited_sram_figure() -> None:
    mem = DigitalMemory(sram="8KB")
    # GRU, 64 float32 values read and written: 2 * 64 * 32 bits at 10 pJ per 64 bits
    assert recurrent_energy_per_update("gru", 64, mem) == pytest.approx(2 * 64 * 32 * 10e-12 / 64)
    assert recurrent_energy_per_update("lstm", 64, mem) == pytest.approx(
        2 * recurrent_energy_per_update("gru", 64, mem)
    )


def test_ratios_follow_the_parameters() -> None:
    cfg = ModelConfig()
    base = energy_table(cfg)
    bigger_sram = energy_table(cfg, mem=DigitalMemory(sram="1MB"))
    scale = SRAM_PJ_PER_64BIT["1MB"] / SRAM_PJ_PER_64BIT["8KB"]
    assert bigger_sram["ratio_vs_ipnet"]["lstm"] == pytest.approx(scale * base["ratio_vs_ipnet"]["lstm"])
    hotter = dataclasses.replace(cfg, mtj={**cfg.mtj, "duty": 2 * cfg.mtj["duty"]})
    assert energy_table(hotter)["ratio_vs_ipnet"]["lstm"] == pytest.approx(base["ratio_vs_ipnet"]["lstm"] / 2)
    assert base["ratio_vs_ipnet"]["lstm"] > 1
    assert base["paper_ratio_vs_ipnet"]["lstm"] == 2874.0


def test_measured_drive_is_the_drive_the_layer_applies_lateral_term_included() -> None:
    """``measured_mean_v2`` against the layer's own Joule heat, step by step, for an IPNet whose drive also
    reads the temperatures (the dense lateral ablation): E = sum V^2 duty / R_P x drive seconds."""
    import numpy as np

    from models.data import Track
    from models.pipeline import measured_mean_v2
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
    assert measured_mean_v2(Predictor(net, "ipnet", "t"), tracks) == pytest.approx(by_hand, rel=1e-5)
    # without the lateral term (the drive of the embedding alone) the figure would differ
    with torch.no_grad():
        net.mtj.lateral.weight.zero_()  # type: ignore[union-attr]
    assert measured_mean_v2(Predictor(net, "ipnet", "t"), tracks) != pytest.approx(by_hand, rel=1e-3)
