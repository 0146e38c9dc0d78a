"""The benchmark suite: ``python -m clients.benchmarks --out BENCHMARKS.md`` (or ``ipnet bench --suite``).

In one run, on this machine:

1. frames of 1, 10, 100 and 1,000 agents, closed loop, through ``/v1/predict``, ``/v1/baseline/predict`` and
   ``/v1/ab/predict`` and through the trivial ``/v1/ping`` (reads the same body, parses nothing) of the same
   server process: the throughput ratio route/ping is what the service adds to the framework's ceiling;
2. 100-agent frames at 10 Hz, open loop: latency percentiles;
3. the model step alone (IPNet, GRU, LSTM) per agent, in-process, against one plain matrix multiply of the
   same size (batch x (features + memory) @ (features + memory) x memory);
4. memory per tracked agent with 100,000 agents resident (both models, through ``/v1/ab/predict``), for the
   memory store (server RSS growth) and for Redis (a real ``redis-server`` on loopback: its ``used_memory``
   growth, plus the server's RSS growth).

Every figure in the report comes from this run's measurements. The servers are started here, on free
loopback ports, with ``TRAJPRED_WEIGHTS_DIR`` (or the shipped weights).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from clients import peer_suite, processes, scale_suite
from clients.bench import BenchConfig, BenchResult, Fleet, run_bench_async, server_memory
from clients.client import AsyncTrajpredClient, RetryPolicy
from clients.processes import redis_server

REPO = Path(__file__).resolve().parent.parent
SIZES = (1, 10, 100, 1000)
ROUTE_ORDER = ("ping", "predict", "baseline", "ab")
COLUMNS = "predict?layout=columns"  # /v1/predict with the compact trajectory layout


@dataclass
class Plan:
    """Durations and sizes of one suite run (``--quick`` shrinks everything to check the machinery)."""

    cell_s: float = 3.0
    open_loop_s: float = 30.0  # 300 frames: a p99 that is not just the second-worst frame
    step_repeats: int = 200
    memory_agents: int = 100_000
    memory_frame: int = 1000
    # each peer and the service in turns: a slow stretch of the machine hits both
    peer_rounds: int = 3

    @staticmethod
    def quick() -> Plan:
        return Plan(
            cell_s=0.5, open_loop_s=2.0, step_repeats=10, memory_agents=3000, memory_frame=1000, peer_rounds=1
        )


def _sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


@contextlib.contextmanager
def serve(env: dict[str, str], log: Path) -> Iterator[str]:
    """``ipnet serve`` on a free loopback port (one worker, one torch thread); yields its URL."""
    with serve_process(env, log) as (url, _):
        yield url


@contextlib.contextmanager
def serve_process(env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """:func:`serve`, yielding the URL and the server's process id."""
    with processes.serve(env, log) as server:
        yield server.url, server.proc.pid


# --- 1 and 2: HTTP ------------------------------------------------------------------------------------
def bench_routes(url: str, plan: Plan, log: list[str]) -> dict[str, dict[int, BenchResult]]:
    """Closed loop, one sender, every route x frame size; the first ping cell is repeated as warm-up."""
    out: dict[str, dict[int, BenchResult]] = {r: {} for r in (*ROUTE_ORDER, COLUMNS)}
    asyncio.run(
        run_bench_async(BenchConfig(server=url, route="ping", agents=10, rate_hz=None, duration_s=0.5))
    )
    for n in SIZES:
        for route in ROUTE_ORDER:
            cfg = BenchConfig(server=url, route=route, agents=n, rate_hz=None, duration_s=plan.cell_s)
            r = asyncio.run(run_bench_async(cfg))
            out[route][n] = r
            log.append(
                f"{route:>8} {n:>5} agents: {r.requests_per_s:8.1f} req/s, p50 {r.latency_ms.get('p50', 0):.2f} ms"
            )
            print(log[-1], file=sys.stderr, flush=True)
        cfg = BenchConfig(
            server=url, route="predict", agents=n, rate_hz=None, duration_s=plan.cell_s, layout="columns"
        )
        r = out[COLUMNS][n] = asyncio.run(run_bench_async(cfg))
        log.append(
            f"{COLUMNS:>8} {n:>5} agents: {r.requests_per_s:8.1f} req/s, p50 {r.latency_ms.get('p50', 0):.2f} ms"
        )
        print(log[-1], file=sys.stderr, flush=True)
    return out


def bench_closed_1000_parallel(url: str, plan: Plan) -> BenchResult:
    """1,000-agent frames through /v1/predict with two senders (both cores busy on the server)."""
    cfg = BenchConfig(
        server=url, route="predict", agents=1000, rate_hz=None, concurrency=2, duration_s=plan.cell_s
    )
    return asyncio.run(run_bench_async(cfg))


#: the K compared for the cost of several futures (the served models have 6)
MODES_COMPARED = (None, 6)
#: how the cost of several futures is measured: (key, label, route, encoding, stream); the first is the
#: target's (the default answer: JSON, points layout, over HTTP)
MODES_CELLS = (
    ("predict", "`/v1/predict`, JSON", "predict", "json", False),
    ("ab", "`/v1/ab/predict`, JSON", "ab", "json", False),
    ("predict-msgpack", "`/v1/predict`, MessagePack", "predict", "msgpack", False),
    ("stream-msgpack", "`/v1/stream?route=predict`, MessagePack", "predict", "msgpack", True),
)


def bench_modes(url: str, plan: Plan) -> dict[str, dict[str, float]]:
    """100-agent frames, closed loop, without ``?modes`` (the single trajectory) and with ``?modes=6``, for
    each of :data:`MODES_CELLS`, taking turns over three rounds; each keeps its fastest round."""
    best: dict[str, dict[str, float]] = {}
    for _ in range(3):
        for key, _, route, encoding, stream in MODES_CELLS:
            for k in MODES_COMPARED:
                cfg = BenchConfig(
                    server=url,
                    route=route,
                    agents=100,
                    rate_hz=None,
                    duration_s=plan.cell_s,
                    modes=k,
                    encoding=encoding,
                    stream=stream,
                )
                r = asyncio.run(run_bench_async(cfg))
                cell = f"{key}:{k or 1}"
                row = {"requests_per_s": r.requests_per_s, "p50_ms": r.latency_ms.get("p50", 0.0)}
                row["errors"] = float(r.errors)
                if cell not in best or row["requests_per_s"] > best[cell]["requests_per_s"]:
                    best[cell] = row
    best["answer_bytes"] = answer_bytes(url)
    return best


def answer_bytes(url: str) -> dict[str, float]:
    """Bytes of one ``/v1/predict`` answer to a 100-agent frame, JSON and MessagePack, with one future and with
    ``?modes=6`` (keys ``json:1``, ``json:6``, ``msgpack:1``, ``msgpack:6``)."""
    fleet = Fleet(100, "answer-size", 0.1)
    out: dict[str, float] = {}
    with httpx.Client(base_url=url, timeout=30.0) as c:
        for i, (encoding, k) in enumerate(itertools.product(("json", "msgpack"), MODES_COMPARED)):
            headers = {"content-type": "application/json"}
            if encoding == "msgpack":
                headers["accept"] = "application/msgpack"
            r = c.post(
                "/v1/predict", params={"modes": k} if k else None, content=fleet.frame(i), headers=headers
            )
            r.raise_for_status()
            out[f"{encoding}:{k or 1}"] = float(len(r.content))
    return out


def bench_open_loop(url: str, plan: Plan, route: str) -> BenchResult:
    cfg = BenchConfig(server=url, route=route, agents=100, rate_hz=10.0, duration_s=plan.open_loop_s)
    return asyncio.run(run_bench_async(cfg))


# --- 3: model step in-process -------------------------------------------------------------------------
def readout_inputs(p: Any) -> int:
    """Width of a learned predictor's readout input (embedding + what it senses of the memory)."""
    assert p.net is not None
    return int(p.net.readout[0].in_features)


def bench_model_step(weights: Path | None, plan: Plan) -> dict[str, dict[int, dict[str, float]]]:
    """Per-agent time of ``Predictor.step`` vs one matmul of the same size, one torch thread.

    The models take turns (five rounds, each model timed once per round) and each keeps its fastest
    round: on a shared machine a slow stretch then hits every model alike instead of whichever ran in it.
    ``ipnet-torch`` is IPNet with its compiled kernel off (``TRAJPRED_NATIVE_KERNEL=false``).
    """
    import torch

    from models.kinematics import N_FEATURES, KinState
    from models.pipeline import load_predictors

    torch.set_num_threads(1)
    predictors = load_predictors(["ipnet", "gru", "lstm"], weights)
    predictors["ipnet-torch"] = load_predictors(["ipnet"], weights, native=False)["ipnet"]
    kernel = predictors["ipnet"].infer
    assert kernel is not None
    if not kernel.native:
        print(
            "warning: IPNet's compiled kernel did not build: both IPNet rows are the torch form",
            file=sys.stderr,
        )
    out: dict[str, dict[int, dict[str, float]]] = {name: {} for name in predictors}
    rounds = 5
    for b in SIZES:
        types = np.zeros(b, np.int64)
        xy = np.random.default_rng(0).normal(0, 10, (b, 2))
        dt_s = np.full(b, 0.1)
        reps = max(3, plan.step_repeats // max(1, b // 10))
        warmed = {}
        for name, p in predictors.items():
            r = p.step(KinState.empty(b), p.initial_memory(b), xy, np.zeros(b), types)
            for _ in range(3):  # a warmed state, not the first-observation branch
                r = p.step(r.kin, r.memory, xy + 1.0, dt_s, types)
            warmed[name] = r
        best = dict.fromkeys(predictors, float("inf"))
        best_update = dict.fromkeys(predictors, float("inf"))
        e_in = torch.randn(b, kernel.d_embed)
        for _ in range(rounds):
            for name, p in predictors.items():
                r = warmed[name]
                t0 = time.perf_counter()
                for _ in range(reps):
                    # one future, as served by default: the others are scored but not gathered nor placed
                    p.step(r.kin, r.memory, xy + 1.0, dt_s, types, modes=1)
                best[name] = min(best[name], (time.perf_counter() - t0) / reps)
                # the memory alone (what differs between the models: encoder and readout are shared)
                infer, mem_t = p.infer, torch.from_numpy(r.memory)
                assert infer is not None
                block = torch.empty(b, infer.width)  # [embedding | sensed]: the readout's input
                block[:, : infer.d_embed] = e_in
                e, sensed = block[:, : infer.d_embed], block[:, infer.d_embed :]
                with torch.inference_mode():
                    t0 = time.perf_counter()
                    for _ in range(reps):
                        infer.update(mem_t, e, dt_s, sensed)
                    best_update[name] = min(best_update[name], (time.perf_counter() - t0) / reps)
        for name, p in predictors.items():
            width = p.memory_size + N_FEATURES  # features + memory in, memory out: the update's shape
            a_in = torch.randn(b, width)
            w = torch.randn(width, p.memory_size)
            mm_s = float("inf")
            with torch.no_grad():
                for _ in range(3):
                    a_in @ w
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    for _ in range(reps * 10):
                        a_in @ w
                    mm_s = min(mm_s, (time.perf_counter() - t0) / (reps * 10))
            out[name][b] = {
                "step_us_per_agent": best[name] / b * 1e6,
                "update_us_per_agent": best_update[name] / b * 1e6,
                "matmul_us_per_agent": mm_s / b * 1e6,
                "ratio": best[name] / mm_s,
                "memory_size": float(p.memory_size),
                "readout_inputs": float(readout_inputs(p)),
            }
    return out


def bench_idle_penalty(weights: Path | None) -> dict[str, float]:
    """The same in-process work (three IPNet steps of 100 agents) back to back and after 100 ms of sleep.

    A 10 Hz stream leaves the server idle ~90 ms between frames; on a shared virtual machine the cores'
    caches and clocks are not the server's alone while it sleeps, and every frame pays for it. This
    measures that penalty without the service in the way.
    """
    import torch

    from models.kinematics import KinState
    from models.pipeline import load_predictors

    torch.set_num_threads(1)
    p = load_predictors(["ipnet"], weights)["ipnet"]
    b = 100
    kin = KinState.empty(b)
    kin.n[:] = 3
    memory, xy = p.initial_memory(b), np.random.default_rng(0).normal(0, 10, (b, 2))
    dt_s, types = np.full(b, 0.1), np.zeros(b, np.int64)
    array = np.random.default_rng(1).random(200_000)  # 1.6 MB: about the L2 caches of both cores

    def steps() -> None:
        for _ in range(3):
            p.step(kin, memory, xy, dt_s, types)

    def arithmetic() -> None:  # registers and a few cache lines: what a clock slowdown would hit
        acc = 0
        for i in range(20_000):
            acc += i * i

    def memory_pass() -> None:  # a pass over the array: what cold caches hit
        float((array * 2.0).sum())

    out: dict[str, float] = {}
    for name, work in (("", steps), ("arithmetic_", arithmetic), ("memory_", memory_pass)):
        for label, gap_s in (("back_to_back_ms", 0.0), ("after_100ms_idle_ms", 0.1)):
            times = []
            for _ in range(60 if name == "" else 30):
                if gap_s:
                    time.sleep(gap_s)
                t0 = time.perf_counter()
                work()
                times.append(time.perf_counter() - t0)
            out[name + label] = float(np.median(times) * 1e3)
        out[name + "factor"] = out[name + "after_100ms_idle_ms"] / out[name + "back_to_back_ms"]
    return out


# --- 4: memory per tracked agent ----------------------------------------------------------------------
async def _fill(url: str, plan: Plan) -> dict[str, float]:
    """Put ``memory_agents`` new agents (one observation each) through /v1/ab/predict; RSS before/after.

    "Before" is after one frame of other agents: what a server allocates once (the buffers its answers are
    written into and kept for the next, the allocator's first arenas) is not state per agent."""
    async with AsyncTrajpredClient(url, retry=RetryPolicy(retries=0), timeout_s=120.0) as c:
        warm = Fleet(plan.memory_frame, "mem-warm-up", 0.1, seed=plan.memory_agents)
        await c.request("POST", "/v1/ab/predict", body=warm.frame(0))
        rss0, tracked0 = await server_memory(c)
        n_frames = plan.memory_agents // plan.memory_frame
        t0 = time.perf_counter()
        for k in range(n_frames):
            fleet = Fleet(plan.memory_frame, f"mem-{k}", 0.1, seed=k)
            await c.request("POST", "/v1/ab/predict", body=fleet.frame(0))
        elapsed = time.perf_counter() - t0
        await asyncio.sleep(0.5)
        rss1, tracked1 = await server_memory(c)
    added = min(tracked1.values()) - min(tracked0.values(), default=0.0)
    return {
        "rss_before": rss0 or 0.0,
        "rss_after": rss1 or 0.0,
        "tracked_after": min(tracked1.values()),
        "added": added,
        "models": float(len(tracked1)),
        "fill_s": elapsed,
    }


def bench_memory(weights_env: dict[str, str], plan: Plan, tmp: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    cap = str(max(plan.memory_agents * 2, 1000))
    # a TTL longer than the fill: the first agents must still be resident when the last arrive
    env = {**weights_env, "TRAJPRED_MAX_AGENTS": cap, "TRAJPRED_STATE_TTL_S": "3600"}
    with serve(env, tmp / "serve-memory.log") as url:
        m = asyncio.run(_fill(url, plan))
        m["bytes_per_agent"] = (m["rss_after"] - m["rss_before"]) / m["added"]
        out["memory"] = m
    import redis

    with redis_server(tmp) as rurl:
        r = redis.Redis.from_url(rurl)
        env = {
            **weights_env,
            "TRAJPRED_MAX_AGENTS": cap,
            "TRAJPRED_STORE": rurl,
            "TRAJPRED_STATE_TTL_S": "3600",
        }
        with serve(env, tmp / "serve-redis.log") as url:
            used0 = float(r.info("memory")["used_memory"])
            m = asyncio.run(_fill(url, plan))
            used1 = float(r.info("memory")["used_memory"])
            m["redis_used_before"], m["redis_used_after"] = used0, used1
            m["bytes_per_agent"] = (used1 - used0) / m["added"]
            m["server_rss_bytes_per_agent"] = (m["rss_after"] - m["rss_before"]) / m["added"]
            m["redis_keys"] = float(r.dbsize())
            out["redis"] = m
        r.close()
    return out


# --- 5: peers and transports: clients.peer_suite -------------------------------------------------------


def _f(v: float, spec: str = ".1f") -> str:
    return format(v, spec)


def _ratio_bound(results: dict[str, Any]) -> str:
    """What bounds the 100-agent ratio: a ping's whole cycle plus the costs no prediction can skip."""
    step_s = results["model_step"]["ipnet"][100]["step_us_per_agent"] * 100 * 1e-6
    ping_s = 1.0 / results["routes"]["ping"][100].requests_per_s
    text = (
        "What bounds the 100-agent ratio: IPNet's step alone (kinematics and the batched forward, in-process, "
        f"from the model-step table below) takes {step_s * 1e3:.2f} ms for 100 agents, against "
        f"{ping_s * 1e3:.2f} ms for a whole ping cycle (client, HTTP, framework). With every other cost of "
        "a prediction at zero (validation, state, writing the answer, scoring, metrics), "
        f"`/v1/predict` would reach at most {ping_s / (ping_s + step_s):.2f} of ping."
    )
    prof = results.get("profile_figures", {}).get("/v1/predict")
    if prof is None:
        return text
    # two more costs every prediction pays and ping does not, from the profile below (same frames)
    floor_s = ping_s + step_s + (prof["validate_body"] + prof["answer"]) * 1e-3
    return text + (
        f" Add what no prediction can skip either, from the profile below: parsing and validating the body "
        f"({prof['validate_body']:.2f} ms, `model_validate_json`) and writing the answer "
        f"({prof['answer']:.2f} ms, the 100 trajectories); then at most {ping_s / floor_s:.2f}, state, scoring, "
        "metrics and the framework's routing still at zero. Target: 0.5."
    )


def _stream_budgets(results: dict[str, Any]) -> list[str]:
    """What each transport and peer target leaves for everything but the model step, from this run: the
    cycle (1 / requests/s) a target allows, the in-process step's share of it, and the ratio the service
    would reach with every other cost at zero. The peers run the same step (``clients/peers/state.py``),
    so the step bounds how far ahead of a peer any service of this model can get."""
    side = results.get("peers")
    if side is None:
        return []
    steps = results["model_step"]["gru"]  # the model of the routes these rows measure
    s100 = steps[100]["step_us_per_agent"] * 100 * 1e-3  # ms per 100-agent frame
    s1000 = steps[1000]["step_us_per_agent"] * 1000 * 1e-3
    ours100, ours1000 = side["ours"]["100"], side["ours"]["1000"]
    http_ms = 1e3 / ours100["http_points_json"]["requests_per_s"]
    stream_ms = 1e3 / ours100["stream_points_json"]["requests_per_s"]
    stream1000_ms = 1e3 / ours1000["stream_points_json"]["requests_per_s"]

    def client(r: dict[str, Any]) -> float:  # the load generator's own CPU per request (NaN: not measured)
        return float(r.get("extra", {}).get("client_cpu_ms_per_request", math.nan))

    # (target, cycle it allows ms, step ms, the cycle now ms, the client's CPU ms, the ratio at best)
    rows: list[tuple[str, float, float, float, float, str]] = [
        ("stream >= 2x HTTP, 100 agents", http_ms / 2, s100, stream_ms, client(ours100["stream_points_json"]),
         f"{(s100 + http_ms - stream_ms) / s100:.2f}x: the stream saves HTTP's own cost, {http_ms - stream_ms:.2f} ms"),
        (">= 100,000 agent-updates/s, stream, 1,000 agents", 10.0, s1000, stream1000_ms,
         client(ours1000["stream_points_json"]), f"{1000 / s1000 * 1e3:,.0f}/s"),
        ("end-to-end <= 2x the step, stream, 1,000 agents", 2 * s1000, s1000, stream1000_ms,
         client(ours1000["stream_points_json"]), "1.0x"),
    ]  # fmt: skip
    measured = {n: b["100"] for n, b in side["peers"].items() if "100" in b}
    if measured:
        name, best = max(measured.items(), key=lambda kv: kv[1]["peer"]["requests_per_s"])
        peer_ms = 1e3 / best["peer"]["requests_per_s"]
        at_best = f"{peer_ms / s100:.2f}x: {name}'s cycle, {peer_ms:.2f} ms, over the step alone"
        rows += [
            (f">= 1.5x {name} over HTTP, 100 agents", peer_ms / 1.5, s100,
             1e3 / best["ours_http"]["requests_per_s"], client(best["ours_http"]), at_best),
            (f">= 3x {name} over the stream, 100 agents", peer_ms / 3, s100,
             1e3 / best["ours_stream"]["requests_per_s"], client(best["ours_stream"]), at_best),
        ]  # fmt: skip
    lines = [
        "## What the transport and peer targets leave for everything but the model step",
        "",
        "From the figures of this run: the cycle a target allows (closed loop, one sender: 1 / requests/s), "
        "the GRU's in-process step for the frame (the model-step table below; the routes measured serve the "
        "GRU, and every peer runs the same step), what that leaves for everything else (client, transport, "
        "framework, parse and validation, state, answer, scoring, metrics) against what everything else takes "
        "now (of it, the load generator's own CPU per request: no server removes that), and the ratio the "
        "service would reach if everything but the step cost nothing. A budget below the client's own cost "
        "means no serving code meets the target with this model, this client and this machine. The stream's "
        "gain over HTTP is the HTTP cycle's extra cost over the stream's (both do the same work).",
        "",
        "| target | cycle allowed, ms | model step, ms | left for the rest, ms | the rest now, ms | of it, the client's CPU, ms | at best |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for target, allowed, step, now, cpu, best_text in rows:
        lines.append(
            f"| {target} | {allowed:.2f} | {step:.2f} | {allowed - step:.2f} | {now - step:.2f} | {cpu:.2f} "
            f"| {best_text} |"
        )
    return [*lines, ""]


def _profile(plan: Plan, tmp: Path) -> tuple[str, dict[str, dict[str, float]]]:
    """The hot-path profile (a script, in its own process: it imports the service, this package does not):
    its Markdown, and its figures per route (ms per request) where it ran."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    out, figures = [], {}
    for route in PROFILED:
        path = tmp / f"profile{route.replace('/', '_').replace('?', '_')}.json"
        cmd = [sys.executable, str(REPO / "scripts" / "profile_hot_path.py"), "--route", route]
        cmd += ["--requests", str(max(20, plan.step_repeats)), "--json", str(path)]
        done = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode == 0:
            out.append(done.stdout.strip())
            figures[route] = json.loads(path.read_text())
        else:
            out.append(f"(profile failed: {done.stderr[-500:]})")
    return "\n\n".join(out), figures


def _targets(results: dict[str, Any]) -> list[str]:
    """One row per performance target, computed from this run's results."""
    routes: dict[str, dict[int, BenchResult]] = results["routes"]
    rows: list[tuple[str, str, bool]] = []
    ping = routes["ping"][100].requests_per_s
    for r in ("predict", "baseline", "ab"):
        ratio = routes[r][100].requests_per_s / ping
        rows.append(
            (f"100-agent frame `{ROUTES_DOC[r]}` / ping throughput >= 0.5", f"{ratio:.2f}", ratio >= 0.5)
        )
    p99 = results["open_loop"]["predict"].latency_ms.get("p99", float("inf"))
    rows.append(("p99 < 10 ms, 100-agent frames at 10 Hz (`/v1/predict`)", f"{p99:.1f} ms", p99 < 10))
    ups = max(routes["predict"][1000].agent_updates_per_s, results["parallel_1000"].agent_updates_per_s)
    rows.append((">= 50,000 agent-updates/s with 1,000-agent frames", f"{ups:,.0f}/s", ups >= 50_000))
    steps = results["model_step"]
    # every batch size: the worst ratio is the one that counts
    rel = max(steps["ipnet"][b]["step_us_per_agent"] / steps["gru"][b]["step_us_per_agent"] for b in SIZES)
    rows.append(
        (
            f"IPNet at least as fast per update as the GRU (every batch of {', '.join(map(str, SIZES))} agents)",
            f"IPNet/GRU time {rel:.2f} at most",
            rel <= 1,
        )
    )
    modes = results.get("modes")
    if modes:
        cost = modes["predict:1"]["requests_per_s"] / modes["predict:6"]["requests_per_s"]
        rows.append(("`?modes=6` at most 1.5x the time of one future, 100-agent frames (`/v1/predict`)",
                     f"{cost:.2f}x", cost <= 1.5))  # fmt: skip
    for store, m in results["memory"].items():
        b = m["bytes_per_agent"]
        rows.append((f"<= 2 KB state per tracked agent, {store} store", f"{b:,.0f} B", b <= 2048))
    side = results.get("peers")
    if side is not None:
        ours100, ours1000 = side["ours"]["100"], side["ours"]["1000"]
        http, stream = (
            ours100["http_points_json"]["requests_per_s"],
            ours100["stream_points_json"]["requests_per_s"],
        )
        rows.append(("stream >= 2x the HTTP route's req/s (100-agent frames, one connection)",
                     f"{stream / http:.2f}x", stream >= 2 * http))  # fmt: skip
        ups = ours1000["stream_points_json"]["requests_per_s"] * 1000
        rows.append((">= 100,000 agent-updates/s over the stream, 1,000-agent frames", f"{ups:,.0f}/s",
                     ups >= 100_000))  # fmt: skip
        # wall clock per agent-update over the stream (client, transport, framework, state, answer, scoring)
        # against the in-process step per agent of a 1,000-agent batch of the model it serves (the GRU)
        step_us = steps["gru"][1000]["step_us_per_agent"]
        per_update_us = 1e6 / ups if ups else float("inf")
        e2e = per_update_us / step_us
        rows.append(("end-to-end cost per agent-update <= 2x the in-process model step, 1,000-agent frames "
                     "(stream, the GRU route)", f"{per_update_us:.1f} µs vs {step_us:.2f} µs = {e2e:.1f}x", e2e <= 2))  # fmt: skip
        measured = {n: b["100"] for n, b in side["peers"].items() if "100" in b}
        if measured:
            name, best = max(measured.items(), key=lambda kv: kv[1]["peer"]["requests_per_s"])
            p = best["peer"]["requests_per_s"]
            h, st = best["ours_http"]["requests_per_s"] / p, best["ours_stream"]["requests_per_s"] / p
            rows.append(
                (f">= 1.5x the best peer ({name}) over HTTP, 100-agent frames", f"{h:.2f}x", h >= 1.5)
            )
            rows.append(
                (f">= 3x the best peer ({name}) over the stream, 100-agent frames", f"{st:.2f}x", st >= 3)
            )
    return [f"| {t} | {v} | {'yes' if ok else 'no'} |" for t, v, ok in rows]


ROUTES_DOC = {"predict": "/v1/predict", "baseline": "/v1/baseline/predict", "ab": "/v1/ab/predict"}


#: the routes the hot-path profile runs (the last: the cost of six futures without sockets)
PROFILED = ("/v1/predict", "/v1/ab/predict", "/v1/predict?modes=6")


def _modes_section(
    modes: dict[str, dict[str, float]], cell_s: float, profile: dict[str, dict[str, float]] | None = None
) -> list[str]:
    """The cost of answering six futures beside the single trajectory; with the hot-path profile's figures,
    the same ratio in-process (no socket, no client reading the answer)."""
    lines = [
        "",
        "## Several futures: `?modes=6` against the single trajectory (100-agent frames, closed loop)",
        "",
        "The served models always score their 6 futures (one readout); only the futures asked for are then "
        "gathered, placed in the world frame and answered: `?modes=6` adds 5 more trajectories per agent "
        "(each point with its deviations) to that work, to the answer and to online scoring (min-of-K). Each cell "
        f"runs {cell_s} s, the cells take turns over three rounds and each keeps its fastest. Target (the default "
        "answer, the first row): the time of a request with `?modes=6` at most 1.5x that of one without.",
        "",
        "| route, encoding | one future: req/s (p50 ms) | `?modes=6`: req/s (p50 ms) | time ratio |",
        "|---|---|---|---|",
    ]
    for key, label, *_ in MODES_CELLS:
        if f"{key}:1" not in modes:  # a results file from before the cell existed
            continue
        one, six = modes[f"{key}:1"], modes[f"{key}:6"]
        lines.append(
            f"| {label} | {one['requests_per_s']:.1f} ({one['p50_ms']:.2f}) | "
            f"{six['requests_per_s']:.1f} ({six['p50_ms']:.2f}) | "
            f"{one['requests_per_s'] / six['requests_per_s']:.2f}x |"
        )
    size = modes.get("answer_bytes")
    if size:
        lines += [
            "",
            f"One 100-agent answer of `/v1/predict`: JSON {size['json:1'] / 1e6:.2f} MB, with six futures "
            f"{size['json:6'] / 1e6:.2f} MB ({size['json:6'] / size['json:1']:.1f}x); MessagePack "
            f"{size['msgpack:1'] / 1e6:.2f} and {size['msgpack:6'] / 1e6:.2f} MB.",
        ]
    profile = profile or {}
    one_p, six_p = profile.get(PROFILED[0]), profile.get(PROFILED[2])
    if one_p and six_p:
        lines += [
            "",
            f"In-process, without a socket or a client reading the answer (the profile below): "
            f"{six_p['total']:.2f} ms with six futures against {one_p['total']:.2f} ms, "
            f"{six_p['total'] / one_p['total']:.2f}x; writing the answer {six_p['answer']:.2f} against "
            f"{one_p['answer']:.2f} ms, the step {six_p['step']:.2f} against {one_p['step']:.2f} ms. Over HTTP "
            "the rest is the longer answer through the socket and the client's reading of it.",
        ]
    return lines


def _header(results: dict[str, Any], command: str) -> list[str]:
    return [
        "# Benchmarks",
        "",
        "Generated by the benchmark command below; every figure is from that one run (no typed-in numbers).",
        "",
        f"- command: `{command}`",
        f"- date (UTC): {results['date']}, git commit {results['commit']}",
        f"- machine: `nproc` = {results['nproc']}; load average at start {results['loadavg']} "
        "(the machine is shared: other jobs ran during the run)",
        f"- Python {platform.python_version()}, torch {results['torch']}, one uvicorn worker, one torch thread; "
        "client and server on the same 2 cores (the load generator takes CPU from the server)",
        "",
        "```",
        results["lscpu"],
        "```",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *_targets(results),
        "",
        *_stream_budgets(results),
    ]


def _routes_section(results: dict[str, Any]) -> list[str]:
    routes: dict[str, dict[int, BenchResult]] = results["routes"]
    lines = [
        "## Frames through the routes vs the trivial route (closed loop, one sender)",
        "",
        f"Each cell runs {results['plan']['cell_s']} s. `/v1/ping` reads the same body and answers its size "
        "(framework + transport ceiling). Ratio = requests/s of the route / requests/s of ping for the same frame "
        "(target: >= 0.5 at 100 agents). The last column is `/v1/predict?layout=columns` (each trajectory as "
        "three arrays instead of a list of points; the targets use the default layout).",
        "",
        "| agents/frame | ping req/s | predict req/s (ratio) | baseline req/s (ratio) | ab req/s (ratio) | predict p50 / p99 ms | predict agent-updates/s | predict, columns layout: req/s (ratio) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in SIZES:
        ping = routes["ping"][n].requests_per_s
        cells = [
            f"{routes[r][n].requests_per_s:.1f} ({routes[r][n].requests_per_s / ping:.2f})"
            for r in ("predict", "baseline", "ab")
        ]
        lat = routes["predict"][n].latency_ms
        lines.append(
            f"| {n} | {ping:.1f} | {' | '.join(cells)} | {lat.get('p50', 0):.2f} / {lat.get('p99', 0):.2f} | "
            f"{routes['predict'][n].agent_updates_per_s:.0f} | "
            f"{routes[COLUMNS][n].requests_per_s:.1f} ({routes[COLUMNS][n].requests_per_s / ping:.2f}) |"
        )
    errors = sum(r.errors for by in routes.values() for r in by.values())
    lines += ["", f"Errors over all cells: {errors}.", ""]
    lines += [_ratio_bound(results), ""]
    return lines


def _large_frames_section(results: dict[str, Any]) -> list[str]:
    routes: dict[str, dict[int, BenchResult]] = results["routes"]
    par: BenchResult = results["parallel_1000"]
    return [
        "## Agent-updates/s with 1,000-agent frames",
        "",
        f"- one sender: {routes['predict'][1000].agent_updates_per_s:.0f} agent-updates/s "
        f"({routes['predict'][1000].requests_per_s:.1f} req/s)",
        f"- two senders: {par.agent_updates_per_s:.0f} agent-updates/s, p99 {par.latency_ms.get('p99', 0):.1f} ms, "
        f"errors {par.errors} (target: >= 50,000)",
        "",
    ]


def _open_loop_section(results: dict[str, Any]) -> list[str]:
    idle = results["idle_penalty"]
    # what the penalty is: cold caches hit memory-bound work, a slower clock would hit arithmetic too
    cause = (
        "It is the caches, not the clock: "
        if idle["arithmetic_factor"] < 1.2 and idle["memory_factor"] > 1.5
        else "For comparison, "
    )
    lines = [
        "## 100-agent frames at 10 Hz, open loop",
        "",
        "Latency from each frame's scheduled send time (no coordinated omission). Target: p99 < 10 ms. "
        "A `stale_timestamp` error here means a frame overtook the previous frame of the same agents while the "
        "server lagged (frames in flight at once): the service rejects the older one, as it must.",
        "",
        "On this machine the same in-process work takes "
        f"{results['idle_penalty']['factor']:.1f}x as long after 100 ms of idleness "
        f"({results['idle_penalty']['back_to_back_ms']:.2f} ms back to back, "
        f"{results['idle_penalty']['after_100ms_idle_ms']:.2f} ms after a 100 ms sleep: three IPNet steps of "
        "100 agents, `bench_idle_penalty`), a penalty every frame of a 10 Hz stream pays and a closed loop does not. "
        f"{cause}a pure-Python arithmetic loop takes {idle['arithmetic_factor']:.1f}x as "
        f"long after the same sleep ({idle['arithmetic_back_to_back_ms']:.2f} vs "
        f"{idle['arithmetic_after_100ms_idle_ms']:.2f} ms), one numpy pass over 1.6 MB {idle['memory_factor']:.1f}x "
        f"({idle['memory_back_to_back_ms']:.2f} vs {idle['memory_after_100ms_idle_ms']:.2f} ms).",
        "",
        "The last two columns are the server's own view (its `trajpred_request_duration_seconds` histogram, "
        "from the ASGI call to the last byte handed to the socket): what the client adds is its own share of "
        "these two cores, the socket and the HTTP parsing.",
        "",
        "| route | frames | errors | p50 ms | p95 ms | p99 ms | max ms | server mean ms | server within 10 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for route, r in results["open_loop"].items():
        lat = r.latency_ms
        errs = f"{r.errors} {r.error_codes}" if r.errors else "0"
        srv = r.extra.get("server") or {}
        server = f"{srv['mean_ms']:.2f} | {srv['share_le_10ms']:.1%}" if srv else "- | -"
        lines.append(
            f"| {route} | {r.requests} | {errs} | {lat.get('p50', 0):.2f} | {lat.get('p95', 0):.2f} | "
            f"{lat.get('p99', 0):.2f} | {lat.get('max', 0):.2f} | {server} |"
        )
    return lines


def _model_step_section(results: dict[str, Any]) -> list[str]:
    steps = results["model_step"]
    lines = [
        "",
        "## Model step alone, in-process (one torch thread)",
        "",
        "`Predictor.step` (kinematics, one batched forward, the most probable future in the world frame: "
        "the served default) per agent, against one "
        "`(B, features+memory) @ (features+memory, memory)` float32 matmul of the same batch. Ratio = step / matmul "
        "(how far above the bare arithmetic the step is). IPNet/GRU = IPNet's time per update over the GRU's "
        "(target <= 1). The models take turns over five rounds and each keeps its fastest. The forward is "
        "`models.inference.InferenceStep`, the same encoder and readout code for every model; the memory is "
        "IPNet's MTJ layer as one compiled pass (`models/mtj_kernel.c`, as served) or torch's own GRU/LSTM "
        "cell. `ipnet-torch`: IPNet with that kernel off (`TRAJPRED_NATIVE_KERNEL=false`), its MTJ layer as "
        "about twenty torch operations.",
        "",
        "| model | memory | " + " | ".join(f"{b} agents: µs/agent (ratio)" for b in SIZES) + " |",
        "|---|---|" + "---|" * len(SIZES),
    ]
    for name, by in steps.items():
        cells = [f"{by[b]['step_us_per_agent']:.2f} ({by[b]['ratio']:.0f}x)" for b in SIZES]
        lines.append(f"| {name} | {int(by[SIZES[0]]['memory_size'])} | " + " | ".join(cells) + " |")
    lines.append(
        "| IPNet/GRU | | "
        + " | ".join(
            f"{steps['ipnet'][b]['step_us_per_agent'] / steps['gru'][b]['step_us_per_agent']:.2f}"
            for b in SIZES
        )
        + " |"
    )
    lines += [
        "",
        "The memory alone (`InferenceStep.update`: IPNet's MTJ layer, or the GRU/LSTM cell, and the "
        "normalised signals the readout senses; same rounds), µs per agent. The readout's first layer takes "
        f"{int(steps['ipnet'][SIZES[0]]['readout_inputs'])} inputs in IPNet (embedding, switching probabilities "
        f"and temperatures) and {int(steps['gru'][SIZES[0]]['readout_inputs'])} in the GRU (embedding, hidden "
        "state): the step's IPNet/GRU ratio carries that difference, this one does not.",
        "",
        "| model | " + " | ".join(f"{b} agents" for b in SIZES) + " |",
        "|---|" + "---|" * len(SIZES),
    ]
    for name, by in steps.items():
        lines.append(f"| {name} | " + " | ".join(f"{by[b]['update_us_per_agent']:.2f}" for b in SIZES) + " |")
    lines.append(
        "| IPNet/GRU | "
        + " | ".join(
            f"{steps['ipnet'][b]['update_us_per_agent'] / steps['gru'][b]['update_us_per_agent']:.2f}"
            for b in SIZES
        )
        + " |"
    )
    return lines


def _memory_section(results: dict[str, Any]) -> list[str]:
    mem = results["memory"]
    lines = [
        "",
        f"## Memory per tracked agent ({int(mem['memory']['added']):,} agents resident, IPNet + GRU state)",
        "",
        "Agents added through `/v1/ab/predict` in frames of "
        f"{results['plan']['memory_frame']} (one observation each, both models), after one frame of other "
        "agents (what a server allocates once, such as the buffers answers are written into, is not counted). "
        "Target: <= 2 KB per agent.",
        "",
        "| store | agents per model | bytes per agent (all models) | measured as |",
        "|---|---|---|---|",
        f"| memory | {int(mem['memory']['tracked_after']):,} | {mem['memory']['bytes_per_agent']:.0f} | server RSS growth "
        f"({mem['memory']['rss_before'] / 2**20:.0f} -> {mem['memory']['rss_after'] / 2**20:.0f} MiB) / agents |",
    ]
    if "redis" in mem:
        r = mem["redis"]
        lines.append(
            f"| redis | {int(r['tracked_after']):,} | {r['bytes_per_agent']:.0f} | redis-server used_memory growth "
            f"({r['redis_used_before'] / 2**20:.0f} -> {r['redis_used_after'] / 2**20:.0f} MiB, {int(r['redis_keys']):,} keys) "
            f"/ agents; the server's own RSS grew {r['server_rss_bytes_per_agent']:.0f} B/agent |"
        )
    return lines


def _profile_section(profile: str) -> list[str]:
    return [
        "## Where the time goes (profile of the hot path)",
        "",
        "`scripts/profile_hot_path.py`, run by this command (wall-clock spans around the named functions, "
        "the app in-process without sockets, past the scoring warm-up; cProfile's per-call overhead "
        "misattributed the many small Python calls in an earlier version):",
        "",
        profile,
        "",
    ]


def render(results: dict[str, Any], command: str) -> str:
    """BENCHMARKS.md from one run's results: a function per section, in the file's order."""
    lines = [
        *_header(results, command),
        *_routes_section(results),
        *_large_frames_section(results),
        *_open_loop_section(results),
    ]
    if results.get("modes"):
        lines += _modes_section(results["modes"], results["plan"]["cell_s"], results.get("profile_figures"))
    lines += [*_model_step_section(results), *_memory_section(results)]
    if "peers" in results:
        lines += ["", *peer_suite.render(results["peers"], Path(results["peers_dir"]))]
    if "scale" in results:
        lines += ["", *scale_suite.render(results["scale"])]
    if "profile" in results:
        lines += _profile_section(results["profile"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clients.benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown report here (default: stdout)")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results as JSON")
    ap.add_argument(
        "--quick", action="store_true", help="tiny durations: checks the machinery, not the speed"
    )
    ap.add_argument("--no-redis", action="store_true", help="skip the Redis memory measurement")
    ap.add_argument(
        "--peers-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ipnet-traj" / "peers",
        help="one virtualenv per peer serving system (default ~/.cache/ipnet-traj/peers)",
    )
    ap.add_argument(
        "--install-peers", action="store_true", help="create the missing peers' virtualenvs from the registry"
    )
    ap.add_argument("--no-peers", action="store_true", help="skip the transports and peers section")
    ap.add_argument("--no-scale", action="store_true", help="skip the scale-out section (needs redis-server)")
    ap.add_argument("--no-profile", action="store_true", help="skip the hot-path profile")
    ap.add_argument(
        "--modes-only",
        action="store_true",
        help="only the cost of ?modes=6 against one future (one server, about a minute); print its table",
    )
    ap.add_argument(
        "--scale-only",
        action="store_true",
        help="only the scale-out section (memory vs Redis store, two replicas, --workers 2; about 2 minutes); "
        "print it",
    )
    args = ap.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    weights = os.environ.get("TRAJPRED_WEIGHTS_DIR")
    weights_env = {"TRAJPRED_WEIGHTS_DIR": weights} if weights else {}
    if args.modes_only:
        with (
            tempfile.TemporaryDirectory(prefix="trajpred-bench-") as d,
            serve(weights_env, Path(d) / "s.log") as url,
        ):
            modes = bench_modes(url, plan)
        print("\n".join(_modes_section(modes, plan.cell_s)).strip())
        return 0
    if args.scale_only:
        with tempfile.TemporaryDirectory(prefix="trajpred-bench-") as d:
            scale = scale_suite.bench_scale(serve_process, weights_env, plan.cell_s * 2, Path(d))
        print("\n".join(scale_suite.render(scale)).strip())
        return 0
    import torch

    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "commit": _sh(f"git -C {REPO} rev-parse --short HEAD"),
        "nproc": _sh("nproc"),
        "lscpu": _sh("lscpu | head"),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "torch": torch.__version__,
        "plan": plan.__dict__,
    }
    log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="trajpred-bench-") as d:
        tmp = Path(d)
        with serve({**weights_env, "TRAJPRED_MAX_AGENTS": "1000000"}, tmp / "serve-routes.log") as url:
            results["routes"] = bench_routes(url, plan, log)
            results["parallel_1000"] = bench_closed_1000_parallel(url, plan)
            results["open_loop"] = {r: bench_open_loop(url, plan, r) for r in ("predict", "ab")}
            results["modes"] = bench_modes(url, plan)
        print("model step...", file=sys.stderr, flush=True)
        results["model_step"] = bench_model_step(Path(weights) if weights else None, plan)
        results["idle_penalty"] = bench_idle_penalty(Path(weights) if weights else None)
        print("memory...", file=sys.stderr, flush=True)
        if args.no_redis:
            mem_plan = plan
            env = {
                **weights_env,
                "TRAJPRED_MAX_AGENTS": str(plan.memory_agents * 2),
                "TRAJPRED_STATE_TTL_S": "3600",
            }
            with serve(env, tmp / "m.log") as url:
                m = asyncio.run(_fill(url, mem_plan))
                m["bytes_per_agent"] = (m["rss_after"] - m["rss_before"]) / m["added"]
                results["memory"] = {"memory": m}
        else:
            results["memory"] = bench_memory(weights_env, plan, tmp)
        if not args.no_peers:
            print("transports and peers...", file=sys.stderr, flush=True)
            from models.checkpoint import WEIGHTS_DIR

            wdir = Path(weights) if weights else WEIGHTS_DIR
            results["peers_dir"] = str(args.peers_dir)
            with serve_process(
                {**weights_env, "TRAJPRED_MAX_AGENTS": "1000000"}, tmp / "serve-peers.log"
            ) as (
                url,
                pid,
            ):
                results["peers"] = peer_suite.bench_peers(
                    url,
                    pid,
                    wdir / "gru.pt",
                    args.peers_dir,
                    args.install_peers,
                    plan.peer_rounds,
                    plan.cell_s,
                    tmp,
                )
        if not args.no_scale:
            print("scale-out...", file=sys.stderr, flush=True)
            results["scale"] = scale_suite.bench_scale(serve_process, weights_env, plan.cell_s * 2, tmp)
        if not args.no_profile:
            print("profile...", file=sys.stderr, flush=True)
            results["profile"], results["profile_figures"] = _profile(plan, tmp)
    command = "python -m clients.benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(results, command.strip())
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text)
    if args.json:
        raw = {
            **results,
            "routes": {r: {n: b.to_dict() for n, b in by.items()} for r, by in results["routes"].items()},
            "parallel_1000": results["parallel_1000"].to_dict(),
            "open_loop": {r: b.to_dict() for r, b in results["open_loop"].items()},
        }
        args.json.write_text(json.dumps(raw, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
