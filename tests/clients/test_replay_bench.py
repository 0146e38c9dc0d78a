"""`ipnet replay` and `ipnet bench` against a real `ipnet serve` process, and the async client."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clients.bench import BenchConfig, run_bench_async
from clients.client import AsyncTrajpredClient, RetryPolicy, TrajpredClient
from clients.replay import build_frames
from models.data import load_tracks
from models.windows import Perturbation
from service.schemas import ABReport
from tests.support import REPO, Server, ipnet_command

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: seconds of the log kept in the small file: 2 s of history + 3 s horizon + margin, so predictions mature
SLICE_S = 7.0


@pytest.fixture(scope="module")
def server(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    """A real `ipnet serve`, waited for with the client's own retries: (server, connection retries seen)."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    srv = Server({"TRAJPRED_WEIGHTS_DIR": str(weights), "TRAJPRED_SNAPSHOT_PATH": ""}, log)
    retries: list[str] = []
    try:
        # the process is still importing torch: the first attempts are refused connections
        policy = RetryPolicy(retries=600, backoff_s=0.05, max_backoff_s=0.1)
        with TrajpredClient(srv.url, retry=policy, on_retry=lambda a, why, w: retries.append(why)) as c:
            assert c.readyz().status == "ready", srv.log()
        yield srv, len(retries)
    finally:
        srv.stop()


def test_client_waits_for_a_server_that_is_not_listening_yet(server: tuple[Server, int]):
    srv, connection_retries = server
    assert connection_retries >= 1
    assert srv.proc.poll() is None


@pytest.fixture(scope="module")
def small_csv(av2_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An interchange CSV written from the first seconds of the real AV2 log (30 longest tracks)."""
    tracks = load_tracks(av2_log)
    t0 = min(float(tr.t[0]) for tr in tracks)
    rows = []
    kept = sorted(tracks, key=lambda tr: -int((tr.t < t0 + SLICE_S).sum()))[:30]
    for tr in kept:
        m = tr.t < t0 + SLICE_S
        rows += [
            (tr.scene_id, tr.agent_id, tr.agent_type, t, x, y)
            for t, (x, y) in zip(tr.t[m].tolist(), tr.xy[m].tolist(), strict=True)
        ]
    path = tmp_path_factory.mktemp("data") / "av2_slice.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["scene_id", "agent_id", "agent_type", "t_s", "x_m", "y_m"])
        w.writerows(rows)
    return path


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ipnet_command(), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_replay_prints_the_servers_report_and_writes_a_plot(
    server: tuple[Server, int], small_csv: Path, tmp_path: Path
):
    srv, _ = server
    png = tmp_path / "replay.png"
    n_obs = sum(len(tr) for tr in load_tracks(small_csv))
    out = _run("replay", str(small_csv), "--server", srv.url, "--plot", str(png), "--json", "--no-progress")
    assert out.returncode == 0, out.stderr + srv.log()
    with TrajpredClient(srv.url) as c:
        report = c.ab_report()
    printed = ABReport.model_validate(
        json.loads(out.stdout[out.stdout.index("{") : out.stdout.rindex("}") + 1])
    )
    assert printed == report
    assert report.models["ipnet"].n > 0 and report.ade_reduction is not None
    table = out.stdout[: out.stdout.index("{")]
    # the table shows the same numbers, rounded
    for role in ("ipnet", "baseline"):
        row = next(line for line in table.splitlines() if line.startswith(role + " "))
        cells = row.split()
        m = report.models[role]
        assert cells[2:4] == [f"{m.ade_m:.3f}", f"{m.fde_m:.3f}"]
        assert cells[4:7] == [f"{getattr(report.horizons_s[h], role):.3f}" for h in ("1", "2", "3")]
        assert cells[-1] == str(m.n)
    assert f"{report.ade_reduction:+.1%}" in table
    assert re.search(rf"sent: {n_obs} observations in \d+ requests", table), table
    assert "rejected: 0 requests" in table
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_replay_rejects_are_counted_not_fatal(server: tuple[Server, int], small_csv: Path):
    srv, _ = server
    # the same file again: every agent's timestamps are now stale on this server
    out = _run("replay", str(small_csv), "--server", srv.url, "--no-progress", "--speed", "max")
    assert out.returncode == 0, out.stderr
    assert re.search(r"rejected: (\d+) requests", out.stdout) and "stale_timestamp" in out.stdout
    assert "rejected: 0 requests" not in out.stdout


def test_perturbed_frames_are_seeded_and_keep_per_agent_order(small_csv: Path):
    tracks = load_tracks(small_csv)
    pert = Perturbation(resample_hz=5.0, drop_rate=0.2, jitter_s=0.02, noise_m=0.1, seed=3)
    a, b = build_frames(tracks, pert), build_frames(tracks, pert)
    assert [f.observations for f in a] == [f.observations for f in b]
    plain = sum(len(f.observations) for f in build_frames(tracks))
    sent = sum(len(f.observations) for f in a)
    assert sent < 0.5 * plain  # 10 Hz -> 5 Hz, then 20 % dropped
    last: dict[str, float] = {}
    for f in a:
        for o in f.observations:
            assert o["timestamp"] > last.get(o["agent_id"], -np.inf)
            last[o["agent_id"]] = o["timestamp"]
    assert [f.t for f in a] == sorted(f.t for f in a)


def test_replay_cli_with_perturbations_in_real_time(server: tuple[Server, int], small_csv: Path):
    srv, _ = server
    tracks = load_tracks(small_csv)
    short = small_csv.with_name("short.csv")
    lines = small_csv.read_text().splitlines()
    t0 = min(float(tr.t[0]) for tr in tracks)
    # the first 1.5 s at 4x speed: about 0.4 s of pacing
    keep = [lines[0]] + [ln for ln in lines[1:] if float(ln.split(",")[3]) < t0 + 1.5]
    short.write_text("\n".join(keep) + "\n")
    start = time.monotonic()
    out = _run(
        "replay", str(short), "--server", srv.url, "--no-progress", "--speed", "4",
        "--resample-hz", "5", "--drop-rate", "0.1", "--jitter-s", "0.01", "--seed", "1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - start >= 1.4 / 4
    # the re-used ids are stale from the tests above: rejected, and the replay says so
    assert "rejected:" in out.stdout


def test_async_client_on_a_real_server(server: tuple[Server, int]):
    srv, _ = server

    async def main() -> None:
        async with AsyncTrajpredClient(srv.url) as c:
            assert (await c.healthz()).status == "ok"
            assert (await c.readyz()).status == "ready"
            obs = [{"agent_id": f"async-{i}", "timestamp": 100.0, "x": float(i), "y": 0.0} for i in range(3)]
            p, b = await asyncio.gather(c.predict(obs[:2]), c.baseline_predict(obs[2:]))
            assert [x.agent_id for x in p.predictions] == ["async-0", "async-1"]
            assert b.predictions[0].agent_id == "async-2"
            ab = await c.ab_predict([{**o, "timestamp": 100.1} for o in obs])
            assert len(ab.predictions.ipnet) == 3
            assert (await c.agent("async-0")).models["ipnet"].steps == 2
            assert (await c.delete_agent("async-0")).deleted
            assert (await c.ab_report()).models["ipnet"].n >= 0
            assert "trajpred_tracked_agents" in await c.metrics()
            assert await c.ping(b"x" * 100) == 100

    asyncio.run(main())


def test_bench_cli_open_loop_reports(server: tuple[Server, int]):
    srv, _ = server
    out = _run(
        "bench", "--server", srv.url, "--route", "ab", "--agents", "20",
        "--rate-hz", "10", "--duration", "2", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["mode"] == "open loop 10 Hz, http, json" and r["requests"] == 20 and r["errors"] == 0
    assert r["ok"] == 20 and 5 < r["requests_per_s"] <= 11
    assert (
        set(r["latency_ms"]) >= {"p50", "p95", "p99"} and 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
    )
    assert r["server_rss_bytes"] > 10e6
    assert r["tracked_agents"]["ipnet"] >= 20 and r["tracked_agents"]["gru"] >= 20


def test_bench_closed_loop_counts_errors(server: tuple[Server, int]):
    srv, _ = server
    ok = asyncio.run(
        run_bench_async(
            BenchConfig(
                server=srv.url, route="predict", agents=5, rate_hz=None, concurrency=2, duration_s=1.0
            )
        )
    )
    assert ok.errors == 0 and ok.ok == ok.requests > 2
    assert ok.agent_updates_per_s == pytest.approx(ok.requests_per_s * 5)
    assert "agent-updates/s" in ok.format()
    # the client's own CPU per request: it encodes each frame and reads each answer, so some, and less than
    # the wall time of a request (one sender at a time per worker, the server's time in between)
    cpu_ms = ok.extra["client_cpu_ms_per_request"]
    assert 0 < cpu_ms < ok.duration_s * 1e3 * 2 / ok.requests and "client CPU" in ok.format()
    # frames over the server's observation limit are rejected: counted by code, not raised (no retries)
    bad = asyncio.run(
        run_bench_async(BenchConfig(server=srv.url, route="ab", agents=10_001, rate_hz=10, duration_s=0.3))
    )
    assert bad.requests == 3 and bad.ok == 0 and bad.errors == 3
    assert bad.error_codes == {"too_many_observations": 3} and bad.latency_ms == {}


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_bench_over_streams_in_both_encodings(server: tuple[Server, int], encoding: str):
    srv, _ = server
    closed = asyncio.run(
        run_bench_async(
            BenchConfig(
                server=srv.url, route="ab", agents=5, rate_hz=None, concurrency=2, duration_s=1.0,
                stream=True, encoding=encoding,
            )
        )
    )  # fmt: skip
    assert closed.mode == f"closed loop, stream, {encoding}"
    assert closed.errors == 0 and closed.ok == closed.requests > 2
    # the server timed every message on its own histogram: the route of the stream
    assert closed.extra["server"]["requests"] == closed.requests
    opened = asyncio.run(
        run_bench_async(
            BenchConfig(
                server=srv.url, route="predict", agents=10, rate_hz=20, duration_s=1.0, stream=True,
                encoding=encoding, layout="columns",
            )
        )
    )  # fmt: skip
    assert opened.requests == 20 and opened.ok == 20 and opened.latency_ms["p50"] > 0
    # a rejected frame is an error reply on the open stream: counted by its code, the stream goes on
    bad = asyncio.run(
        run_bench_async(
            BenchConfig(
                server=srv.url, route="predict", agents=10_001, rate_hz=10, duration_s=0.3, stream=True,
                encoding=encoding,
            )
        )
    )  # fmt: skip
    assert bad.requests == 3 and bad.error_codes == {"too_many_observations": 3}


def test_replay_over_a_stream_gives_the_report(server: tuple[Server, int], small_csv: Path, tmp_path: Path):
    srv, _ = server
    # the same tracks under new ids: new agents on this server
    renamed = tmp_path / "renamed.csv"
    rows = list(csv.reader(small_csv.open()))
    with renamed.open("w", newline="") as fh:
        csv.writer(fh).writerows([rows[0], *([r[0], "streamed-" + r[1], *r[2:]] for r in rows[1:])])
    with TrajpredClient(srv.url) as c:
        before = c.ab_report().models["ipnet"].n
    out = _run(
        "replay", str(renamed), "--server", srv.url, "--stream", "--encoding", "msgpack", "--no-progress",
        "--speed", "max",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr + srv.log()
    assert "rejected: 0 requests" in out.stdout
    n_obs = len(rows) - 1
    assert re.search(rf"sent: {n_obs} observations in \d+ requests", out.stdout), out.stdout
    with TrajpredClient(srv.url) as c:
        assert c.ab_report().models["ipnet"].n > before  # its predictions were scored


def test_replay_with_modes_scores_min_of_k_and_draws_the_futures(
    server: tuple[Server, int], small_csv: Path, tmp_path: Path
):
    srv, _ = server
    renamed = tmp_path / "renamed.csv"  # new agents on this server
    rows = list(csv.reader(small_csv.open()))
    with renamed.open("w", newline="") as fh:
        csv.writer(fh).writerows([rows[0], *([r[0], "modes-" + r[1], *r[2:]] for r in rows[1:])])
    png = tmp_path / "modes.png"
    out = _run(
        "replay", str(renamed), "--server", srv.url, "--modes", "3", "--plot", str(png), "--json",
        "--no-progress",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr + srv.log()
    report = ABReport.model_validate(
        json.loads(out.stdout[out.stdout.index("{") : out.stdout.rindex("}") + 1])
    )
    for role in ("ipnet", "baseline"):
        m = report.models[role]
        assert m.min_ade_k_m is not None and m.ade_m is not None and m.min_ade_k_m <= m.ade_m
        assert m.coverage_95 is not None and 0.5 < m.coverage_95 <= 1.0
    header = next(line for line in out.stdout.splitlines() if line.startswith("model "))
    assert header.split()[-6:] == ["K", "minADE_K", "minFDE_K", "miss", "cov95", "n"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    bad = _run("replay", str(renamed), "--server", srv.url, "--modes", "9")
    assert bad.returncode == 2 and "--modes" in bad.stderr


def test_bench_asks_for_modes(server: tuple[Server, int]):
    srv, _ = server
    out = _run(
        "bench", "--server", srv.url, "--route", "predict", "--agents", "10", "--rate-hz", "10",
        "--duration", "1", "--modes", "6", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["errors"] == 0 and r["ok"] == 10 and r["extra"]["modes"] == 6
