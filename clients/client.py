"""Typed clients of the prediction service (sync and async, on httpx; the stream on websockets).

Every ``/v1`` route plus ``/healthz``, ``/readyz`` and ``/metrics``; answers are parsed into the service's
response schemas (``service.schemas``, the published contract). Errors the service answers become
:class:`ApiError` with the parsed error body.

Retries: a 503 (starting, stopping, state store down) and connection failures are retried a bounded number
of times with exponential backoff, honouring ``Retry-After``. A connection that could not be opened never
reached the server, so any request may be re-sent; a failure after the request was sent (read error, read
timeout) is retried only for GET/DELETE, because re-sending an observation that was applied would be
rejected as stale (409) at best.

``stream()`` opens the WebSocket stream (``/v1/stream``, ``clients.stream``): one frame per message, no
request set-up per frame, JSON or MessagePack.

``http=`` accepts any ``httpx.Client`` (e.g. FastAPI's ``TestClient``) or ``httpx.AsyncClient``; the client
then uses its base URL and does not close it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ValidationError

from clients.errors import ApiError
from clients.stream import (
    AsyncTrajpredStream,
    Encoding,
    StreamClosed,
    StreamRoute,
    TrajpredStream,
    observations_json,
    open_stream,
    stream_url,
)
from service.schemas import (
    ABPredictResponse,
    ABReport,
    AgentDeleted,
    AgentSummary,
    ErrorBody,
    ErrorResponse,
    Health,
    Layout,
    Observation,
    PredictResponse,
    Readiness,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ApiError",
    "AsyncTrajpredClient",
    "ObservationLike",
    "RetryPolicy",
    "StreamClosed",
    "TrajpredClient",
]

DEFAULT_TIMEOUT_S = 10.0
#: an observation as the schema object or as its JSON dict (cheaper for large frames)
ObservationLike = Observation | Mapping[str, Any]
M = TypeVar("M", bound=BaseModel)
_IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff (with jitter) capped at ``max_backoff_s``.

    ``retries`` is the number of re-sends after the first attempt; ``Retry-After`` from the server replaces
    the computed wait (still capped), so a server that asks for a long pause cannot stall the caller.
    """

    retries: int = 3
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    retry_statuses: frozenset[int] = frozenset({503})

    def wait_s(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before re-send number ``attempt`` (1-based)."""
        hinted = _parse_retry_after(retry_after)
        if hinted is not None:
            return float(min(hinted, self.max_backoff_s))
        base: float = min(self.backoff_s * 2.0 ** (attempt - 1), self.max_backoff_s)
        # jitter spreads the re-sends of many clients that failed together
        return base * (0.5 + random.random() / 2)


def _parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _agent_path(agent_id: str) -> str:
    # every character that is not unreserved is percent-encoded, '/' included, and so are dots: an id such as
    # "a/../victim", "." or ".." must reach that agent, not a path an HTTP client normalises (RFC 3986 dot
    # segments) into another one. The server decodes the segment back to the id.
    return "/v1/agents/" + quote(agent_id, safe="").replace(".", "%2E")


def _error_of(response: httpx.Response) -> ErrorBody | None:
    try:
        return ErrorResponse.model_validate_json(response.content).error
    except ValidationError:
        return None


def _frame_params(layout: Layout, modes: int | None) -> dict[str, str] | None:
    # the defaults send no query string: the URL stays what it was before the options existed
    params: dict[str, str] = {} if layout == "points" else {"layout": layout}
    if modes is not None:
        params["modes"] = str(modes)
    return params or None


def _report_params(agent_type: str | None, interval: str | None) -> dict[str, str] | None:
    params = {k: v for k, v in (("agent_type", agent_type), ("interval", interval)) if v}
    return params or None


def _parse(response: httpx.Response, model: type[M]) -> M:
    return model.model_validate_json(response.content)


RetryHook = Callable[[int, str, float], None]


class _Base:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout_s: float,
        retry: RetryPolicy | None,
        on_retry: RetryHook | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = httpx.Timeout(timeout_s)
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry

    def _headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key} if self.api_key else {}

    def _should_retry(self, method: str, attempt: int, outcome: httpx.Response | Exception) -> bool:
        if attempt > self.retry.retries:
            return False
        if isinstance(outcome, httpx.Response):
            return outcome.status_code in self.retry.retry_statuses
        if isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return True  # never reached the server: safe for any method
        return isinstance(outcome, httpx.TransportError) and method in _IDEMPOTENT

    def _wait_for(self, attempt: int, outcome: httpx.Response | Exception) -> float:
        retry_after = outcome.headers.get("Retry-After") if isinstance(outcome, httpx.Response) else None
        wait = self.retry.wait_s(attempt, retry_after)
        if self.on_retry is not None:
            why = f"HTTP {outcome.status_code}" if isinstance(outcome, httpx.Response) else repr(outcome)
            self.on_retry(attempt, why, wait)
        return wait

    @staticmethod
    def _check(response: httpx.Response, attempts: int) -> httpx.Response:
        if response.status_code >= 400:
            raise ApiError(response.status_code, _error_of(response), response.text, attempts)
        return response


class TrajpredClient(_Base):
    """Synchronous client. Use as a context manager, or call :meth:`close`.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000`` (ignored when ``http`` is given: its base URL is used).
        api_key: sent as ``X-API-Key`` on every request.
        timeout_s: connect/read/write/pool timeout of each attempt (an injected ``http`` keeps its own).
        retry: the retry policy (default: 3 re-sends, 0.1 s doubling backoff capped at 2 s).
        http: an existing ``httpx.Client`` (e.g. a started ``TestClient``); not closed by this client.
        on_retry: called as ``on_retry(attempt, reason, wait_s)`` before each re-send (logging, tests).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
        on_retry: RetryHook | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout_s, retry, on_retry)
        self._owns_http = http is None
        self.http = http if http is not None else httpx.Client(base_url=self.base_url, timeout=self.timeout)

    def close(self) -> None:
        """Close the connection pool if this client created it."""
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> TrajpredClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, *, body: bytes | None = None, params: dict[str, str] | None = None
    ) -> httpx.Response:
        """One call with retries; raises :class:`ApiError` on an error status, httpx errors when out of retries."""
        headers = self._headers()
        if body is not None:
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            attempt += 1
            outcome: httpx.Response | Exception
            try:
                outcome = self.http.request(method, path, content=body, params=params, headers=headers)
            except httpx.TransportError as e:
                outcome = e
            if not self._should_retry(method, attempt, outcome):
                if isinstance(outcome, Exception):
                    raise outcome
                return self._check(outcome, attempt)
            time.sleep(self._wait_for(attempt, outcome))

    def _post_frame(
        self, path: str, observations: Iterable[ObservationLike], layout: Layout, modes: int | None
    ) -> httpx.Response:
        body = json.dumps({"observations": observations_json(observations)}).encode()
        return self.request("POST", path, body=body, params=_frame_params(layout, modes))

    def predict(
        self, observations: Iterable[ObservationLike], layout: Layout = "points", modes: int | None = None
    ) -> PredictResponse:
        """``POST /v1/predict``: advance and predict with IPNet (``layout="columns"``: compact trajectories;
        ``modes=K``: also the K most probable futures with their probabilities, in ``prediction.modes``)."""
        return _parse(self._post_frame("/v1/predict", observations, layout, modes), PredictResponse)

    def baseline_predict(
        self, observations: Iterable[ObservationLike], layout: Layout = "points", modes: int | None = None
    ) -> PredictResponse:
        """``POST /v1/baseline/predict``: the recurrent baseline on its own state."""
        return _parse(self._post_frame("/v1/baseline/predict", observations, layout, modes), PredictResponse)

    def ab_predict(
        self, observations: Iterable[ObservationLike], layout: Layout = "points", modes: int | None = None
    ) -> ABPredictResponse:
        """``POST /v1/ab/predict``: both models (shadow A/B), both predictions per agent."""
        return _parse(self._post_frame("/v1/ab/predict", observations, layout, modes), ABPredictResponse)

    def stream(
        self,
        route: StreamRoute = "predict",
        layout: Layout = "points",
        encoding: Encoding = "json",
        modes: int | None = None,
    ) -> TrajpredStream:
        """Open ``/v1/stream`` (a WebSocket on the same host and key): ``with client.stream("ab") as s:
        s.predict(frame)``, or ``s.send`` / ``s.recv`` to keep several frames in flight. ``encoding`` is
        ``"json"`` or ``"msgpack"``; ``modes`` as for :meth:`predict`. A stream is never retried
        (``clients.stream``)."""
        return open_stream(
            self.base_url, self._headers(), route, layout, encoding, self.timeout.connect or 10.0, modes
        )

    def ab_report(self, agent_type: str | None = None, interval: str | None = None) -> ABReport:
        """``GET /v1/ab/report``: ADE/FDE of both models on identical matured predictions (``interval``: only
        those made at one stream rate, ``10hz``, ``5hz``, ``2hz``, ``slower`` or ``unknown``)."""
        return _parse(
            self.request("GET", "/v1/ab/report", params=_report_params(agent_type, interval)), ABReport
        )

    def agent(self, agent_id: str) -> AgentSummary:
        """``GET /v1/agents/{agent_id}``: every model's state summary (404 -> ApiError)."""
        return _parse(self.request("GET", _agent_path(agent_id)), AgentSummary)

    def delete_agent(self, agent_id: str) -> AgentDeleted:
        """``DELETE /v1/agents/{agent_id}``: end of track, frees every model's state."""
        return _parse(self.request("DELETE", _agent_path(agent_id)), AgentDeleted)

    def healthz(self) -> Health:
        """``GET /healthz``: the process answers."""
        return _parse(self.request("GET", "/healthz"), Health)

    def readyz(self) -> Readiness:
        """``GET /readyz``: models loaded and warmed, store reachable (503 is retried, then ApiError)."""
        return _parse(self.request("GET", "/readyz"), Readiness)

    def metrics(self) -> str:
        """``GET /metrics``: Prometheus text exposition."""
        return self.request("GET", "/metrics").text

    def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.2) -> Readiness:
        """Poll ``/readyz`` until the service is ready (refused connections and 503 included), or time out.

        Raises ``TimeoutError`` with the last failure when ``timeout_s`` passes.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return _parse(self.http.get("/readyz", headers=self._headers()), Readiness)
            except (httpx.TransportError, ValidationError) as e:
                last: Exception = e
            if time.monotonic() + poll_s > deadline:
                raise TimeoutError(f"{self.base_url} not ready after {timeout_s} s: {last!r}")
            time.sleep(poll_s)

    def ping(self, body: bytes = b"{}") -> int:
        """``POST /v1/ping``: the trivial route (answers the body size, parses nothing)."""
        return int(self.request("POST", "/v1/ping", body=body).json()["bytes"])


class AsyncTrajpredClient(_Base):
    """Asynchronous twin of :class:`TrajpredClient` (same arguments, ``http`` is an ``httpx.AsyncClient``)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
        on_retry: RetryHook | None = None,
        max_connections: int = 100,
    ) -> None:
        super().__init__(base_url, api_key, timeout_s, retry, on_retry)
        self._owns_http = http is None
        self.http = (
            http
            if http is not None
            else httpx.AsyncClient(
                base_url=self.base_url,
                timeout=self.timeout,
                limits=httpx.Limits(
                    max_connections=max_connections, max_keepalive_connections=max_connections
                ),
            )
        )

    async def aclose(self) -> None:
        """Close the connection pool if this client created it."""
        if self._owns_http:
            await self.http.aclose()

    async def __aenter__(self) -> AsyncTrajpredClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self, method: str, path: str, *, body: bytes | None = None, params: dict[str, str] | None = None
    ) -> httpx.Response:
        """One call with retries; raises :class:`ApiError` on an error status, httpx errors when out of retries."""
        headers = self._headers()
        if body is not None:
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            attempt += 1
            outcome: httpx.Response | Exception
            try:
                outcome = await self.http.request(method, path, content=body, params=params, headers=headers)
            except httpx.TransportError as e:
                outcome = e
            if not self._should_retry(method, attempt, outcome):
                if isinstance(outcome, Exception):
                    raise outcome
                return self._check(outcome, attempt)
            await asyncio.sleep(self._wait_for(attempt, outcome))

    async def _post_frame(
        self, path: str, observations: Iterable[ObservationLike], layout: Layout, modes: int | None
    ) -> httpx.Response:
        body = json.dumps({"observations": observations_json(observations)}).encode()
        return await self.request("POST", path, body=body, params=_frame_params(layout, modes))

    async def predict(
        self, observations: Iterable[ObservationLike], layout: Layout = "points", modes: int | None = None
    ) -> PredictResponse:
        """``POST /v1/predict``."""
        return _parse(await self._post_frame("/v1/predict", observations, layout, modes), PredictResponse)

    async def baseline_predict(
        self, observations: Iterable[ObservationLike], layout: Layout = "points", modes: int | None = None
    ) -> PredictResponse:
        """``POST /v1/baseline/predict``."""
        response = await self._post_frame("/v1/baseline/predict", observations, layout, modes)
        return _parse(response, PredictResponse)

    async def ab_predict(
        self, observations: Iterable[ObservationLike], layout: Layout = "points", modes: int | None = None
    ) -> ABPredictResponse:
        """``POST /v1/ab/predict``."""
        return _parse(
            await self._post_frame("/v1/ab/predict", observations, layout, modes), ABPredictResponse
        )

    def stream(
        self,
        route: StreamRoute = "predict",
        layout: Layout = "points",
        encoding: Encoding = "json",
        modes: int | None = None,
    ) -> AsyncTrajpredStream:
        """Open ``/v1/stream``: ``async with client.stream("ab") as s: await s.predict(frame)``."""
        url = stream_url(self.base_url, route, layout, modes)
        return AsyncTrajpredStream(url, self._headers(), route, encoding, self.timeout.connect or 10.0)

    async def ab_report(self, agent_type: str | None = None, interval: str | None = None) -> ABReport:
        """``GET /v1/ab/report``."""
        params = _report_params(agent_type, interval)
        return _parse(await self.request("GET", "/v1/ab/report", params=params), ABReport)

    async def agent(self, agent_id: str) -> AgentSummary:
        """``GET /v1/agents/{agent_id}``."""
        return _parse(await self.request("GET", _agent_path(agent_id)), AgentSummary)

    async def delete_agent(self, agent_id: str) -> AgentDeleted:
        """``DELETE /v1/agents/{agent_id}``."""
        return _parse(await self.request("DELETE", _agent_path(agent_id)), AgentDeleted)

    async def healthz(self) -> Health:
        """``GET /healthz``."""
        return _parse(await self.request("GET", "/healthz"), Health)

    async def readyz(self) -> Readiness:
        """``GET /readyz``."""
        return _parse(await self.request("GET", "/readyz"), Readiness)

    async def metrics(self) -> str:
        """``GET /metrics``."""
        return (await self.request("GET", "/metrics")).text

    async def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.2) -> Readiness:
        """Poll ``/readyz`` until the service is ready, or raise ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return _parse(await self.http.get("/readyz", headers=self._headers()), Readiness)
            except (httpx.TransportError, ValidationError) as e:
                last: Exception = e
            if time.monotonic() + poll_s > deadline:
                raise TimeoutError(f"{self.base_url} not ready after {timeout_s} s: {last!r}")
            await asyncio.sleep(poll_s)

    async def ping(self, body: bytes = b"{}") -> int:
        """``POST /v1/ping``."""
        return int((await self.request("POST", "/v1/ping", body=body)).json()["bytes"])


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text (parsed by ``prometheus_client.parser``) -> ``{'name{label="value",...}': value}``, labels
    in the order the exposition gives them."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sample.labels.items())
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return out
