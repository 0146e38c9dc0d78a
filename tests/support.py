"""Helpers of tests/service and tests/e2e: real data frames, a real redis-server, real `ipnet serve`."""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest

from clients import processes
from clients.processes import REPO as REPO
from clients.processes import ServeProcess, wait_until
from clients.processes import free_port as free_port  # the tests' imports of these stay as they were
from clients.processes import ipnet_command as ipnet_command
from clients.processes import stop_process as stop_process
from models.checkpoint import WEIGHTS_DIR
from models.data import Track, load_tracks

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


_wait = wait_until  # the tests' name for it


class Server(ServeProcess):
    """A real ``ipnet serve`` for a test: a fresh ``/metrics`` on every read (the tests read counters right
    after their requests) unless the test asks otherwise."""

    DEFAULTS: ClassVar[dict[str, str]] = {**ServeProcess.DEFAULTS, "TRAJPRED_METRICS_CACHE_S": "0"}


def serve(env: dict[str, str], log_path: Path) -> contextlib.AbstractContextManager[Server]:
    """Start ``ipnet serve`` (a test :class:`Server`) and stop it (SIGTERM) at the end."""
    return cast("contextlib.AbstractContextManager[Server]", processes.serve(env, log_path, Server))
