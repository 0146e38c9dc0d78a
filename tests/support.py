"""Helpers of tests/service and tests/e2e: real data frames, a real redis-server, real `ipnet serve`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients.processes import free_port, stop_process
from models.checkpoint import WEIGHTS_DIR
from models.data import Track, load_tracks

REPO = Path(__file__).resolve().parent.parent
#: a Pittsburgh AV2 sensor log: 93 tracks (55 vehicles, 38 pedestrians), 156 frames at 10 Hz
AV2_LOG = "adcf7d18-0510-35b0-a2fa-b4cea13a6d76"


def weights_dir() -> Path:
    """``$TRAJPRED_WEIGHTS_DIR`` or the shipped ``models/weights``; missing checkpoints fail the test.

    The weights are shipped in the repository: a run without them is broken, never silently skipped.
    """
    d = Path(os.environ.get("TRAJPRED_WEIGHTS_DIR") or WEIGHTS_DIR)
    missing = [k for k in ("ipnet", "gru") if not (d / f"{k}.pt").is_file()]
    if missing:
        pytest.fail(
            f"no {', '.join(missing)} checkpoint in {d} (ship models/weights or set TRAJPRED_WEIGHTS_DIR)"
        )
    return d


@dataclass
class Replay:
    """A real log as the frames a perception stack would send, in time order."""

    tracks: list[Track]
    path: Path
    times: list[float] = field(default_factory=list)
    frames: dict[float, list[dict[str, Any]]] = field(default_factory=dict)

    @staticmethod
    def load(path: Path) -> Replay:
        tracks = load_tracks(path)
        frames: dict[float, list[dict[str, Any]]] = defaultdict(list)
        for tr in tracks:
            for t, (x, y) in zip(tr.t.tolist(), tr.xy.tolist(), strict=True):
                frames[t].append(
                    {"agent_id": tr.agent_id, "timestamp": t, "x": x, "y": y, "agent_type": tr.agent_type}
                )
        times = sorted(frames)
        return Replay(tracks, path, times, dict(frames))

    def body(self, i: int) -> dict[str, Any]:
        return {"observations": self.frames[self.times[i]]}


def _wait(check: Any, what: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout_s} s")


def ipnet_command() -> list[str]:
    """The installed ``ipnet`` console script beside this interpreter, else ``python -m service.cli``."""
    script = Path(sys.executable).parent / "ipnet"
    if script.is_file():
        return [str(script)]
    found = shutil.which("ipnet")
    return [found] if found else [sys.executable, "-m", "service.cli"]


class Server:
    """A real ``ipnet serve`` process on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        # a fresh /metrics on every read (the tests read counters right after requests) unless a test asks
        full_env = {
            **os.environ,
            "TRAJPRED_LOG_LEVEL": "warning",
            "OMP_NUM_THREADS": "1",
            "TRAJPRED_METRICS_CACHE_S": "0",
            **env,
        }
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [*ipnet_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def wait_ready(self, timeout_s: float = 90) -> Server:
        _wait(
            lambda: self.client.get("/readyz").status_code == 200,
            f"ipnet serve ({self.log()})",
            timeout_s,
            self.proc,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        """Send ``sig`` and wait: the exit code."""
        self.client.close()
        try:
            return stop_process(self.proc, timeout_s, sig)
        finally:
            self._log.close()


@contextlib.contextmanager
def serve(env: dict[str, str], log_path: Path) -> Iterator[Server]:
    """Start ``ipnet serve`` and stop it (SIGTERM) at the end."""
    server = Server(env, log_path)
    try:
        yield server.wait_ready()
    finally:
        server.stop()
