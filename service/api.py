"""HTTP routes: thin, they parse, delegate to the engine and shape the answer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import msgpack
import orjson
from fastapi import APIRouter, Path, Query, Request, Response, WebSocket
from fastapi.routing import APIRoute

from service.answers import MSGPACK, Encoding, encode, predict_payload
from service.deps import AnswerEncodingDep, ApiKeyDep, EngineDep, MetricsDep, MetricsKeyDep, RuntimeDep
from service.errors import REJECTION_CODES, NotReady, ServiceError
from service.frame_reader import ObservationsBody, read_frame
from service.frames import Observations
from service.schemas import (
    AGENT_ID_PATTERN,
    MAX_AGENT_ID_LENGTH,
    ABPredictResponse,
    ABReport,
    AgentDeleted,
    AgentSummary,
    AgentType,
    ErrorResponse,
    Health,
    IntervalRegime,
    Layout,
    PredictResponse,
    Readiness,
)
from service.stream import STREAM_ROUTE, serve_stream
from service.validation import MAX_MODES


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "malformed JSON",
        401: "missing or invalid X-API-Key",
        404: "unknown agent",
        408: "body not received within TRAJPRED_BODY_READ_TIMEOUT_S",
        409: "timestamp not after the agent's last one, or a write conflict that outlasted the retries",
        413: "body larger than TRAJPRED_MAX_BODY_BYTES, or an answer larger than TRAJPRED_MAX_ANSWER_POINTS",
        422: "invalid request: the error names the field, the observation index and the reason",
        500: "internal error",
        503: "not ready (starting, stopping), the state store is unavailable, or overloaded (queue full);"
        " Retry-After says when to retry",
    }
    return {
        s: {"model": ErrorResponse, "description": f"{text[s]} (`error.code`: {', '.join(_CODES[s])})"}
        for s in statuses
    }


_NOT_422 = {
    "malformed_json",
    "unauthorized",
    "not_found",
    "body_timeout",
    "stale_timestamp",
    "write_conflict",
    "payload_too_large",
    "answer_too_large",
    "route_not_found",
    "method_not_allowed",
    "http_error",
}
# every error code a status can carry (service/errors.py)
_CODES: dict[int, list[str]] = {
    400: ["malformed_json"],
    401: ["unauthorized"],
    404: ["not_found"],
    408: ["body_timeout"],
    409: ["stale_timestamp", "write_conflict"],
    413: ["payload_too_large", "answer_too_large"],
    422: [c for c in REJECTION_CODES if c not in _NOT_422],
    500: ["internal_error"],
    503: ["not_ready", "store_unavailable", "overloaded"],
}


PREDICT_ERRORS = _errors(400, 401, 408, 409, 413, 422, 500, 503)
AgentIdPath = Annotated[
    str,
    Path(min_length=1, max_length=MAX_AGENT_ID_LENGTH, pattern=AGENT_ID_PATTERN, description="agent id"),
]


class _FrameRequest(Request):
    """A predict request whose JSON body is read by the compiled reader into its observations
    (:mod:`service.frame_reader`), or else parsed by orjson (faster than the stdlib on observation frames).

    Whatever orjson refuses (NaN literals, integers beyond 64 bits, lone surrogates, malformed text) is
    parsed again by the stdlib, so every input meets exactly the same validation and errors as before.
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            read = read_frame(body, "json", self.app.state.settings.native_kernel)
            if read is not None:
                self._json = read
                return read
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                # JSON text is UTF-8 (RFC 8259): the stdlib would otherwise detect UTF-16 and UTF-32 bodies.
                # A NUL byte is never valid JSON, and UTF-16/32 text of ASCII characters is full of them
                bad = body.find(b"\x00")
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError as e:
                    bad = e.start if bad < 0 else min(bad, e.start)
                if bad >= 0:
                    raise json.JSONDecodeError(
                        "the body is not UTF-8 (JSON text is UTF-8, RFC 8259)",
                        body.decode("utf-8", "replace"),
                        bad,
                    ) from None
                self._json = json.loads(text)
        return self._json


class _MsgpackRequest(Request):
    """A request whose body is MessagePack (``Content-Type: application/msgpack``): read by the compiled
    reader into its observations, or else decoded to the same objects a JSON body gives, then validated
    exactly like one."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            read = read_frame(body, "msgpack", self.app.state.settings.native_kernel)
            if read is not None:
                self._json = read
                return read
            try:
                self._json = msgpack.unpackb(body, raw=False, strict_map_key=True)
            except (ValueError, msgpack.UnpackException) as e:
                # FastAPI reports a JSONDecodeError as a malformed body (400 malformed_json, field body)
                raise json.JSONDecodeError(f"not valid MessagePack ({e})", "", 0) from None
        return self._json


class _FrameRoute(APIRoute):
    """FastAPI's route with :class:`_FrameRequest` (FastAPI's documented custom-request pattern), or
    :class:`_MsgpackRequest` for a MessagePack body (announced to FastAPI as JSON, which it then is): the
    predict routes, whose body is :data:`service.frame_reader.ObservationsBody`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            if request.headers.get("content-type", "").split(";", 1)[0].strip() == MSGPACK:
                headers = [
                    (k, b"application/json" if k == b"content-type" else v)
                    for k, v in request.scope["headers"]
                ]
                return await handler(_MsgpackRequest({**request.scope, "headers": headers}, request.receive))
            return await handler(_FrameRequest(request.scope, request.receive))

        return route


v1 = APIRouter(prefix="/v1", dependencies=[ApiKeyDep], route_class=_FrameRoute)
ops = APIRouter()
# the stream checks its key in the handshake itself (a WebSocket has no Request for the dependency)
streams = APIRouter()


LayoutQuery = Annotated[
    Layout,
    Query(
        description="trajectory layout: 'points' (a list of {timestamp, x, y, std_x, std_y}) or 'columns' "
        "(one array per field)"
    ),
]


ModesQuery = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_MODES,
        description="also answer the K most probable futures of each agent (at most the model's own: motion "
        "baselines have one), each with its probability and per-point deviations; without it, the single "
        "trajectory only",
    ),
]


async def _predict(
    engine: EngineDep,
    body: Observations,
    roles: list[str],
    layout: Layout,
    encoding: Encoding,
    modes: int | None,
) -> Response:
    out = await engine.predict(body, roles, modes)
    payload = predict_payload(engine, out, roles, layout, encoding)
    return Response(
        encode(payload, encoding), media_type=MSGPACK if encoding == "msgpack" else "application/json"
    )


_ANSWER = (
    "one prediction per agent of the frame, from its newest observation (JSON, or MessagePack on request)"
)


@v1.post(
    "/predict",
    response_model=PredictResponse,
    responses=PREDICT_ERRORS,
    summary="IPNet prediction",
    tags=["predict"],
    response_description=_ANSWER,
)
async def predict(
    body: ObservationsBody,
    engine: EngineDep,
    encoding: AnswerEncodingDep,
    layout: LayoutQuery = "points",
    modes: ModesQuery = None,
) -> Response:
    """Advance each agent's IPNet state by its observations; one prediction per agent."""
    return await _predict(engine, body, ["ipnet"], layout, encoding, modes)


@v1.post(
    "/baseline/predict",
    response_model=PredictResponse,
    responses=PREDICT_ERRORS,
    summary="Baseline",
    tags=["predict"],
    response_description=_ANSWER,
)
async def baseline_predict(
    body: ObservationsBody,
    engine: EngineDep,
    encoding: AnswerEncodingDep,
    layout: LayoutQuery = "points",
    modes: ModesQuery = None,
) -> Response:
    """The recurrent baseline (``TRAJPRED_BASELINE``) on its own state."""
    return await _predict(engine, body, ["baseline"], layout, encoding, modes)


@v1.post(
    "/ab/predict",
    response_model=ABPredictResponse,
    responses=PREDICT_ERRORS,
    summary="Shadow A/B",
    tags=["predict"],
    response_description="both models' predictions per agent, each model on its own state",
)
async def ab_predict(
    body: ObservationsBody,
    engine: EngineDep,
    encoding: AnswerEncodingDep,
    layout: LayoutQuery = "points",
    modes: ModesQuery = None,
) -> Response:
    """Both models advance their own state on the same observations; both predictions per agent."""
    return await _predict(engine, body, ["ipnet", "baseline"], layout, encoding, modes)


@streams.websocket(STREAM_ROUTE)
async def stream(websocket: WebSocket) -> None:
    """``/v1/stream?route=predict|baseline|ab&layout=points|columns[&modes=K]``: one reply per message, in order
    (``service.stream``)."""
    await serve_stream(websocket)


@v1.get(
    "/ab/report",
    response_model=ABReport,
    responses=_errors(401, 422, 500, 503),
    summary="A/B report",
    tags=["report"],
    response_description="the online comparison of both models on identical matured predictions",
)
async def ab_report(
    engine: EngineDep,
    agent_type: Annotated[AgentType | None, Query(description="only this agent type")] = None,
    interval: Annotated[
        IntervalRegime | None,
        Query(description="only predictions made in this interval regime (the stream's rate at the anchor)"),
    ] = None,
) -> ABReport:
    """ADE/FDE of both models on identical matured predictions (see ``service.scoring``)."""
    return ABReport.model_validate(await engine.report(agent_type, interval))


@v1.get(
    "/agents/{agent_id:path}",
    response_model=AgentSummary,
    responses=_errors(401, 404, 422, 500, 503),
    summary="Agent state summary",
    tags=["agents"],
    response_description="every model's state of the agent",
)
async def agent_state(agent_id: AgentIdPath, engine: EngineDep) -> AgentSummary:
    """Steps, last timestamp, age and (IPNet) the neuron temperatures of every model's state."""
    return AgentSummary.model_validate({"agent_id": agent_id, "models": await engine.agent_summary(agent_id)})


@v1.delete(
    "/agents/{agent_id:path}",
    response_model=AgentDeleted,
    responses=_errors(401, 404, 422, 500, 503),
    summary="End of track",
    tags=["agents"],
    response_description="the models whose state of the agent was freed",
)
async def agent_delete(agent_id: AgentIdPath, engine: EngineDep) -> AgentDeleted:
    """Free the agent's state in every model."""
    return AgentDeleted(agent_id=agent_id, deleted=await engine.end_track(agent_id))


@v1.post(
    "/ping",
    responses=_errors(401, 408, 413, 500, 503),
    summary="Trivial route (benchmark ceiling)",
    tags=["benchmark"],
    response_description="the body's size in bytes",
)
async def ping(request: Request) -> dict[str, int]:
    """Read the body and answer its size: no parsing, no model, no state.

    The benchmarks send the same frames here as to the predict routes, so the ratio of the two rates is
    what the service adds on top of the framework and the transport on this machine.
    """
    return {"bytes": len(await request.body())}


@ops.get(
    "/healthz", response_model=Health, responses=_errors(500, 503), summary="Liveness", tags=["operations"]
)
async def healthz(request: Request) -> Health:
    """The process answers; 503 once its startup has failed (restart it: it will never be ready)."""
    failed = getattr(request.app.state, "startup_error", None)
    if failed is not None:
        raise NotReady(f"startup failed: {failed}")
    return Health(status="ok")


@ops.get(
    "/readyz", response_model=Readiness, responses=_errors(500, 503), summary="Readiness", tags=["operations"]
)
async def readyz(runtime: RuntimeDep) -> Readiness:
    """Ready once the models are loaded and warmed and the state store answers."""
    try:
        await runtime.store.ping()
    except ServiceError as e:
        raise NotReady(f"state store unavailable: {e.message}") from e
    return Readiness(
        status="ready",
        models={role: runtime.engine.predictors[name].version for role, name in runtime.engine.roles.items()},
        store="redis" if runtime.settings.uses_redis else "memory",
        snapshot=runtime.snapshot_status,
    )


@ops.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        **_errors(500, 503),
    },
    summary="Prometheus metrics",
    tags=["operations"],
    dependencies=[MetricsKeyDep],
)
async def metrics(m: MetricsDep, runtime: RuntimeDep) -> Response:
    """Prometheus text exposition of this app's registry, rendered at most once per
    ``TRAJPRED_METRICS_CACHE_S`` (a render costs the event loop milliseconds: a flood of scrapes must not
    starve the requests)."""
    body = runtime.exposition.get(runtime.settings.metrics_cache_s, time.monotonic())
    if body is None:
        runtime.engine.flush()  # every answered request is counted
        body = runtime.exposition.put(m.render(), time.monotonic())
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
