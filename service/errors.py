"""The one error hierarchy of the service. The data plane raises these; the HTTP layer maps them once.

Every error carries an HTTP status, a stable machine code (also the ``reason`` label of
``trajpred_rejected_requests_total``), a human message and, for input errors, the offending field and the
index of the observation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: issues named in one error answer (``details``); a request may have many more
MAX_REPORTED_ISSUES = 20


class ServiceError(Exception):
    """Base class: ``status`` and ``code`` are class defaults, overridable per instance."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        index: int | None = None,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.index = index
        if code is not None:
            self.code = code
        self.details = details or []

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the JSON body."""
        body: dict[str, Any] = {
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "field": self.field,
            "index": self.index,
        }
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(ServiceError):
    """Input that breaks the contract (schema, bounds, duplicates): 422."""

    status = 422
    code = "invalid_request"


class MalformedRequest(ServiceError):
    """A body that is not JSON at all: 400."""

    status = 400
    code = "malformed_json"


class PayloadTooLarge(ServiceError):
    """A body above ``max_body_bytes``: 413."""

    status = 413
    code = "payload_too_large"


class AnswerTooLarge(ServiceError):
    """The answer would exceed ``TRAJPRED_MAX_ANSWER_POINTS`` (agents x models x trajectory points)."""

    status = 413
    code = "answer_too_large"


class BodyTimeout(ServiceError):
    """A body that did not arrive within ``body_read_timeout_s``: 408 (a stalled client frees its slot)."""

    status = 408
    code = "body_timeout"


class Unauthorized(ServiceError):
    """Missing or wrong ``X-API-Key``: 401."""

    status = 401
    code = "unauthorized"


class NotFound(ServiceError):
    """No state for this agent: 404."""

    status = 404
    code = "not_found"


class StaleObservation(ServiceError):
    """An observation not after the agent's last one: 409 (it would rewrite history)."""

    status = 409
    code = "stale_timestamp"


class Conflict(ServiceError):
    """Concurrent writers kept changing the same agents; the client may retry: 409."""

    status = 409
    code = "write_conflict"


class NotReady(ServiceError):
    """Models not loaded or the state store unreachable: 503."""

    status = 503
    code = "not_ready"


class StoreUnavailable(ServiceError):
    """The state store failed (e.g. Redis down): 503."""

    status = 503
    code = "store_unavailable"


class Overloaded(ServiceError):
    """Every processing slot and queue place is taken (or the queue wait ran out): 503 with Retry-After."""

    status = 503
    code = "overloaded"


#: every code of a 4xx answer (the ``reason`` of ``trajpred_rejected_requests_total``), and of a 5xx answer
#: (``trajpred_server_errors_total``): the counters are exported at 0 for each from start-up, so a dashboard
#: panel or a recording rule has data on a healthy server. ``tests/service/test_metrics.py`` checks that
#: every code the service emits is listed.
REJECTION_CODES = (
    "malformed_json",
    "payload_too_large",
    "answer_too_large",
    "body_timeout",
    "unauthorized",
    "not_found",
    "route_not_found",
    "method_not_allowed",
    "http_error",
    "stale_timestamp",
    "write_conflict",
    "invalid_request",
    "missing_field",
    "extra_field",
    "not_finite",
    "out_of_range",
    "empty_request",
    "too_many_observations",
    "too_many_observations_per_agent",
    "invalid_agent_id",
    "invalid_agent_type",
    "invalid_value",
    "invalid_type",
    "coordinate_out_of_range",
    "timestamp_in_future",
    "duplicate_timestamp",
    "implausible_motion",
)
SERVER_ERROR_CODES = ("internal_error", "not_ready", "store_unavailable", "overloaded")


# --- validation errors ---------------------------------------------------------------------------------
_TYPE_CODES = {
    "missing": "missing_field",
    "extra_forbidden": "extra_field",
    "finite_number": "not_finite",
    "greater_than_equal": "out_of_range",
    "greater_than": "out_of_range",
    "less_than_equal": "out_of_range",
    "less_than": "out_of_range",
    "too_short": "empty_request",
    "too_long": "too_many_observations",
}


def _code_for(err_type: str, field: str | None) -> str:
    if err_type in _TYPE_CODES:
        return _TYPE_CODES[err_type]
    if err_type.startswith("string_") and field == "agent_id" and err_type != "string_type":
        return "invalid_agent_id"
    if err_type == "literal_error":
        return "invalid_agent_type" if field == "agent_type" else "invalid_value"
    if err_type.endswith("_type") or err_type.endswith("_parsing"):
        return "invalid_type"
    return "invalid_request"


def from_validation_errors(errors: Sequence[Mapping[str, Any]]) -> ServiceError:
    """Pydantic's errors (``ValidationError.errors()``, FastAPI's ``RequestValidationError.errors()``) -> one
    :class:`ServiceError` naming field, index and reason: the HTTP routes and the stream map them alike."""
    details: list[dict[str, Any]] = []
    first: tuple[str, str | None, int | None] | None = None
    for e in errors:
        loc = list(e.get("loc", ()))
        source = loc.pop(0) if loc and loc[0] in ("body", "query", "path", "header") else "body"
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "invalid JSON")
            pos = loc[0] if loc else "?"
            return MalformedRequest(f"malformed JSON at character {pos}: {reason}", field="body")
        index: int | None = None
        if len(loc) >= 2 and loc[0] == "observations" and isinstance(loc[1], int):
            index = loc[1]
            field = ".".join(str(x) for x in loc[2:]) or "observations"
        else:
            field = ".".join(str(x) for x in loc) or source
        msg = e.get("msg", "invalid")
        where = f"observations[{index}].{field}" if index is not None else field
        details.append({"field": field, "index": index, "message": f"{where}: {msg}"})
        if first is None:
            first = (e.get("type", ""), field, index)
    assert first is not None
    code = _code_for(first[0], first[1])
    if code == "empty_request":
        details[0]["message"] = "observations: at least one observation is required"
    return InvalidRequest(
        details[0]["message"],
        field=first[1],
        index=first[2],
        code=code,
        details=details[:MAX_REPORTED_ISSUES],
    )
