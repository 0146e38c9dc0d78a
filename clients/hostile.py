"""Cheap attacks on a real ``ipnet serve``, measured: what an authenticated client still gets under each.

``python -m clients.hostile [--json] [--quick]`` starts ``ipnet serve`` (shipped weights, memory store, an
API key, the default connection and input limits), runs each attack while an authenticated client keeps
sending small predict requests, and prints per attack: the authenticated success rate and latency, the
server's resident memory before and after, and what the attacker got. ``--quick`` shortens every phase
(the test suite runs it so); the figures in a note come from a full run.

Attacks (each against the settings that bound it, ``service/settings.py``):

1. ``slow_bodies``: unauthenticated connections that send a predict body at 1 byte/s and reconnect when cut.
2. ``huge_header`` / ``huge_url``: one request whose header (URL) grows to hundreds of MB.
3. ``idle_flood``: more idle connections than the connection cap, re-opened as soon as the server closes them.
4. ``unread_answers``: authenticated requests for the largest answer allowed, never read.
5. ``one_agent_many_observations``: 10,000 observations of one agent, and the per-agent maximum.
6. ``metrics_flood``: connections that read ``/metrics`` back to back while a 10 Hz stream of 100-agent
   frames runs; its latency with and without the flood.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from clients.benchmarks import serve_process

KEY = "hostile-measure-key"
WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / "multimodal" / "seed0"


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` (MB, /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Probe:
    """An authenticated client sending one small predict request every ``period_s`` in a thread."""

    url: str
    period_s: float = 0.5
    timeout_s: float = 10.0
    ok: int = 0
    failed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        k = 0
        t0 = time.time()
        while not self._stop.is_set():
            k += 1
            body = {"observations": [{"agent_id": f"probe-{k}", "timestamp": t0 + k, "x": 1.0 * k, "y": 0.0}]}
            start = time.perf_counter()
            try:
                # a fresh connection each time: the attacks are about getting in as much as about answers
                with httpx.Client(timeout=self.timeout_s) as c:
                    r = c.post(f"{self.url}/v1/predict", json=body, headers={"X-API-Key": KEY})
                status = str(r.status_code)
            except httpx.HTTPError as e:
                status = type(e).__name__
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == "200":
                self.ok += 1
                self.latencies_ms.append((time.perf_counter() - start) * 1000)
            else:
                self.failed += 1
            self._stop.wait(max(0.0, self.period_s - (time.perf_counter() - start)))

    def __enter__(self) -> Probe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)

    def figures(self) -> dict[str, Any]:
        n = self.ok + self.failed
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        return {
            "authenticated_requests": n,
            "authenticated_success_rate": self.ok / n if n else None,
            "authenticated_p50_ms": float(np.median(lat)),
            "authenticated_max_ms": float(np.max(lat)),
            "authenticated_statuses": dict(sorted(self.statuses.items())),
        }


class Attackers:
    """``n`` threads each running ``attack(stop)`` until stopped (each re-connects as it sees fit)."""

    def __init__(self, n: int, attack: Callable[[threading.Event], None]) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=attack, args=(self.stop,), daemon=True) for _ in range(n)]

    def __enter__(self) -> Attackers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def _connect(url: str) -> socket.socket:
    return socket.create_connection(_host_port(url), timeout=5)


# --- the attacks ------------------------------------------------------------------------------------------
def slow_bodies(url: str, pid: int, seconds: float, connections: int) -> dict[str, Any]:
    cut = [0]

    def attack(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with _connect(url) as s:
                    s.sendall(
                        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100000\r\n\r\n"
                    )
                    while not stop.is_set():
                        s.sendall(b" ")
                        s.settimeout(1.0)
                        with contextlib.suppress(TimeoutError):
                            if s.recv(4096):  # answered (401): the server is done with this connection
                                break
            except OSError:
                pass
            cut[0] += 1

    before = rss_mb(pid)
    with Attackers(connections, attack), Probe(url) as probe:
        time.sleep(seconds)
    return {
        **probe.figures(),
        "attacker_connections": connections,
        "attacker_connections_cut": cut[0],
        "rss_before_mb": before,
        "rss_after_mb": rss_mb(pid),
    }


def huge_request(url: str, pid: int, megabytes: int, where: str) -> dict[str, Any]:
    before = rss_mb(pid)
    sent = 0
    answer = b""
    chunk = b"a" * 65536
    start = time.perf_counter()
    with Probe(url) as probe, _connect(url) as s:
        try:
            if where == "header":
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            else:
                s.sendall(b"GET /healthz?q=")
            while sent < megabytes * 2**20:
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        s.settimeout(5)
        with contextlib.suppress(OSError):
            answer = s.recv(200)
        elapsed = time.perf_counter() - start
        time.sleep(1.0)
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace") if answer else "(closed, no answer)"
    return {
        **probe.figures(),
        "attempted_mb": megabytes,
        "sent_before_refusal_mb": sent / 2**20,
        "answer": status,
        "seconds_to_refusal": elapsed,
        "rss_before_mb": before,
        "rss_after_mb": rss_mb(pid),
    }


def idle_flood(url: str, pid: int, seconds: float, connections: int) -> dict[str, Any]:
    opened = [0]
    closed_by_server = [0]
    per_thread = 50

    def attack(stop: threading.Event) -> None:
        socks: list[socket.socket] = []
        while not stop.is_set():
            while len(socks) < per_thread and not stop.is_set():
                try:
                    socks.append(_connect(url))
                    opened[0] += 1
                except OSError:
                    time.sleep(0.05)
            for s in list(socks):  # drop the ones the server closed (EOF or a 503), to re-open them
                s.setblocking(False)
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data or data.startswith(b"HTTP/1.1 503"):
                    closed_by_server[0] += 1
                    socks.remove(s)
                    s.close()
            stop.wait(0.2)
        for s in socks:
            s.close()

    before = rss_mb(pid)
    with Attackers(max(1, connections // per_thread), attack), Probe(url) as probe:
        time.sleep(seconds)
    return {
        **probe.figures(),
        "attacker_connections": connections,
        "attacker_connections_opened": opened[0],
        "closed_by_server": closed_by_server[0],
        "rss_before_mb": before,
        "rss_after_mb": rss_mb(pid),
    }


def unread_answers(url: str, pid: int, connections: int, agents: int, wait_s: float) -> dict[str, Any]:
    t0 = time.time()
    obs = [{"agent_id": f"u{k}", "timestamp": t0, "x": float(k), "y": 0.0} for k in range(agents)]
    body = json.dumps({"observations": obs}).encode()
    head = (
        f"POST /v1/ab/predict HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    before = rss_mb(pid)
    socks = []
    with Probe(url) as probe:
        for _ in range(connections):
            s = _connect(url)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read: the answer stays queued
            s.sendall(head + body)
            socks.append(s)
        time.sleep(wait_s / 2)
        peak = rss_mb(pid)
        time.sleep(wait_s / 2)
    disconnected = 0
    for s in socks:
        s.setblocking(False)
        with contextlib.suppress(OSError):
            while s.recv(1 << 20):
                pass
        try:
            s.recv(1)
        except BlockingIOError:
            continue
        except OSError:
            disconnected += 1
            continue
        disconnected += 1  # EOF
    for s in socks:
        s.close()
    return {
        **probe.figures(),
        "request_mb": len(body) / 2**20,
        "connections": connections,
        "disconnected_by_server": disconnected,
        "rss_before_mb": before,
        "rss_peak_mb": peak,
        "rss_after_mb": rss_mb(pid),
    }


def one_agent_many_observations(url: str, pid: int) -> dict[str, Any]:
    t0 = time.time() - 100
    out: dict[str, Any] = {}
    with httpx.Client(timeout=120, headers={"X-API-Key": KEY}) as c:
        for label, n, agents in (
            ("10000_of_one_agent", 10_000, 1),
            ("64_of_one_agent", 64, 1),
            ("64_over_64_agents", 64, 64),
        ):
            obs = [
                {
                    "agent_id": f"{label}-{k % agents}",
                    "timestamp": t0 + 0.1 * (k // agents),
                    "x": 0.1 * k,
                    "y": 0.0,
                }
                for k in range(n)
            ]
            start = time.perf_counter()
            r = c.post(f"{url}/v1/ab/predict", json={"observations": obs})
            out[label] = {
                "status": r.status_code,
                "ms": (time.perf_counter() - start) * 1000,
                "code": r.json().get("error", {}).get("code") if r.status_code != 200 else None,
            }
    return out


def metrics_flood(url: str, pid: int, seconds: float, connections: int) -> dict[str, Any]:
    def stream(stop: threading.Event) -> list[float]:
        lat: list[float] = []
        t0 = time.time()
        with httpx.Client(timeout=10, headers={"X-API-Key": KEY}) as c:
            k = 0
            while not stop.is_set():
                k += 1
                body = {
                    "observations": [
                        {"agent_id": f"m{a}", "timestamp": t0 + 0.1 * k, "x": 1.0 * k + a, "y": float(a)}
                        for a in range(100)
                    ]
                }
                start = time.perf_counter()
                r = c.post(f"{url}/v1/predict", json=body)
                if r.status_code == 200:
                    lat.append((time.perf_counter() - start) * 1000)
                stop.wait(max(0.0, 0.1 - (time.perf_counter() - start)))
        return lat

    def run(flood: bool) -> list[float]:
        scrapes = [0]

        def attack(stop: threading.Event) -> None:
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    with contextlib.suppress(httpx.HTTPError):
                        c.get(f"{url}/metrics")
                        scrapes[0] += 1

        stop = threading.Event()
        result: list[list[float]] = []
        t = threading.Thread(target=lambda: result.append(stream(stop)))
        with Attackers(connections if flood else 0, attack):
            t.start()
            time.sleep(seconds)
            stop.set()
            t.join(15)
        run.scrapes = scrapes[0]  # type: ignore[attr-defined]
        return result[0] if result else []

    quiet = run(False)
    loud = run(True)
    return {
        "stream_p50_ms_quiet": float(np.median(quiet)),
        "stream_p99_ms_quiet": float(np.percentile(quiet, 99)),
        "stream_p50_ms_flood": float(np.median(loud)),
        "stream_p99_ms_flood": float(np.percentile(loud, 99)),
        "flood_connections": connections,
        "scrapes_per_s": run.scrapes / seconds,  # type: ignore[attr-defined]
        "stream_frames": [len(quiet), len(loud)],
    }


@contextlib.contextmanager
def _server() -> Iterator[tuple[str, int]]:
    env = {"TRAJPRED_API_KEYS": KEY, "TRAJPRED_WEIGHTS_DIR": str(WEIGHTS)}
    with tempfile.TemporaryDirectory() as tmp, serve_process(env, Path(tmp) / "serve.log") as (url, pid):
        yield url, pid


def run_all(quick: bool) -> dict[str, Any]:
    """Every attack, each against a fresh server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # the idle flood's sockets
    secs = 6.0 if quick else 20.0
    plan: list[tuple[str, Callable[[str, int], dict[str, Any]]]] = [
        ("slow_bodies", lambda u, p: slow_bodies(u, p, secs, 20 if quick else 100)),
        ("huge_header", lambda u, p: huge_request(u, p, 20 if quick else 300, "header")),
        ("huge_url", lambda u, p: huge_request(u, p, 20 if quick else 200, "url")),
        ("idle_flood", lambda u, p: idle_flood(u, p, secs, 200 if quick else 1100)),
        (
            "unread_answers",
            lambda u, p: unread_answers(
                u, p, 4 if quick else 20, 1000 if quick else 5000, 6.0 if quick else 40.0
            ),
        ),
        ("one_agent_many_observations", one_agent_many_observations),
        ("metrics_flood", lambda u, p: metrics_flood(u, p, 4.0 if quick else 10.0, 8)),
    ]
    out: dict[str, Any] = {}
    for name, attack in plan:
        with _server() as (url, pid):
            print(f"{name} ...", file=sys.stderr, flush=True)
            out[name] = attack(url, pid)
    return out


def render(results: dict[str, Any]) -> str:
    lines = []
    for name, figures in results.items():
        lines.append(name)
        for k, v in figures.items():
            lines.append(f"  {k}: {round(v, 3) if isinstance(v, float) else v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clients.hostile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quick", action="store_true", help="short phases and fewer connections (tests)")
    args = parser.parse_args(argv)
    results = run_all(args.quick)
    print(json.dumps(results, indent=2) if args.json else render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
