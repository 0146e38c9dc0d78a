"""Where a predict request's time goes: cProfile of the app in one thread, as a Markdown table.

    PYTHONPATH=. python scripts/profile_hot_path.py [--route /v1/predict] [--agents 100] [--requests 40]

The app runs in-process (its lifespan, ASGI transport, no sockets); the worker-thread hop of the batched
forward is made inline so the profiler sees it too. Shares are cumulative times of the named functions over
the profiled total and may overlap slightly (e.g. state encoding inside the engine's commit). The body
parse and validation are also timed on their own, unprofiled. ``clients.benchmarks`` includes this output.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from typing import Any

import anyio.to_thread
import httpx

#: category -> (path suffix, function name) pairs whose cumulative time it is
CATEGORIES: dict[str, list[tuple[str, str]]] = {
    "model step (kinematics + torch forward), per model": [("service/engine.py", "_compute")],
    "online scoring (match, interpolate, histograms)": [
        ("service/scoring.py", "observe_many"),
        ("service/scoring.py", "add"),
    ],
    "state records (encode/decode)": [("service/state.py", "from_bytes"), ("service/state.py", "to_bytes")],
    "state store load/commit (memory)": [("service/store.py", "load"), ("service/store.py", "commit")],
    "metrics (prometheus)": [("service/metrics.py", "observe_many"), ("service/metrics.py", "tracked")],
    "answer as dicts (service/api.py _prediction)": [("service/api.py", "_prediction")],
    "JSON encoding of the answer (json.dumps)": [("starlette/responses.py", "render")],
    "request body JSON parse (json.loads)": [("json/__init__.py", "loads")],
    "request validation -> PredictRequest (FastAPI + pydantic)": [
        ("fastapi/dependencies/utils.py", "request_body_to_args")
    ],
}


async def _inline(func: Any, *args: Any, **_: Any) -> Any:
    return func(*args)


def _cum(stats: pstats.Stats, wanted: list[tuple[str, str]]) -> float:
    total = 0.0
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (path, _line, name), (_cc, _nc, _tt, ct, _callers) in raw.items():
        if any(path.endswith(suffix) and name == fn for suffix, fn in wanted):
            total += ct
    return total


async def profile(route: str, agents: int, requests: int) -> str:
    anyio.to_thread.run_sync = _inline  # type: ignore[assignment]  # one thread: the profiler sees all

    from clients.bench import Fleet
    from service.app import create_app
    from service.schemas import PredictRequest
    from service.settings import Settings

    app = create_app(Settings(snapshot_path=None))
    fleet = Fleet(agents, "prof", 0.1)
    headers = {"content-type": "application/json"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as c,
    ):
        # past the scoring warm-up (20 steps), so the profile includes matured predictions being scored
        for k in range(25):
            r = await c.post(route, content=fleet.frame(k), headers=headers)
            assert r.status_code == 200, r.text
        t0 = time.perf_counter()
        for k in range(25, 25 + requests):
            await c.post(route, content=fleet.frame(k), headers=headers)
        plain_ms = (time.perf_counter() - t0) / requests * 1e3
        pr = cProfile.Profile()
        t0 = time.perf_counter()
        pr.enable()
        for k in range(25 + requests, 25 + 2 * requests):
            await c.post(route, content=fleet.frame(k), headers=headers)
        pr.disable()
        profiled_s = time.perf_counter() - t0
    body = fleet.frame(0)
    t0 = time.perf_counter()
    for _ in range(requests):
        PredictRequest.model_validate_json(body)
    validate_ms = (time.perf_counter() - t0) / requests * 1e3
    stats = pstats.Stats(pr)
    total: float = stats.total_tt  # type: ignore[attr-defined]
    lines = [
        f"`{route}`, {agents}-agent frames, in-process ASGI: {plain_ms:.1f} ms per request unprofiled, "
        f"{profiled_s / requests * 1e3:.1f} ms profiled. `PredictRequest.model_validate_json` of the body alone: "
        f"{validate_ms:.2f} ms.",
        "",
        "| part of the request | ms per request (profiled) | share |",
        "|---|---|---|",
    ]
    for name, wanted in CATEGORIES.items():
        ms = _cum(stats, wanted) / requests * 1e3
        lines.append(f"| {name} | {ms:.2f} | {ms / (total / requests * 1e3):.0%} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--route", default="/v1/predict")
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--requests", type=int, default=40)
    args = ap.parse_args()
    print(asyncio.run(profile(args.route, args.agents, args.requests)))


if __name__ == "__main__":
    main()
