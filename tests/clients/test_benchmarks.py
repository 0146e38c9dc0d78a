"""The benchmark's in-process model-step measurement on the shipped weights (a short run, no timing asserted)."""

from __future__ import annotations

from clients.benchmarks import SIZES, Plan, bench_model_step


def test_model_step_bench_times_the_memory_alone_inside_the_step() -> None:
    steps = bench_model_step(None, Plan(step_repeats=3))
    assert set(steps) == {"ipnet", "gru", "lstm"}
    for name, by in steps.items():
        assert set(by) == set(SIZES)
        for b, row in by.items():
            # the memory update is one part of the step (the encoder, readout and kinematics are the rest)
            assert 0 < row["update_us_per_agent"] < row["step_us_per_agent"], (name, b)
            assert row["matmul_us_per_agent"] > 0
    # IPNet's readout reads the embedding, the switching probabilities and the temperatures; the GRU's
    # the embedding and its hidden state
    assert steps["ipnet"][1]["readout_inputs"] == 32 + 2 * 64
    assert steps["gru"][1]["readout_inputs"] == 32 + 64
