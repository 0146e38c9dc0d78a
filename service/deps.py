"""FastAPI dependencies: the long-lived objects of the lifespan, reached from ``request.app.state``.

All ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hand-off per
dependency and request (four per predict request, more than the work they do).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from models.predictor import Predictor
from service.engine import Engine
from service.errors import NotReady, Unauthorized
from service.metrics import Metrics
from service.settings import Settings
from service.store import StateStore


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


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None or runtime.stopping:
        raise NotReady("the service is starting or stopping")
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
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="required when TRAJPRED_API_KEYS is set"
)


async def require_api_key(
    settings: SettingsDep, key: Annotated[str | None, Security(_api_key_header)]
) -> None:
    """Check ``X-API-Key`` against the configured keys (no keys configured: open)."""
    keys = settings.api_key_set
    if not keys:
        return
    # compare against every key so the time taken does not tell which prefix matched
    ok = False
    for k in keys:
        ok |= key is not None and secrets.compare_digest(key.encode(), k.encode())
    if not ok:
        raise Unauthorized("missing or invalid X-API-Key header", field="X-API-Key")


ApiKeyDep = Depends(require_api_key)
