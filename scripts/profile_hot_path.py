"""Where a predict request's time goes: wall-clock spans of the app in-process, as a Markdown table.

    PYTHONPATH=. python scripts/profile_hot_path.py [--route /v1/predict] [--agents 100] [--requests 200]
        [--json figures.json]

The app runs in-process (its lifespan, ASGI transport, no sockets); the worker-thread hop of the batched
forward is made inline so every span is on one clock. Each named function is wrapped with a
``time.perf_counter`` span (no profiler: cProfile's per-call overhead inflated the many small Python calls
of scoring several-fold and misattributed the request). Spans are inclusive; indented rows are part of the
row above. The metrics and the online scoring of a request run just after its answer (``service.accounting``, a
loop callback; within the client call here). "framework" is the request total less the engine, the answer
and that accounting: FastAPI routing, the middlewares, the body parse and validation, and the in-process
transport. ``clients.benchmarks`` includes this output; the socket and HTTP parsing cost is what the
benchmark's trivial route measures.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx

#: (row label, indent, module, owner class or None, function name)
SPANS: list[tuple[str, int, str, str | None, str]] = [
    ("engine: validate the request", 1, "service.validation", "FrameValidator", "__call__"),
    ("engine: load states from the store", 1, "service.store", "MemoryStore", "load"),
    ("engine: decode state records", 1, "service.engine", "Engine", "_decode"),
    ("engine: batched model step (all models)", 1, "service.engine", "Engine", "_compute_all"),
    ("kinematics + torch forward (Predictor.step)", 2, "models.predictor", "Predictor", "step"),
    ("network forward (InferenceStep)", 3, "models.inference", "InferenceStep", "__call__"),
    ("encode state records", 2, "service.engine", None, "encode_batch"),
    ("engine: commit states to the store", 1, "service.store", "MemoryStore", "commit"),
    ("engine: answers (columnar Predictions)", 1, "service.engine", "Engine", "_answers"),
    (
        "answer: the fields and what the writer takes (answers._predictions)",
        1,
        "service.answers",
        None,
        "_predictions",
    ),
    ("answer written: the compiled writer, or orjson (answers.encode)", 1, "service.api", None, "encode"),
    (
        "accounting just after the answer (AccountingSchedule.flush)",
        1,
        "service.accounting",
        "AccountingSchedule",
        "flush",
    ),
    ("metrics and scoring of one request (Accountant)", 2, "service.accounting", "Accountant", "__call__"),
    ("online scoring: score earlier predictions", 3, "service.scoring", "OnlineScorer", "observe_many"),
    ("online scoring: keep the new predictions", 3, "service.scoring", "OnlineScorer", "add_many"),
]
TOTAL = "engine.predict"


async def _inline(func: Any, *args: Any, **_: Any) -> Any:
    return func(*args)


def _wrap(fn: Callable[..., Any], key: str, acc: dict[str, float]) -> Callable[..., Any]:
    if asyncio.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapped(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*a, **k)
            finally:
                acc[key] += time.perf_counter() - t0

        return awrapped

    @functools.wraps(fn)
    def wrapped(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc[key] += time.perf_counter() - t0

    return wrapped


def _instrument(acc: dict[str, float]) -> None:
    import importlib

    from service.engine import Engine

    targets = [(label, mod, owner, name) for label, _, mod, owner, name in SPANS]
    targets.append((TOTAL, "service.engine", "Engine", "predict"))
    for label, mod, owner, name in targets:
        module = importlib.import_module(mod)
        holder: Any = getattr(module, owner) if owner else module
        setattr(holder, name, _wrap(getattr(holder, name), label, acc))
    assert Engine.predict.__wrapped__  # type: ignore[attr-defined]


def _sent(app: Any) -> Any:
    """``app`` with each answer's body copied as a server's socket copies it: httpx's in-process transport
    keeps the body's views alive in reference cycles until a garbage collection, so the service could not
    take its answer buffers again (``service.answers``) and would write each answer into fresh memory, which
    uvicorn never makes it do."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        async def copied(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": bytes(message.get("body", b""))}
            await send(message)

        await app(scope, receive, copied)

    return asgi


async def profile(route: str, agents: int, requests: int) -> tuple[str, dict[str, float]]:
    """The Markdown table, and its figures in ms per request (``total``, ``validate_body``, ``answer``,
    ``step`` and each span by its label) for a caller that computes with them (``clients.benchmarks``)."""
    anyio.to_thread.run_sync = _inline  # type: ignore[assignment]  # one thread, one clock
    acc: dict[str, float] = defaultdict(float)
    _instrument(acc)

    from clients.bench import Fleet
    from service.app import create_app
    from service.schemas import PredictRequest
    from service.settings import Settings

    app = create_app(Settings(snapshot_path=None, startup_in_background=False))
    fleet = Fleet(agents, "prof", 0.1)
    headers = {"content-type": "application/json"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=_sent(app)), base_url="http://app") as c,
    ):
        # past the scoring warm-up (20 steps and the 3 s horizon), so matured predictions are being scored
        for k in range(40):
            r = await c.post(route, content=fleet.frame(k), headers=headers)
            assert r.status_code == 200, r.text
        acc.clear()
        request_s = 0.0
        for k in range(40, 40 + requests):
            body = fleet.frame(k)  # built outside the clock: it is the client's work
            t0 = time.perf_counter()
            r = await c.post(route, content=body, headers=headers)
            request_s += time.perf_counter() - t0
            assert r.status_code == 200, r.text
    body = fleet.frame(0)
    t0 = time.perf_counter()
    for _ in range(requests):
        PredictRequest.model_validate_json(body)
    validate_ms = (time.perf_counter() - t0) / requests * 1e3

    def ms(key: str) -> float:
        return acc[key] / requests * 1e3

    total = request_s / requests * 1e3
    answer = ms("answer: the fields and what the writer takes (answers._predictions)") + ms(
        "answer written: the compiled writer, or orjson (answers.encode)"
    )
    lines = [
        f"`{route}`, {agents}-agent frames, in-process ASGI, {requests} requests: {total:.2f} ms per request "
        f"(client call, wall clock). `PredictRequest.model_validate_json` of the body alone: {validate_ms:.2f} ms.",
        "",
        "| part of the request | ms per request | share |",
        "|---|---|---|",
        f"| engine.predict (all of the engine) | {ms(TOTAL):.2f} | {ms(TOTAL) / total:.0%} |",
    ]
    for label, indent, *_ in SPANS:
        lines.append(f"| {'&nbsp;' * 4 * (indent - 1)}{label} | {ms(label):.2f} | {ms(label) / total:.0%} |")
    flush = ms("accounting just after the answer (AccountingSchedule.flush)")
    rest = total - ms(TOTAL) - answer - flush
    lines.append(
        f"| framework: routing, middlewares, body parse + validation, transport | {rest:.2f} | {rest / total:.0%} |"
    )
    figures = {
        "total": total,
        "validate_body": validate_ms,
        "answer": answer,
        "step": ms("kinematics + torch forward (Predictor.step)"),
        **{label: ms(label) for label, *_ in SPANS},
    }
    return "\n".join(lines), figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--route", default="/v1/predict")
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures (ms per request) as JSON")
    args = ap.parse_args()
    text, figures = asyncio.run(profile(args.route, args.agents, args.requests))
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
