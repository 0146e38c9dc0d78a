"""Hostile input: schemathesis against the app's own OpenAPI schema and hypothesis-generated payloads.

Whatever arrives, the answer is never a 5xx, always a declared status with a schema-conformant body, and a
rejected request leaves every stored state exactly as it was.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.settings import Settings

# the schema the app publishes (its routes and models only, no weights needed to build it)
SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(snapshot_path=None)).openapi())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
COUNTS: dict[str, int] = {"schemathesis": 0, "hypothesis": 0, "accepted": 0}


@pytest.fixture(scope="module")
def fuzzed(weights: Path) -> Iterator[TestClient]:
    """One app for every generated case; no TTL sweep in between, so a state change is always the request's."""
    app = create_app(
        Settings(
            weights_dir=weights,
            snapshot_path=None,
            state_ttl_s=1e9,
            eviction_interval_s=1e6,
            metrics_cache_s=0.0,
            startup_in_background=False,
        )
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    print(f"hostile inputs tried: {COUNTS}")


def _states(client: TestClient) -> list[tuple[str, str, bytes]]:
    return sorted(client.app.state.runtime.store.entries())  # type: ignore[attr-defined]


def _check_rejection_changed_nothing(client: TestClient, before: list[Any], status: int) -> None:
    if status < 300:
        COUNTS["accepted"] += 1
    else:
        assert _states(client) == before, f"a rejected request ({status}) changed the stored state"


@SCHEMA.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_schemathesis_never_5xx_and_conforms(case: Any, fuzzed: TestClient) -> None:
    kwargs = case.as_transport_kwargs(base_url=str(fuzzed.base_url))
    kwargs.pop("cookies", None)
    if isinstance(kwargs.get("data"), bytes | str):
        kwargs["content"] = kwargs.pop("data")
    before = _states(fuzzed)
    response = fuzzed.request(**kwargs)
    COUNTS["schemathesis"] += 1
    case.validate_response(response, checks=CHECKS)
    _check_rejection_changed_nothing(fuzzed, before, response.status_code)


# --- hypothesis payloads ------------------------------------------------------------------------------
HOSTILE_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 0.0, 1e7, 1e7 + 1]),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
)
AGENT_IDS = st.one_of(
    st.text(max_size=8),  # unicode, control characters, empty
    st.text(min_size=120, max_size=400),  # over-long
    st.sampled_from(["veh-1", "veh-1", "ped/2", " ", "\x00", "a\nb", "\u202e", "😀" * 40]),
    st.integers(),
)
TIMESTAMPS = st.one_of(
    st.sampled_from([1000.0, 1000.0, 999.9, 1000.1, -1.0, 0.0, 4.1e9, 1e12]),  # equal, out of order, bounds
    HOSTILE_FLOATS,
)


@st.composite
def observation(draw: st.DrawFn) -> Any:
    o: dict[str, Any] = {
        "agent_id": draw(AGENT_IDS),
        "timestamp": draw(TIMESTAMPS),
        "x": draw(HOSTILE_FLOATS),
        "y": draw(HOSTILE_FLOATS),
    }
    if draw(st.booleans()):
        o["agent_type"] = draw(
            st.sampled_from(["vehicle", "pedestrian", "cyclist", "unknown", "tank", 3, None])
        )
    if draw(st.integers(0, 9)) == 0:
        o[draw(st.sampled_from(["z", "extra", "agent_id"]))] = draw(HOSTILE_FLOATS)
    if draw(st.integers(0, 9)) == 0:
        del o[draw(st.sampled_from(sorted(o)))]
    return o


def _deep(depth: int) -> str:
    return '{"observations": ' + "[" * depth + "]" * depth + "}"


BODIES = st.one_of(
    st.builds(lambda obs: json.dumps({"observations": obs}), st.lists(observation(), max_size=12)),
    # the same agent several times: duplicated, equal and out-of-order timestamps
    st.builds(
        lambda obs: json.dumps({"observations": [{**o, "agent_id": "dup"} for o in obs]}),
        st.lists(observation(), min_size=2, max_size=6),
    ),
    st.integers(10, 200_000).map(_deep),
    st.builds(
        lambda n: json.dumps({"observations": [{"agent_id": "a", "timestamp": 1.0}] * n}),
        st.integers(1, 30_000),
    ),
    st.builds(
        lambda v: json.dumps(v),
        st.recursive(
            st.none() | st.floats() | st.text(max_size=5),
            lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c),
            max_leaves=30,
        ),
    ),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.just('{"observations": [{"agent_id": "a", "timestamp": 1' + "0" * 5000 + ', "x": 1, "y": 1}]}'),
)
ROUTES = st.sampled_from(["/v1/predict", "/v1/baseline/predict", "/v1/ab/predict"])


@given(body=BODIES, route=ROUTES)
@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_hostile_payloads_never_5xx_never_change_state(fuzzed: TestClient, body: str, route: str) -> None:
    before = _states(fuzzed)
    r = fuzzed.post(
        route, content=body.encode("utf-8", "surrogatepass"), headers={"content-type": "application/json"}
    )
    COUNTS["hypothesis"] += 1
    assert r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/json")
    if r.status_code >= 400:
        error = r.json()["error"]
        assert error["status"] == r.status_code and error["code"] and error["message"]
    if r.status_code == 400:
        assert (error["code"], error["field"]) == ("malformed_json", "body"), error
    _check_rejection_changed_nothing(fuzzed, before, r.status_code)


@pytest.mark.parametrize(
    "body",
    [
        _deep(100_000),
        '{"observations": [' + '{"a": ' * 5000 + "1" + "}" * 5000 + "]}",
        '{"x": 1' + "0" * 5000 + "}",
    ],
    ids=["deep-array", "deep-object", "huge-integer"],
)
def test_unparseable_bodies_are_malformed_json(fuzzed: TestClient, body: str) -> None:
    r = fuzzed.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert (r.json()["error"]["code"], r.json()["error"]["field"]) == ("malformed_json", "body")
