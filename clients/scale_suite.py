"""Scale-out, measured (part of ``python -m clients.benchmarks``): the Redis tax of one process, two replicas
on one Redis, and a fleet projected onto those figures.

Frames of 200 agents (one vehicle's perception frame of the fleet below), closed loop, ``/v1/predict``:

- one process with the memory store, then with the Redis store (a real ``redis-server`` on loopback): the
  same two senders, so the process is busy; Redis's own counters (``INFO``) give the commands, CPU seconds
  and network bytes it spent per agent-update;
- two replicas on that Redis, one sender each, at the same time: their sum against one replica;
- one ``ipnet serve --workers 2`` on that Redis (two processes accepting on one port), four senders.

The fleet (1,000 vehicles x 200 agents x 10 Hz = 2,000,000 agent-updates/s) is divided by those figures:
service processes (one core each, from the service's CPU time per update), Redis shards (each kept at 80% of one core), and the bytes
on the wire between perception and service and between service and Redis.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from clients.bench import BenchConfig, Fleet, run_bench_async
from clients.processes import cpu_seconds, free_port_pair, redis_server, wait_until

FRAME_AGENTS = 200
FLEET_UPDATES_PER_S = 1000 * 200 * 10
SHARD_CPU_SHARE = 0.8
#: senders per worker of ``ipnet serve --workers 2``: the kernel hands each new connection to one worker, so
#: with one sender per worker both senders could land on the same worker
WORKERS_SENDERS = 2


def _redis_counters(url: str) -> dict[str, float]:
    r = redis.Redis.from_url(url)
    try:
        info = r.info()
    finally:
        r.close()
    return {
        "commands": float(info["total_commands_processed"]),
        "cpu_s": float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
        "net_bytes": float(info["total_net_input_bytes"]) + float(info["total_net_output_bytes"]),
        "used_memory": float(info["used_memory"]),
    }


async def _load(urls: list[str], senders_each: int, cell_s: float) -> dict[str, float]:
    """Every URL loaded at once by ``senders_each`` closed-loop senders: summed figures."""
    cfgs = [
        BenchConfig(
            server=u,
            route="predict",
            agents=FRAME_AGENTS,
            rate_hz=None,
            concurrency=senders_each,
            duration_s=cell_s,
        )
        for u in urls
    ]
    results = await asyncio.gather(*(run_bench_async(c) for c in cfgs))
    ok = sum(r.ok for r in results)
    return {
        "requests_per_s": sum(r.requests_per_s for r in results),
        "agent_updates_per_s": sum(r.agent_updates_per_s for r in results),
        "errors": float(sum(r.errors for r in results)),
        "ok": float(ok),
        "p50_ms": max(r.latency_ms.get("p50", 0.0) for r in results),
        "p99_ms": max(r.latency_ms.get("p99", 0.0) for r in results),
    }


def _ready(url: str) -> Callable[[], bool]:
    return lambda: httpx.get(f"{url}/readyz").status_code == 200


def _answer_bytes(url: str) -> float:
    """Bytes of one 200-agent ``/v1/predict`` answer per agent (default layout), on fresh agents."""
    body = Fleet(FRAME_AGENTS, "size-probe", 0.1).frame(0)
    r = httpx.post(
        f"{url}/v1/predict", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    r.raise_for_status()
    return len(r.content) / FRAME_AGENTS


ServeFn = Callable[[dict[str, str], Path], Any]  # clients.benchmarks.serve_process


def bench_scale(
    serve_process: ServeFn, weights_env: dict[str, str], cell_s: float, tmp: Path
) -> dict[str, Any]:
    """The measurements of the module docstring; ``serve_process(env, log)`` starts one ``ipnet serve``."""
    out: dict[str, Any] = {"frame_agents": FRAME_AGENTS, "cell_s": cell_s}
    env = {**weights_env, "TRAJPRED_MAX_AGENTS": "1000000"}
    with serve_process(env, tmp / "scale-memory.log") as (url, pid):
        cpu0 = cpu_seconds(pid)
        out["memory"] = asyncio.run(_load([url], 2, cell_s))
        out["memory"]["server_cpu_ms_per_request"] = (
            (cpu_seconds(pid) - cpu0) * 1e3 / max(out["memory"]["ok"], 1)
        )
        out["request_bytes_per_agent"] = len(Fleet(FRAME_AGENTS, "size-probe", 0.1).frame(0)) / FRAME_AGENTS
        out["answer_bytes_per_agent"] = _answer_bytes(url)
    with redis_server(tmp) as store:
        renv = {**env, "TRAJPRED_STORE": store}
        with (
            serve_process({**renv, "TRAJPRED_REDIS_KEY_PREFIX": "scale"}, tmp / "scale-r1.log") as (u1, p1),
            serve_process({**renv, "TRAJPRED_REDIS_KEY_PREFIX": "scale"}, tmp / "scale-r2.log") as (u2, _p2),
        ):
            before = _redis_counters(store)
            cpu0 = cpu_seconds(p1)
            one = asyncio.run(_load([u1], 2, cell_s))
            one["server_cpu_ms_per_request"] = (cpu_seconds(p1) - cpu0) * 1e3 / max(one["ok"], 1)
            after = _redis_counters(store)
            updates = one["ok"] * FRAME_AGENTS
            out["redis"] = one
            out["redis_per_update"] = {
                "commands": (after["commands"] - before["commands"]) / updates,
                "cpu_us": (after["cpu_s"] - before["cpu_s"]) * 1e6 / updates,
                "net_bytes": (after["net_bytes"] - before["net_bytes"]) / updates,
            }
            out["replicas_2"] = asyncio.run(_load([u1, u2], 1, cell_s))
        base = free_port_pair()
        wenv = {
            **renv,
            "TRAJPRED_REDIS_KEY_PREFIX": "scale-w",
            "TRAJPRED_WORKERS": "2",
            "TRAJPRED_WORKER_PORT_BASE": str(base),
        }
        with serve_process(wenv, tmp / "scale-w2.log") as (uw, pw):
            for port in (base, base + 1):  # the shared port's /readyz answers for one worker only
                wait_until(_ready(f"http://127.0.0.1:{port}"), "a worker", 120)
            cpu0 = cpu_seconds(pw)
            w2 = asyncio.run(_load([uw], 2 * WORKERS_SENDERS, cell_s))
            w2["server_cpu_ms_per_request"] = (cpu_seconds(pw) - cpu0) * 1e3 / max(w2["ok"], 1)
            out["workers_2"] = w2
    out["projection"] = project(out)
    return out


def project(m: dict[str, Any]) -> dict[str, float]:
    """The fleet divided by one run's figures (see the module docstring)."""
    # the service's own CPU per update (not its throughput here, which shares two cores with the senders and
    # Redis): cores that are busy serving only
    cpu_s_per_update = m["redis"]["server_cpu_ms_per_request"] / 1e3 / m["frame_agents"]
    per_update = m["redis_per_update"]
    shard_updates = SHARD_CPU_SHARE / max(per_update["cpu_us"] * 1e-6, 1e-12)
    wire = m["request_bytes_per_agent"] + m["answer_bytes_per_agent"]
    return {
        "fleet_updates_per_s": float(FLEET_UPDATES_PER_S),
        "service_cores": float(math.ceil(FLEET_UPDATES_PER_S * cpu_s_per_update)),
        "redis_shards": float(math.ceil(FLEET_UPDATES_PER_S / shard_updates)),
        "redis_commands_per_s": FLEET_UPDATES_PER_S * per_update["commands"],
        "perception_gbit_per_s": FLEET_UPDATES_PER_S * wire * 8 / 1e9,
        "redis_gbit_per_s": FLEET_UPDATES_PER_S * per_update["net_bytes"] * 8 / 1e9,
    }


def render(m: dict[str, Any]) -> list[str]:
    """The report's section."""
    p, per = m["projection"], m["redis_per_update"]

    def row(label: str, r: dict[str, float]) -> str:
        cpu = r.get("server_cpu_ms_per_request")
        return (
            f"| {label} | {r['requests_per_s']:.1f} | {r['agent_updates_per_s']:,.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {'-' if cpu is None else f'{cpu:.2f}'} | {r['errors']:.0f} |"
        )

    tax = 1 - m["redis"]["agent_updates_per_s"] / m["memory"]["agent_updates_per_s"]
    gain = m["replicas_2"]["agent_updates_per_s"] / m["redis"]["agent_updates_per_s"]
    wgain = m["workers_2"]["agent_updates_per_s"] / m["redis"]["agent_updates_per_s"]
    return [
        "## Scale-out",
        "",
        f"{m['frame_agents']}-agent frames, closed loop, `/v1/predict`, {m['cell_s']:g} s per cell "
        "(`clients/scale_suite.py`). One process is loaded by two senders; two replicas by one sender each, at "
        "once, on one Redis.",
        "",
        "| setup | req/s | agent-updates/s | p50 ms | p99 ms | server CPU ms/request | errors |",
        "|---|---|---|---|---|---|---|",
        row("one process, memory store", m["memory"]),
        row("one process, Redis store", m["redis"]),
        row("two replicas, Redis store (sum)", m["replicas_2"]),
        row(f"`ipnet serve --workers 2`, Redis store ({2 * WORKERS_SENDERS} senders)", m["workers_2"]),
        "",
        f"Redis tax (one process): {tax:.0%} fewer agent-updates/s than the memory store. Two replicas on this "
        f"2-core machine: {gain:.2f}x one replica (the senders, the replicas and Redis share the two cores); "
        f"two workers behind one port: {wgain:.2f}x one process. "
        f"Redis per agent-update: {per['commands']:.3f} commands, {per['cpu_us']:.2f} us of its CPU, "
        f"{per['net_bytes']:.0f} bytes in and out. On the perception side, "
        f"{m['request_bytes_per_agent']:.0f} bytes of request and {m['answer_bytes_per_agent']:.0f} bytes of "
        "answer per agent (JSON, default layout, 3 s horizon).",
        "",
        f"**A fleet of 1,000 vehicles x 200 agents x 10 Hz = {p['fleet_updates_per_s']:,.0f} agent-updates/s**, "
        "divided by these figures:",
        "",
        "| resource | projected |",
        "|---|---|",
        f"| service processes, one core each (from their CPU per update with the Redis store) | "
        f"{p['service_cores']:,.0f} |",
        f"| Redis shards (each at {SHARD_CPU_SHARE:.0%} of a core) | {p['redis_shards']:,.0f} |",
        f"| Redis commands/s over all shards | {p['redis_commands_per_s']:,.0f} |",
        f"| perception <-> service traffic | {p['perception_gbit_per_s']:.1f} Gbit/s |",
        f"| service <-> Redis traffic | {p['redis_gbit_per_s']:.1f} Gbit/s |",
        "",
        "The projection is linear: it assumes agents spread over shards by key (each agent's state and its "
        "vehicle's frame on one shard: one frame is one atomic commit) and replicas that share nothing but "
        "Redis; the scoring log (`<prefix>:scoring`, every replica follows all of it) does not shard that way "
        "and at this scale would be split per vehicle group.",
        "",
    ]
