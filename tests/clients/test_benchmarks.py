"""The benchmark's in-process model-step measurement on the shipped weights (a short run, no timing asserted),
and its CPU-time probe of server processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from clients.benchmarks import (
    REPO,
    ROUTES_DOC,
    SIZES,
    Plan,
    _modes_section,
    _ratio_bound,
    _stream_budgets,
    _targets,
    bench_model_step,
    bench_modes,
    serve,
)
from clients.peer_suite import OURS, bench_peers, render
from clients.processes import cpu_seconds, stop_process


def test_model_step_bench_times_the_memory_alone_inside_the_step() -> None:
    steps = bench_model_step(None, Plan(step_repeats=3))
    assert set(steps) == {"ipnet", "gru", "lstm", "ipnet-torch"}
    for name, by in steps.items():
        assert set(by) == set(SIZES)
        for b, row in by.items():
            # the memory update is one part of the step (the encoder, readout and kinematics are the rest)
            assert 0 < row["update_us_per_agent"] < row["step_us_per_agent"], (name, b)
            assert row["matmul_us_per_agent"] > 0
    # IPNet's readout reads the embedding and the temperatures; the GRU's the embedding and its hidden state
    assert steps["ipnet"][1]["readout_inputs"] == steps["ipnet-torch"][1]["readout_inputs"] == 32 + 64
    assert steps["gru"][1]["readout_inputs"] == 32 + 64


def test_the_modes_row_measures_every_route_and_encoding_with_and_without_six_futures(
    tmp_path: Path, weights: Path
) -> None:
    with serve({"TRAJPRED_WEIGHTS_DIR": str(weights)}, tmp_path / "serve.log") as url:
        modes = bench_modes(url, Plan(cell_s=0.3))
    size = modes["answer_bytes"]
    cells = {key: row for key, row in modes.items() if key != "answer_bytes"}
    assert set(cells) == {
        f"{key}:{k}" for key in ("predict", "ab", "predict-msgpack", "stream-msgpack") for k in (1, 6)
    }
    for key, row in cells.items():
        assert row["requests_per_s"] > 0 and row["errors"] == 0, key
    # six futures with their deviations: several times the one future's bytes, in both encodings
    assert size["json:6"] > 4 * size["json:1"] > 0 and size["msgpack:6"] > 4 * size["msgpack:1"] > 0
    table = "\n".join(_modes_section(modes, 0.3))
    assert f"with six futures {size['json:6'] / 1e6:.2f} MB" in table
    assert "| `/v1/predict`, JSON |" in table and "| `/v1/ab/predict`, JSON |" in table
    assert "| `/v1/stream?route=predict`, MessagePack |" in table
    assert "In-process" not in table  # no profile figures: no in-process sentence
    profile = {"/v1/predict": {"total": 3.0, "answer": 0.3, "step": 1.0}}
    profile["/v1/predict?modes=6"] = {"total": 4.5, "answer": 1.5, "step": 1.2}
    table = "\n".join(_modes_section(modes, 0.3, profile))
    assert "4.50 ms with six futures against 3.00 ms, 1.50x; writing the answer 1.50 against 0.30 ms" in table


def test_cpu_seconds_counts_a_process_and_its_live_children() -> None:
    # the parent only waits; its child burns 0.5 s of CPU, then sleeps (alive, so still its own process)
    child = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\ntime.sleep(60)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"]
    )
    try:
        deadline = time.monotonic() + 30
        while cpu_seconds(parent.pid) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        total = cpu_seconds(parent.pid)
        assert 0.5 <= total < 2.0
        own = Path(f"/proc/{parent.pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert (int(own[11]) + int(own[12])) / os.sysconf("SC_CLK_TCK") < 0.4  # the burn was the child's
    finally:
        with contextlib.suppress(OSError):  # the child, then its parent: neither may outlive the test
            for p in Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split():
                os.kill(int(p), signal.SIGKILL)
        stop_process(parent, 10)


def test_hot_path_profile_reports_its_figures_and_the_ratio_bound_uses_them(tmp_path: Path) -> None:
    """The profile script's figures (a short real run of the app in-process) are consistent, and the
    benchmark's ratio bound adds the body validation and the answer to a ping cycle and the step."""
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "profile_hot_path.py"),
            "--requests",
            "5",
            "--json",
            str(out),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    fig = json.loads(out.read_text())
    assert f"{fig['total']:.2f} ms per request" in done.stdout
    assert 0 < fig["step"] < fig["engine: batched model step (all models)"] < fig["total"]
    assert fig["validate_body"] > 0 and 0 < fig["answer"] < fig["total"]
    fields = fig["answer: the fields and what the writer takes (answers._predictions)"]
    assert fig["answer"] == fields + fig["answer written: the compiled writer, or orjson (answers.encode)"]

    # ping 1 ms a cycle, step 0.5 ms, body 0.25 ms, answer 0.25 ms: 1 / 1.5 from the step, 1 / 2 with all
    results = {
        "routes": {"ping": {100: SimpleNamespace(requests_per_s=1000.0)}},
        "model_step": {"ipnet": {100: {"step_us_per_agent": 5.0}}},
        "profile_figures": {"/v1/predict": {"validate_body": 0.25, "answer": 0.25}},
    }
    text = _ratio_bound(results)
    assert "at most 0.67 of ping" in text and "then at most 0.50" in text
    del results["profile_figures"]
    assert "then at most" not in _ratio_bound(results)


def test_cpu_seconds_counts_grandchildren() -> None:
    # a serving system's workers are often grandchildren (Ray: driver -> raylet -> workers)
    burner = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\ntime.sleep(60)"
    middle = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burner!r}])"
    top = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {middle!r}])"],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while cpu_seconds(top.pid) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0.5 <= cpu_seconds(top.pid) < 2.0
    finally:
        os.killpg(top.pid, signal.SIGKILL)
        top.wait(10)


@pytest.mark.e2e
@pytest.mark.slow
def test_transports_are_measured_and_missing_peers_are_named(tmp_path: Path, weights: Path) -> None:
    from clients.benchmarks import serve_process

    with serve_process({"TRAJPRED_WEIGHTS_DIR": str(weights)}, tmp_path / "serve.log") as (url, pid):
        results = bench_peers(url, pid, weights / "gru.pt", tmp_path / "no-peers", False, 1, 0.3, tmp_path)
    for agents in ("100", "1000"):
        rows = results["ours"][agents]
        assert set(rows) == {key for key, *_ in OURS}
        for key, r in rows.items():
            assert r["ok"] > 0 and r["errors"] == 0 and r["server_cpu_ms"] > 0, key
            assert r["mode"].endswith(
                ("stream, json", "stream, msgpack") if "stream" in key else ("http, json", "http, msgpack")
            )
    assert set(results["peers"]) == {"mlserver", "ray", "litserve", "pytriton"}
    text = "\n".join(render(results, tmp_path / "no-peers"))
    for block in results["peers"].values():
        assert block["install"].startswith("no virtualenv") and block["install"] in text
    assert "ipnet-traj, stream, columns, MessagePack" in text


def test_the_targets_table_judges_each_row_from_the_results() -> None:
    def cell(rps: float) -> SimpleNamespace:
        return SimpleNamespace(requests_per_s=rps, agent_updates_per_s=rps * 1000)

    steps = {
        m: {b: {"step_us_per_agent": 3.0 if m == "ipnet" else 2.0} for b in SIZES} for m in ("ipnet", "gru")
    }
    results: dict = {
        "routes": {
            "ping": {100: cell(1000.0)},
            **{r: {100: cell(600.0), 1000: cell(30.0)} for r in ROUTES_DOC},
        },
        "open_loop": {"predict": SimpleNamespace(latency_ms={"p99": 8.0})},
        "parallel_1000": cell(20.0),
        "model_step": steps,
        "memory": {"memory": {"bytes_per_agent": 1500.0}},
        "peers": {
            # 250 frames/s of 1,000 agents over the stream (the GRU route): 4 µs per update, 2x the GRU step
            "ours": {
                "100": {
                    "http_points_json": {"requests_per_s": 100.0},
                    "stream_points_json": {"requests_per_s": 150.0},
                },
                "1000": {"stream_points_json": {"requests_per_s": 250.0}},
            },
            "peers": {},
        },
    }
    rows = {r.split(" | ")[0].lstrip("| "): r.split(" | ")[1:] for r in _targets(results)}
    e2e = next(v for k, v in rows.items() if k.startswith("end-to-end cost per agent-update"))
    assert e2e == ["4.0 µs vs 2.00 µs = 2.0x", "yes |"]
    assert rows["stream >= 2x the HTTP route's req/s (100-agent frames, one connection)"] == ["1.50x", "no |"]
    results["peers"]["ours"]["1000"]["stream_points_json"]["requests_per_s"] = 0.0
    rows = {r.split(" | ")[0].lstrip("| "): r.split(" | ")[1:] for r in _targets(results)}
    assert next(v for k, v in rows.items() if k.startswith("end-to-end"))[1] == "no |"


def test_the_budgets_of_the_stream_and_peer_targets_follow_from_the_step() -> None:
    """Step 0.5 ms per 100-agent frame and 4 ms per 1,000; HTTP 2 ms a cycle, the stream 1.5 ms (so HTTP
    costs 0.5 ms more), the peer 3 ms: the stream can reach at most (0.5 + 0.5) / 0.5 = 2x HTTP, 3 / 0.5 = 6x
    the peer, and 3x the peer leaves 1 - 0.5 = 0.5 ms for everything but the step."""

    def run(rps: float, client_ms: float) -> dict:
        return {"requests_per_s": rps, "extra": {"client_cpu_ms_per_request": client_ms}}

    steps = {"gru": {100: {"step_us_per_agent": 5.0}, 1000: {"step_us_per_agent": 4.0}}}
    results: dict = {
        "model_step": steps,
        "peers": {
            "ours": {
                "100": {"http_points_json": run(500.0, 0.3), "stream_points_json": run(1000 / 1.5, 0.25)},
                "1000": {"stream_points_json": run(50.0, 2.0)},
            },
            "peers": {"mlserver": {"100": {"peer": {"requests_per_s": 1000 / 3}, "ours_http": run(500.0, 0.3),
                                           "ours_stream": run(1000 / 1.5, 0.25)}}},
        },
    }  # fmt: skip
    rows = {r.split(" | ")[0].lstrip("| "): r.rstrip(" |").split(" | ")[1:] for r in _stream_budgets(results)}
    assert rows["stream >= 2x HTTP, 100 agents"][:5] == ["1.00", "0.50", "0.50", "1.00", "0.25"]
    assert rows["stream >= 2x HTTP, 100 agents"][5].startswith("2.00x")
    # 1,000 agents: 10 ms allowed, the step 4 ms; the stream's 20 ms cycle leaves 16 ms of the rest
    assert rows[">= 100,000 agent-updates/s, stream, 1,000 agents"] == ["10.00", "4.00", "6.00", "16.00", "2.00",
                                                                        "250,000/s"]  # fmt: skip
    assert rows["end-to-end <= 2x the step, stream, 1,000 agents"][:4] == ["8.00", "4.00", "4.00", "16.00"]
    assert rows[">= 3x mlserver over the stream, 100 agents"][:4] == ["1.00", "0.50", "0.50", "1.00"]
    assert rows[">= 1.5x mlserver over HTTP, 100 agents"][:3] == ["2.00", "0.50", "1.50"]
    assert rows[">= 1.5x mlserver over HTTP, 100 agents"][5].startswith("6.00x")
    del results["peers"]
    assert _stream_budgets(results) == []
