"""FastAPI dependencies: the long-lived objects of the lifespan, reached from ``request.app.state``.

All ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hand-off per
dependency and request (four per predict request, more than the work they do).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from models.predictor import Predictor
from service.answers import MSGPACK, Encoding
from service.engine import Engine
from service.errors import NotReady, Unauthorized
from service.metrics import Metrics
from service.settings import Settings
from service.store import StateStore


@dataclass
class CachedExposition:
    """The last ``/metrics`` body and when it was rendered (monotonic seconds)."""

    body: bytes | None = None
    at: float = float("-inf")

    def get(self, max_age_s: float, now: float) -> bytes | None:
        """The cached body if younger than ``max_age_s``, else None (render a new one)."""
        return self.body if self.body is not None and now - self.at < max_age_s else None

    def put(self, body: bytes, now: float) -> bytes:
        self.body, self.at = body, now
        return body


@dataclass
class Runtime:
    """Everything the lifespan creates and owns for one app."""

    settings: Settings
    metrics: Metrics
    predictors: dict[str, Predictor]
    store: StateStore
    engine: Engine
    snapshot_status: str | None = None
    stopping: bool = False
    exposition: CachedExposition = field(default_factory=CachedExposition)


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise NotReady("the service is starting: models loading")
    if runtime.stopping:
        raise NotReady("the service is stopping")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_engine(runtime: RuntimeDep) -> Engine:
    return runtime.engine


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(runtime: RuntimeDep) -> Metrics:
    return runtime.metrics


EngineDep = Annotated[Engine, Depends(get_engine)]


async def get_answer_encoding(request: Request) -> Encoding:
    """MessagePack when the client accepts it (``Accept: application/msgpack``), else JSON."""
    return "msgpack" if MSGPACK in request.headers.get("accept", "") else "json"


AnswerEncodingDep = Annotated[Encoding, Depends(get_answer_encoding)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="required when TRAJPRED_API_KEYS is set"
)


def key_allowed(given: str | bytes | None, keys: frozenset[str]) -> bool:
    """Whether ``given`` (an ``X-API-Key`` value) is one of ``keys``; any key when none is configured. Every key
    is compared, so the time taken does not tell which prefix matched."""
    if not keys:
        return True
    if given is None:
        return False
    raw = given.encode() if isinstance(given, str) else given
    ok = False
    for k in keys:
        ok |= secrets.compare_digest(raw, k.encode())
    return ok


async def require_api_key(
    settings: SettingsDep, key: Annotated[str | None, Security(_api_key_header)]
) -> None:
    """Check ``X-API-Key`` against the configured keys (no keys configured: open)."""
    if not key_allowed(key, settings.api_key_set):
        raise Unauthorized("missing or invalid X-API-Key header", field="X-API-Key")


ApiKeyDep = Depends(require_api_key)
_bearer = HTTPBearer(auto_error=False, description="the /metrics key, when TRAJPRED_METRICS_API_KEY is set")


async def require_metrics_key(
    settings: SettingsDep,
    key: Annotated[str | None, Security(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> None:
    """``/metrics`` publishes the per-model error histograms: with ``TRAJPRED_METRICS_API_KEY`` set it needs
    that key, in ``X-API-Key`` or as ``Authorization: Bearer`` (Prometheus's ``authorization`` setting)."""
    want = settings.metrics_api_key
    if not want:
        return
    given = key if key is not None else (bearer.credentials if bearer is not None else None)
    if given is None or not secrets.compare_digest(given.encode(), want.encode()):
        raise Unauthorized(
            "missing or invalid metrics key (X-API-Key or Authorization: Bearer)", field="X-API-Key"
        )


MetricsKeyDep = Depends(require_metrics_key)
