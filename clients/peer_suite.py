"""Peers side by side: the same stateful GRU work served by other serving systems, and by this service over
each of its transports and encodings, in one run (part of ``python -m clients.benchmarks``).

Each peer is installed from the package registry into its own virtualenv under ``--peers-dir`` (created with
``--install-peers``; a peer that cannot be installed or started is reported with the reason, the others
still run) and serves ``clients.peers.*``: per-agent GRU state in one process, the served checkpoint, no
checks, scoring or metrics (it does less than the service). Each peer is measured in turns with the service
(``rounds`` rounds, each keeping its best): closed loop, one sender, 100- and 1,000-agent frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from clients.bench import BenchConfig, Fleet, closed_loop_on_wire, run_bench_async
from clients.processes import cpu_seconds, free_port, stop_process

REPO = Path(__file__).resolve().parent.parent
#: what every peer's venv gets beside its server: what ``models.predictor`` imports (torch pinned to the
#: local CPU wheel, never a CUDA build)
COMMON_PACKAGES = ("torch==2.13.0", "numpy", "numba", "pandas", "pyarrow", "zarr<3", "numcodecs", "orjson")
V2_MODEL = "gru-peer"
SIZES = (100, 1000)


@dataclass(frozen=True)
class PeerSpec:
    name: str  # the venv's folder and the results' key
    label: str
    packages: tuple[str, ...]
    module: str  # imported to check that the venv holds the server
    protocol: str  # "v2" (KServe V2 REST, as MLServer and Triton) or "frame" (the service's frame body)
    how: str  # the configuration, for the report


PEERS = (
    PeerSpec(
        "mlserver",
        "Seldon MLServer",
        ("mlserver",),
        "mlserver",
        "v2",
        "custom runtime, V2 REST, one process (`parallel_workers` 0)",
    ),
    PeerSpec(
        "ray",
        "Ray Serve",
        ("ray[serve]",),
        "ray.serve",
        "frame",
        "one deployment replica behind Ray's HTTP proxy (`num_replicas=1`)",
    ),
    PeerSpec(
        "litserve",
        "LitServe",
        ("litserve",),
        "litserve",
        "frame",
        "one inference worker (`workers_per_device=1`), no batching across requests",
    ),
    PeerSpec(
        "pytriton",
        "Triton Inference Server (PyTriton)",
        ("nvidia-pytriton",),
        "pytriton",
        "v2",
        "Triton's C++ HTTP front end, the Python model in one PyTriton process, no dynamic batching",
    ),
)


def ensure_venv(spec: PeerSpec, peers_dir: Path, install: bool) -> tuple[Path | None, str]:
    """The peer's venv python, or None and why not (not installed; the install failed)."""
    python = peers_dir / spec.name / "bin" / "python"
    check = [str(python), "-c", f"import {spec.module}, torch, numba"]

    def usable() -> bool:
        return python.exists() and subprocess.run(check, capture_output=True, check=False).returncode == 0

    if usable():
        return python, "installed"
    if not install:
        return None, f"no virtualenv with {spec.module} in {peers_dir / spec.name} (run with --install-peers)"
    subprocess.run(["python3", "-m", "venv", str(peers_dir / spec.name)], check=True, capture_output=True)
    pip = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *spec.packages,
            *COMMON_PACKAGES,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if pip.returncode != 0 or not usable():
        tail = [ln for ln in (pip.stderr + pip.stdout).splitlines() if not ln.startswith("WARNING: Location")]
        return None, "pip install failed: " + " / ".join(tail[-3:])
    return python, "installed now"


def v2_body(fleet: Fleet, k: int) -> bytes:
    """The k-th frame as a V2 inference request: the same data and one ``orjson.dumps``, as ``Fleet.frame``."""
    t, x, y = fleet.positions(k)
    n = len(x)

    def col(name: str, data: list[Any], dtype: str) -> dict[str, Any]:
        return {"name": name, "shape": [n], "datatype": dtype, "data": data}

    body = {
        "inputs": [
            col("agent_id", fleet.ids, "BYTES"),
            col("t", [t] * n, "FP64"),
            col("x", x, "FP64"),
            col("y", y, "FP64"),
        ]
    }
    return orjson.dumps(body)


@dataclass
class RunningPeer:
    url: str
    path: str
    pid: int
    body_of: Callable[[Fleet, int], bytes]


def _wait_answering(url: str, path: str, body: bytes, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 300  # Ray starts a whole cluster
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.post(url + path, content=body, timeout=10).status_code == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"did not start: {log.read_text(errors='replace')[-1500:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def start_peer(spec: PeerSpec, python: Path, checkpoint: Path, tmp: Path) -> Iterator[RunningPeer]:
    """Start the peer's server (its venv's python, this repository on its path) and wait until it answers a
    frame; stop it (and its process tree) at the end."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    log = tmp / f"{spec.name}.log"
    if spec.name == "mlserver":
        d = tmp / "mlserver"
        (d / V2_MODEL).mkdir(parents=True, exist_ok=True)
        settings = {
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "host": "127.0.0.1",
            "parallel_workers": 0,
        }
        (d / "settings.json").write_text(json.dumps(settings))
        model = {
            "name": V2_MODEL,
            "implementation": "clients.peers.mlserver_peer.GRUPeer",
            "parameters": {"uri": str(checkpoint)},
        }
        (d / V2_MODEL / "model-settings.json").write_text(json.dumps(model))
        cmd, cwd = [str(python.parent / "mlserver"), "start", str(d)], d
    else:
        module = {"ray": "ray_peer", "litserve": "litserve_peer", "pytriton": "pytriton_peer"}[spec.name]
        cmd = [
            str(python),
            "-m",
            f"clients.peers.{module}",
            "--port",
            str(port),
            "--checkpoint",
            str(checkpoint),
        ]
        if spec.name == "pytriton":
            cmd += ["--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
        cwd = REPO
    path = f"/v2/models/{V2_MODEL}/infer" if spec.protocol == "v2" else "/predict"
    body_of = v2_body if spec.protocol == "v2" else Fleet.frame
    with log.open("ab") as fh:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_answering(url, path, body_of(Fleet(1, "warmup", 0.1), 0), proc, log)
        yield RunningPeer(url, path, proc.pid, body_of)
    finally:
        stop_process(proc)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, 9)  # workers, actors and sidecars of the peer's session


def _peer_cell(peer: RunningPeer, agents: int, cell_s: float) -> dict[str, Any]:
    cpu0 = cpu_seconds(peer.pid)
    r = asyncio.run(closed_loop_on_wire(peer.url, peer.path, agents, cell_s, peer.body_of))
    r["server_cpu_ms"] = (cpu_seconds(peer.pid) - cpu0) * 1e3 / max(r["ok"], 1)
    r["agent_updates_per_s"] = r["requests_per_s"] * agents
    return r


#: this service's rows: (key, label, layout, encoding, stream)
OURS = (
    ("http_points_json", "HTTP, points, JSON", "points", "json", False),
    ("http_columns_json", "HTTP, columns, JSON", "columns", "json", False),
    ("http_points_msgpack", "HTTP, points, MessagePack", "points", "msgpack", False),
    ("http_columns_msgpack", "HTTP, columns, MessagePack", "columns", "msgpack", False),
    ("stream_points_json", "stream, points, JSON", "points", "json", True),
    ("stream_columns_msgpack", "stream, columns, MessagePack", "columns", "msgpack", True),
)


def _our_cell(
    url: str, pid: int, agents: int, cell_s: float, layout: str, encoding: str, stream: bool
) -> dict[str, Any]:
    cfg = BenchConfig(
        server=url,
        route="baseline",
        agents=agents,
        rate_hz=None,
        duration_s=cell_s,
        layout=layout,
        encoding=encoding,
        stream=stream,
    )
    cpu0 = cpu_seconds(pid)
    r = asyncio.run(run_bench_async(cfg)).to_dict()
    r["server_cpu_ms"] = (cpu_seconds(pid) - cpu0) * 1e3 / max(r["ok"], 1)
    return r


def _keep_best(into: dict[str, Any], key: str, r: dict[str, Any]) -> None:
    if r["requests_per_s"] > into.get(key, {}).get("requests_per_s", -1.0):
        into[key] = r


def bench_peers(
    url: str,
    pid: int,
    checkpoint: Path,
    peers_dir: Path,
    install: bool,
    rounds: int,
    cell_s: float,
    tmp: Path,
) -> dict[str, Any]:
    """Every transport of this service, then every peer in turns with the service's HTTP and stream rows.

    ``ours`` holds the service's best round per row and size; each peer's block holds its own best round and
    the service's best over the same rounds (``ours_http``, ``ours_stream``), so a ratio compares figures
    measured seconds apart.
    """
    results: dict[str, Any] = {"ours": {}, "peers": {}, "rounds": rounds}
    for agents in SIZES:
        best: dict[str, Any] = {}
        for _ in range(rounds):
            for key, _label, layout, encoding, stream in OURS:
                _keep_best(best, key, _our_cell(url, pid, agents, cell_s, layout, encoding, stream))
        results["ours"][str(agents)] = best
    for spec in PEERS:
        block: dict[str, Any] = {"label": spec.label, "how": spec.how}
        results["peers"][spec.name] = block
        python, why = ensure_venv(spec, peers_dir, install)
        block["install"] = why
        if python is None:
            continue
        try:
            with start_peer(spec, python, checkpoint, tmp) as peer:
                for agents in SIZES:
                    cells: dict[str, Any] = {}
                    for _ in range(rounds):
                        _keep_best(cells, "peer", _peer_cell(peer, agents, cell_s))
                        _keep_best(
                            cells, "ours_http", _our_cell(url, pid, agents, cell_s, "points", "json", False)
                        )
                        _keep_best(
                            cells, "ours_stream", _our_cell(url, pid, agents, cell_s, "points", "json", True)
                        )
                    block[str(agents)] = cells
        except (RuntimeError, OSError, httpx.HTTPError) as e:  # a peer that fails is reported, not fatal
            block["error"] = str(e)[-800:]
    return results


def render(results: dict[str, Any], peers_dir: Path) -> list[str]:
    """The report's section: the service's transports, then every peer with its ratios."""

    def row(label: str, r: dict[str, Any], agents: int) -> str:
        lat = r.get("latency_ms", {})
        return (
            f"| {label} | {agents:,} | {r['requests_per_s']:.1f} | {r['requests_per_s'] * agents:,.0f} | "
            f"{lat.get('p50', 0):.2f} | {lat.get('p99', 0):.2f} | {r['server_cpu_ms']:.2f} | {r['errors']} |"
        )

    head = [
        "| server | agents/frame | req/s | agent-updates/s | p50 ms | p99 ms | server CPU ms/request | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines = [
        "## This service's transports and encodings, and peers side by side",
        "",
        "The GRU baseline route (`/v1/baseline/predict`, or `/v1/stream?route=baseline`) of one `ipnet serve`, "
        f"closed loop, one sender, best of {results['rounds']} rounds per row. Server CPU: the server's process "
        "tree, user + system, per answered request.",
        "",
        *head,
    ]
    for agents in SIZES:
        for key, label, *_ in OURS:
            r = results["ours"].get(str(agents), {}).get(key)
            if r is not None:
                lines.append(row(f"ipnet-traj, {label}", r, agents))
    lines += [
        "",
        "Peers: the same GRU checkpoint and per-agent state (`clients/peers/`), each from the package registry in "
        f"its own virtualenv under `{peers_dir}`, measured in turns with the service (its HTTP points JSON and "
        "stream rows) over the same rounds.",
        "",
    ]
    for name, block in results["peers"].items():
        lines.append(f"**{block['label']}** ({block['how']}): {block['install']}.")
        if "error" in block:
            # the last exception line of its log says why; the whole tail is in the JSON results
            errors = [ln.strip() for ln in block["error"].splitlines() if "Error" in ln or "Exception" in ln]
            lines += ["", f"It did not start: `{errors[-1] if errors else block['error'][-200:]}`", ""]
            continue
        if not any(str(a) in block for a in SIZES):
            lines.append("")
            continue
        lines += ["", *head]
        for agents in SIZES:
            cells = block.get(str(agents))
            if cells is None:
                continue
            lines += [
                row(f"{block['label']}", cells["peer"], agents),
                row("ipnet-traj HTTP (same rounds)", cells["ours_http"], agents),
                row("ipnet-traj stream (same rounds)", cells["ours_stream"], agents),
            ]
        ratios = []
        for agents in SIZES:
            cells = block.get(str(agents))
            if cells is not None and cells["peer"]["requests_per_s"] > 0:
                p = cells["peer"]["requests_per_s"]
                ratios.append(
                    f"{agents:,} agents: HTTP {cells['ours_http']['requests_per_s'] / p:.2f}x, "
                    f"stream {cells['ours_stream']['requests_per_s'] / p:.2f}x"
                )
        lines += ["", f"Service / {name} requests/s: " + "; ".join(ratios) + ".", ""]
    return lines
