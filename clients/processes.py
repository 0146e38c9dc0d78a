"""Child processes started and stopped the same way everywhere (benchmarks, soak script, tests): a real
``ipnet serve``, a throwaway redis-server, and their CPU time."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx

REPO = Path(__file__).resolve().parent.parent

#: redis-server options for a throwaway instance: nothing written to disk
REDIS_NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_pair() -> int:
    """A TCP port p with p and p + 1 both free on loopback right now (``TRAJPRED_WORKER_PORT_BASE``)."""
    for _ in range(50):
        p = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
            return p
    raise RuntimeError("no two consecutive free ports on loopback")


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 30.0, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` (SIGTERM), wait ``grace_s`` for a clean exit, else SIGKILL; the exit code.

    A process that ignores SIGTERM must not outlive a benchmark or a test run.
    """
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def start_redis(
    port: int, workdir: Path, *options: str, password: str | None = None, timeout_s: float = 20.0
) -> subprocess.Popen[bytes]:
    """A real redis-server on ``127.0.0.1:port`` (``--dir workdir`` plus ``options``), once it answers PING.

    Persistence is the caller's choice: pass :data:`REDIS_NO_PERSISTENCE` or append-only options.
    """
    import redis  # the service's dependency; imported here so this module stays cheap to import

    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, password=password)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if client.ping():
                    return proc
            except redis.RedisError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server not ready after {timeout_s} s")
            time.sleep(0.05)
    except BaseException:
        stop_process(proc, 10)
        raise
    finally:
        client.close()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) of process ``pid`` and all its live descendants so far (Linux
    /proc): a serving system's workers, actors and sidecars included.

    Per answered request, it is the server's own work: a closed loop's requests/s also counts the sender's
    share of each cycle and the time the server waits for it.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            for task in Path(f"/proc/{p}/task").iterdir():  # children of every thread
                with contextlib.suppress(FileNotFoundError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # a process that just ended
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14 and 15 of stat)
    return total


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port (no persistence); yields its URL."""
    port = free_port()
    proc = start_redis(port, workdir, *REDIS_NO_PERSISTENCE)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc, 10)


def wait_until(
    check: Callable[[], Any], what: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``check`` until it is true (its exceptions count as not yet); TimeoutError after ``timeout_s``,
    RuntimeError at once if ``proc`` exits first."""
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


class ServeProcess:
    """A real ``ipnet serve`` on a free loopback port, this checkout on its path, its output in ``log_path``.

    ``env`` is added to this process's environment over quiet defaults (log level warning, one torch thread,
    no snapshot file).
    """

    DEFAULTS: ClassVar[dict[str, str]] = {
        "TRAJPRED_LOG_LEVEL": "warning",
        "OMP_NUM_THREADS": "1",
        "TRAJPRED_SNAPSHOT_PATH": "",
    }

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, **self.DEFAULTS, **env}
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

    def wait_ready(self, timeout_s: float = 120) -> ServeProcess:
        """Wait for ``/readyz`` to answer 200 (RuntimeError if the process exits first)."""
        wait_until(
            lambda: self.client.get("/readyz").status_code == 200,
            f"ipnet serve ({self.log()})",
            timeout_s,
            self.proc,
        )
        return self

    def log(self) -> str:
        """The end of its output."""
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        """Send ``sig`` and wait: the exit code."""
        self.client.close()
        try:
            return stop_process(self.proc, timeout_s, sig)
        finally:
            self._log.close()


@contextlib.contextmanager
def serve(
    env: dict[str, str], log_path: Path, kind: type[ServeProcess] = ServeProcess
) -> Iterator[ServeProcess]:
    """Start ``ipnet serve`` (a ``kind``), wait until it is ready, and stop it (SIGTERM) at the end."""
    server = kind(env, log_path)
    try:
        yield server.wait_ready()
    finally:
        server.stop()
