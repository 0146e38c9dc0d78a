"""`ipnet serve --workers N`: real worker processes on one port, state in a real Redis, one worker killed and
started again, SIGTERM stopping them all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients.processes import free_port_pair
from tests.e2e.test_serve import _assert_same, _post
from tests.support import REPO, Replay, Server, _wait, free_port, ipnet_command, serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _pings(url: str) -> float:
    """How many /v1/ping requests the worker behind ``url`` (its own port) has answered."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "trajpred_request_duration_seconds":
            return sum(
                s.value
                for s in family.samples
                if s.name.endswith("_count") and s.labels.get("route") == "/v1/ping"
            )
    return 0.0


def _worker_pids(log: Path) -> dict[int, int]:
    """Worker index -> pid of its newest start, from the supervisor's log lines."""
    pids: dict[int, int] = {}
    for m in re.finditer(r"worker (\d+) started \(pid (\d+)\)", log.read_text(errors="replace")):
        pids[int(m.group(1))] = int(m.group(2))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _serve_to_the_end(env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``ipnet serve --workers 2`` run until it exits by itself (its output captured)."""
    return subprocess.run(
        [*ipnet_command(), "serve", "--workers", "2", "--port", str(free_port())],
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_workers_need_the_redis_store(tmp_path: Path):
    r = _serve_to_the_end({"TRAJPRED_STORE": "memory"}, 60)
    assert r.returncode == 2
    assert r.stderr.startswith("error:") and "Redis store" in r.stderr


def test_workers_share_the_port_and_the_state_and_survive_a_dead_worker(
    weights: Path, replay: Replay, redis_url: str, tmp_path: Path
):
    base = free_port_pair()
    own = [f"http://127.0.0.1:{base + i}" for i in range(2)]
    common = {
        "TRAJPRED_WEIGHTS_DIR": str(weights),
        "TRAJPRED_SNAPSHOT_PATH": "",
        "TRAJPRED_LOG_LEVEL": "info",
    }
    env = {
        **common,
        "TRAJPRED_STORE": redis_url,
        "TRAJPRED_REDIS_KEY_PREFIX": "workers",
        "TRAJPRED_WORKERS": "2",
        "TRAJPRED_WORKER_PORT_BASE": str(base),
    }
    log = tmp_path / "workers.log"
    with serve(common, tmp_path / "one.log") as one:
        server = Server(env, log)
        clients: dict[int, httpx.Client] = {}
        try:
            server.wait_ready()
            for url in own:
                _wait(lambda u=url: httpx.get(f"{u}/readyz").status_code == 200, f"worker {url}", 120)
            # a connection to the shared port stays with the worker that accepted it: find one per worker
            for _ in range(40):
                before = [_pings(u) for u in own]
                c = httpx.Client(base_url=server.url, timeout=30)
                assert c.post("/v1/ping", content=b"{}").status_code == 200
                after: list[float] = []

                def counted(after: list[float] = after, before: list[float] = before) -> bool:
                    # the duration is recorded as the answer ends: the scrape may come first
                    after[:] = [_pings(u) for u in own]
                    return sum(after) > sum(before)

                _wait(counted, "the ping counted", 10)
                (worker,) = [i for i in range(2) if after[i] > before[i]]
                if worker in clients:
                    c.close()
                else:
                    clients[worker] = c
                if len(clients) == 2:
                    break
            assert len(clients) == 2, "the kernel handed every connection to one worker"

            def check(i: int, worker: int) -> None:
                want = _post(one, "/v1/ab/predict", replay.body(i))
                r = clients[worker].post("/v1/ab/predict", json=replay.body(i))
                assert r.status_code == 200, r.text
                got: dict[str, Any] = r.json()
                _assert_same(want, got, "ipnet")
                _assert_same(want, got, "baseline")

            # frame by frame, alternately through the two workers: one agent's state, whichever serves it
            for i in range(30):
                check(i, i % 2)

            # a worker that dies is started again; its peer serves meanwhile, and nothing of the state is lost
            pids = _worker_pids(log)
            os.kill(pids[1], signal.SIGKILL)
            _wait(lambda: _worker_pids(log)[1] != pids[1], "worker 1 started again", 30, server.proc)
            _wait(lambda: httpx.get(f"{own[1]}/readyz").status_code == 200, "worker 1 ready again", 120)
            clients.pop(1).close()
            for i in range(30, 40):
                check(i, 0)
            assert "exited with -9: starting it again" in log.read_text()

            # SIGTERM to the supervisor stops every worker gracefully
            workers = list(_worker_pids(log).values())
            assert server.stop(signal.SIGTERM) == 0
            assert not any(_alive(p) for p in workers)
        finally:
            for c in clients.values():
                c.close()
            server.stop()


def test_a_worker_that_cannot_start_stops_the_service(weights: Path, redis_url: str, tmp_path: Path):
    base = free_port_pair()
    with socket.socket() as taken:  # worker 1's own port is held by another process
        taken.bind(("127.0.0.1", base + 1))
        taken.listen()
        env = {
            "TRAJPRED_WEIGHTS_DIR": str(weights),
            "TRAJPRED_SNAPSHOT_PATH": "",
            "TRAJPRED_STORE": redis_url,
            "TRAJPRED_REDIS_KEY_PREFIX": "workers-broken",
            "TRAJPRED_WORKER_PORT_BASE": str(base),
            "TRAJPRED_LOG_LEVEL": "info",
        }
        r = _serve_to_the_end(env, 180)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "worker 1 exited 3 times" in r.stderr
    pids = [int(p) for p in re.findall(r"worker \d+ started \(pid (\d+)\)", r.stderr)]
    assert len(pids) == 4 and not any(_alive(p) for p in pids)  # worker 0 once, worker 1 three times
