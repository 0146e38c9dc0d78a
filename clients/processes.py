"""Child processes started and stopped the same way everywhere (benchmarks, soak script, tests)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

#: redis-server options for a throwaway instance: nothing written to disk
REDIS_NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
