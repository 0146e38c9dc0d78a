"""Client subcommands of the ``ipnet`` CLI: ``ipnet replay`` and ``ipnet bench`` (registered by ``service.commands``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from clients.settings import ClientSettings

FORMATS = ("auto", "csv", "av2", "ethucy", "lyft")


def _speed(value: str) -> float | None:
    if value == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'max', got {value!r}") from None
    if not speed > 0:
        raise argparse.ArgumentTypeError(f"speed must be > 0, got {value!r}")
    return speed


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not rate > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value!r}")
    return rate


def _probability(value: str) -> float:
    p = float(value)
    if not 0.0 <= p < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value!r}")
    return p


def _non_negative(value: str) -> float:
    v = float(value)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value!r}")
    return v


def _modes(value: str) -> int:
    k = int(value)
    if not 1 <= k <= 6:
        raise argparse.ArgumentTypeError(f"must be within 1..6, got {k}")
    return k


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", required=True, help="base URL of the service, e.g. http://127.0.0.1:8000")
    p.add_argument(
        "--api-key",
        default=ClientSettings().api_key,
        help="X-API-Key (default $TRAJPRED_CLIENT_API_KEY)",
    )
    p.add_argument("--timeout", type=_rate, default=30.0, help="seconds per attempt (default 30)")
    p.add_argument(
        "--wait", type=_non_negative, default=30.0, help="seconds to wait for /readyz first (default 30)"
    )


def add_commands(sub: Any) -> None:
    """Add ``replay`` and ``bench`` to the CLI's subparsers."""
    p = sub.add_parser(
        "replay",
        help="stream a dataset to the service through /v1/ab/predict; A/B table and plot",
        description="Send a real dataset frame by frame to /v1/ab/predict (both models, shadow A/B), then "
        "print the server's /v1/ab/report as a table; --plot writes a PNG.",
    )
    p.add_argument("data", type=Path, help="data file or folder (any format the loaders read)")
    _server_args(p)
    p.add_argument("--format", choices=FORMATS, default="auto", help="data format (default: detect)")
    p.add_argument(
        "--speed", type=_speed, default=None, help="1.0 = real time, 2 = twice as fast, 'max' (default)"
    )
    p.add_argument("--plot", type=Path, default=None, help="write a PNG here (tracks, predictions, error)")
    p.add_argument("--resample-hz", type=_rate, default=None, help="send at this rate (nearest samples)")
    p.add_argument("--drop-rate", type=_probability, default=0.0, help="drop this share of observations")
    p.add_argument(
        "--jitter-s", type=_non_negative, default=0.0, help="Gaussian time jitter (s) on timestamps"
    )
    p.add_argument("--noise-m", type=_non_negative, default=0.0, help="Gaussian position noise (m)")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbations (default 0)")
    p.add_argument(
        "--stream",
        action="store_true",
        help="send the frames over one WebSocket stream (/v1/stream?route=ab) instead of HTTP requests",
    )
    p.add_argument(
        "--encoding",
        default="json",
        choices=["json", "msgpack"],
        help="--stream: message encoding (default json)",
    )
    p.add_argument(
        "--modes",
        type=_modes,
        default=None,
        help="ask for the K most probable futures (1-6): the report adds min-of-K, the plot draws them",
    )
    p.add_argument("--json", action="store_true", help="also print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_replay)

    b = sub.add_parser(
        "bench",
        help="load generator: agents x rate (open loop) or max rate (closed loop); latency, memory",
        description="Load the service with synthetic agents and report throughput, latency percentiles, "
        "errors and the server's memory per tracked agent (from /metrics). With --suite: run the whole "
        "benchmark suite (starts its own servers) and write BENCHMARKS.md.",
    )
    b.add_argument("--server", default=None, help="base URL of the service (not needed with --suite)")
    b.add_argument(
        "--api-key",
        default=ClientSettings().api_key,
        help="X-API-Key (default $TRAJPRED_CLIENT_API_KEY)",
    )
    b.add_argument("--route", default="predict", choices=["predict", "baseline", "ab", "ping"])
    b.add_argument("--agents", type=int, default=100, help="agents per frame (default 100)")
    b.add_argument(
        "--layout",
        default="points",
        choices=["points", "columns"],
        help="trajectory layout of the answers (predict routes; default points)",
    )
    b.add_argument(
        "--encoding",
        default="json",
        choices=["json", "msgpack"],
        help="body and answer encoding (default json; msgpack: Content-Type and Accept application/msgpack)",
    )
    b.add_argument(
        "--stream",
        action="store_true",
        help="send frames over WebSocket streams (/v1/stream): one per closed-loop sender, one in open loop",
    )
    b.add_argument("--rate-hz", type=_rate, default=10.0, help="frames per second, open loop (default 10)")
    b.add_argument("--closed-loop", action="store_true", help="maximum rate instead of --rate-hz")
    b.add_argument("--concurrency", type=int, default=1, help="closed loop: parallel senders (default 1)")
    b.add_argument("--duration", type=_rate, default=10.0, help="seconds (default 10)")
    b.add_argument("--timeout", type=_rate, default=10.0, help="seconds per request (default 10)")
    b.add_argument(
        "--wait",
        type=_non_negative,
        default=30.0,
        help="seconds to wait for the server to be ready (default 30)",
    )
    b.add_argument(
        "--modes", type=_modes, default=None, help="ask for the K most probable futures per agent (1-6)"
    )
    b.add_argument("--json", action="store_true", help="print the result as JSON")
    b.add_argument("--suite", action="store_true", help="run the benchmark suite (clients.benchmarks)")
    b.add_argument("--out", type=Path, default=None, help="--suite: write the Markdown report here")
    b.set_defaults(handler=cmd_bench)


def cmd_replay(args: argparse.Namespace) -> int:
    """``ipnet replay``: see :mod:`clients.replay`."""
    import httpx
    from websockets.exceptions import InvalidHandshake

    from clients.client import ApiError, StreamClosed, TrajpredClient
    from clients.replay import format_table, load, plot_replay, replay
    from models.data import DataFormatError
    from models.windows import Perturbation

    try:
        tracks = load(args.data, args.format)
    except (DataFormatError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not tracks:
        print(f"error: no tracks in {args.data}", file=sys.stderr)
        return 2
    pert = Perturbation(args.resample_hz, args.drop_rate, args.jitter_s, args.noise_m, args.seed)
    with TrajpredClient(args.server, api_key=args.api_key, timeout_s=args.timeout) as client:
        try:
            client.wait_ready(args.wait)
            result = replay(
                client,
                tracks,
                speed=args.speed,
                pert=pert,
                progress=not args.no_progress,
                stream=args.stream,
                encoding=args.encoding,
                modes=args.modes,
            )
        except ApiError as e:
            print(f"error: the server answered {e}", file=sys.stderr)
            return 1
        except (httpx.HTTPError, TimeoutError, OSError, StreamClosed, InvalidHandshake) as e:
            print(f"error: {args.server}: {e}", file=sys.stderr)
            return 1
    result.source = str(args.data)
    print(format_table(result))
    if args.json and result.report is not None:
        print(json.dumps(result.report.model_dump(), indent=2))
    if args.plot is not None:
        plot_replay(result, args.plot)
        print(f"plot: {args.plot}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``ipnet bench``: see :mod:`clients.bench` (and :mod:`clients.benchmarks` for ``--suite``)."""
    if args.suite:
        from clients.benchmarks import main as suite_main

        return suite_main(["--out", str(args.out)] if args.out else [])
    if not args.server:
        print("error: --server is required (or --suite)", file=sys.stderr)
        return 2
    if args.agents < 1 or args.concurrency < 1:
        print("error: --agents and --concurrency must be >= 1", file=sys.stderr)
        return 2
    from clients.bench import BenchConfig, run_bench

    cfg = BenchConfig(
        server=args.server,
        route=args.route,
        agents=args.agents,
        rate_hz=None if args.closed_loop else args.rate_hz,
        concurrency=args.concurrency,
        duration_s=args.duration,
        api_key=args.api_key,
        timeout_s=args.timeout,
        layout=args.layout,
        encoding=args.encoding,
        stream=args.stream,
        wait_s=args.wait,
        modes=args.modes,
    )
    result = run_bench(cfg)  # a bad setting (ValueError) or a server that never answers: one error line
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format())
    return 0 if result.ok > 0 else 1
