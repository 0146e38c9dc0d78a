"""Stopping a child process the same way everywhere (benchmarks, soak script, tests)."""

from __future__ import annotations

import signal
import subprocess


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
