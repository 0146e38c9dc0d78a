"""Bad input: 4xx with a JSON error naming field, index and reason; counted; no state touched; declared."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.service.helpers import metric, obs

VALID = obs("ok-agent", 1000.0, 1.0, 2.0, "vehicle")


def _with_bad(bad: dict[str, Any]) -> str:
    return json.dumps({"observations": [VALID, {**obs("bad-agent", 1000.0, 3.0, 4.0), **bad}]})


def _drop(key: str) -> str:
    o = obs("bad-agent", 1000.0, 3.0, 4.0)
    del o[key]
    return json.dumps({"observations": [VALID, o]})


# (case id, raw body, status, code, field, index)
CASES = [
    ("malformed-json", '{"observations": [', 400, "malformed_json", "body", None),
    ("not-json-at-all", "x=1&y=2", 400, "malformed_json", "body", None),
    ("body-is-a-list", json.dumps([VALID]), 422, "invalid_type", "body", None),
    (
        "observations-not-a-list",
        json.dumps({"observations": VALID}),
        422,
        "invalid_type",
        "observations",
        None,
    ),
    ("missing-observations", "{}", 422, "missing_field", "observations", None),
    ("empty-request", json.dumps({"observations": []}), 422, "empty_request", "observations", None),
    (
        "extra-top-level-field",
        json.dumps({"observations": [VALID], "debug": True}),
        422,
        "extra_field",
        "debug",
        None,
    ),
    ("missing-x", _drop("x"), 422, "missing_field", "x", 1),
    ("missing-agent-id", _drop("agent_id"), 422, "missing_field", "agent_id", 1),
    ("extra-field", _with_bad({"z": 1.0}), 422, "extra_field", "z", 1),
    ("bool-for-number", _with_bad({"x": True}), 422, "invalid_type", "x", 1),
    ("string-for-number", _with_bad({"timestamp": "1000.5"}), 422, "invalid_type", "timestamp", 1),
    ("null-for-number", _with_bad({"y": None}), 422, "invalid_type", "y", 1),
    ("nan", _with_bad({"x": 0.0}).replace('"x": 0.0', '"x": NaN'), 422, "not_finite", "x", 1),
    ("infinity", _with_bad({"y": 0.0}).replace('"y": 0.0', '"y": -Infinity'), 422, "not_finite", "y", 1),
    ("overflow-to-inf", _with_bad({"x": 0.0}).replace('"x": 0.0', '"x": 1e400'), 422, "not_finite", "x", 1),
    ("absurd-coordinate", _with_bad({"y": 3.0e8}), 422, "coordinate_out_of_range", "y", 1),
    ("negative-timestamp", _with_bad({"timestamp": -1.0}), 422, "out_of_range", "timestamp", 1),
    (
        "far-future-timestamp",
        _with_bad({"timestamp": time.time() + 86400.0}),
        422,
        "timestamp_in_future",
        "timestamp",
        1,
    ),
    ("unknown-agent-type", _with_bad({"agent_type": "truck"}), 422, "invalid_agent_type", "agent_type", 1),
    ("empty-agent-id", _with_bad({"agent_id": ""}), 422, "invalid_agent_id", "agent_id", 1),
    ("over-long-agent-id", _with_bad({"agent_id": "a" * 129}), 422, "invalid_agent_id", "agent_id", 1),
    ("control-char-agent-id", _with_bad({"agent_id": "veh\n17"}), 422, "invalid_agent_id", "agent_id", 1),
    ("del-char-agent-id", _with_bad({"agent_id": "veh\x7f17"}), 422, "invalid_agent_id", "agent_id", 1),
    ("number-agent-id", _with_bad({"agent_id": 17}), 422, "invalid_type", "agent_id", 1),
    ("duplicate-timestamp", _with_bad({"agent_id": "ok-agent"}), 422, "duplicate_timestamp", "timestamp", 1),
]

ROUTES = ["/v1/predict", "/v1/baseline/predict", "/v1/ab/predict"]


def _declared(openapi: dict[str, Any], path: str, method: str) -> set[int]:
    return {int(s) for s in openapi["paths"][path][method]["responses"]}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("case,body,status,code,field,index", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_whole_with_a_named_field_and_index(
    client, route, case, body, status, code, field, index
):
    r = client.post(route, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert (err["status"], err["code"], err["field"], err["index"]) == (status, code, field, index), err
    assert err["message"]
    if index is not None:
        assert f"observations[{index}]" in err["message"]
    # the valid observation next to the bad one was not applied either
    assert client.get("/v1/agents/ok-agent").status_code == 404
    assert metric(client, "trajpred_rejected_requests_total", reason=code) == 1
    assert metric(client, "trajpred_observations_total", model="ipnet") == 0
    assert status in _declared(client.get("/openapi.json").json(), route, "post")


def test_every_error_names_all_bad_observations(client):
    body = {"observations": [obs("a", 1.0, 1e9, 0.0), obs("b", 1.0, 0.0, 0.0), obs("c", 1.0, 0.0, -1e9)]}
    err = client.post("/v1/predict", json=body).json()["error"]
    assert (err["field"], err["index"]) == ("x", 0)
    assert [(d["field"], d["index"]) for d in err["details"]] == [("x", 0), ("y", 2)]


def test_too_many_observations(make_client):
    c = make_client(max_observations=3)
    body = {"observations": [obs(f"m{i}", 1.0, 0.0, 0.0) for i in range(4)]}
    r = c.post("/v1/predict", json=body)
    assert r.status_code == 422
    assert (
        r.json()["error"]["code"] == "too_many_observations" and r.json()["error"]["field"] == "observations"
    )
    assert c.post("/v1/predict", json={"observations": body["observations"][:3]}).status_code == 200


def test_oversized_bodies_are_refused_before_parsing(make_client):
    c = make_client(max_body_bytes=2048)
    big = json.dumps({"observations": [obs(f"agent-{i:04d}", 1.0, 0.0, 0.0) for i in range(60)]})
    assert len(big) > 2048
    r = c.post("/v1/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    def chunks():  # no Content-Length: the limit must hold on the streamed body too
        for i in range(0, len(big), 500):
            yield big[i : i + 500].encode()

    r = c.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert metric(c, "trajpred_rejected_requests_total", reason="payload_too_large") == 2
    assert c.get("/v1/agents/agent-0000").status_code == 404
    assert 413 in _declared(c.get("/openapi.json").json(), "/v1/predict", "post")


def test_bad_path_and_query_parameters(client):
    r = client.get("/v1/ab/report", params={"agent_type": "tank"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "agent_type"
    long_id = "x" * 200
    r = client.get(f"/v1/agents/{long_id}")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_agent_id"
    assert client.get("/v1/nowhere").status_code == 404
    assert client.put("/v1/predict", json={}).status_code == 405


def test_openapi_declares_every_status_with_the_error_schema(client):
    api = client.get("/openapi.json").json()
    expected = {
        ("/v1/predict", "post"): {200, 400, 401, 408, 409, 413, 422, 500, 503},
        ("/v1/baseline/predict", "post"): {200, 400, 401, 408, 409, 413, 422, 500, 503},
        ("/v1/ab/predict", "post"): {200, 400, 401, 408, 409, 413, 422, 500, 503},
        ("/v1/ab/report", "get"): {200, 401, 422, 500, 503},
        ("/v1/agents/{agent_id}", "get"): {200, 401, 404, 422, 500, 503},
        ("/v1/agents/{agent_id}", "delete"): {200, 401, 404, 422, 500, 503},
        ("/readyz", "get"): {200, 500, 503},
    }
    for (path, method), statuses in expected.items():
        responses = api["paths"][path][method]["responses"]
        assert {int(s) for s in responses} == statuses, (path, method)
        for s in statuses - {200}:
            ref = responses[str(s)]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorResponse"), (path, method, s)
    assert "HTTPValidationError" not in api["components"]["schemas"]
    assert "APIKeyHeader" in json.dumps(api["components"].get("securitySchemes", {}))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-32-be"])
def test_json_that_is_not_utf8_is_malformed(make_client, encoding: str):
    """JSON text is UTF-8: UTF-16 and UTF-32 bodies (with or without a byte order mark) get 400, nothing applied."""
    c = make_client()
    body = json.dumps({"observations": [VALID]}).encode(encoding)
    r = c.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "malformed_json" and err["field"] == "body" and "UTF-8" in err["message"]
    assert c.get("/v1/agents/ok-agent").status_code == 404
    assert metric(c, "trajpred_rejected_requests_total", reason="malformed_json") == 1


def test_one_agent_may_not_flood_a_request(make_client):
    """Each observation of one agent is one model step in sequence: their number per request is bounded."""
    c = make_client(max_observations_per_agent=5)
    many = [obs("busy", 1000.0 + 0.1 * k, 0.1 * k, 0.0) for k in range(6)]
    r = c.post("/v1/predict", json={"observations": [VALID, *many]})
    assert r.status_code == 422
    err = r.json()["error"]
    assert (err["code"], err["field"], err["index"]) == ("too_many_observations_per_agent", "agent_id", 6)
    assert c.get("/v1/agents/busy").status_code == 404 and c.get("/v1/agents/ok-agent").status_code == 404
    assert c.post("/v1/predict", json={"observations": many[:5]}).status_code == 200


def test_implausible_motion_is_refused_within_a_request_and_against_the_stored_track(make_client):
    c = make_client()
    # 9,999 km in 0.1 s inside one request
    jump = [obs("far", 1000.0, 0.0, 0.0), obs("far", 1000.1, 9.999e6, 0.0)]
    r = c.post("/v1/predict", json={"observations": [VALID, *jump]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "implausible_motion"
    assert r.json()["error"]["index"] == 2 and c.get("/v1/agents/far").status_code == 404
    # against the agent's last stored position: 2 km in 0.1 s
    assert c.post("/v1/predict", json={"observations": [obs("car", 1000.0, 5.0, 5.0)]}).status_code == 200
    r = c.post("/v1/predict", json={"observations": [VALID, obs("car", 1000.1, 2005.0, 5.0)]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "implausible_motion"
    assert r.json()["error"]["index"] == 1
    assert c.get("/v1/agents/car").json()["models"]["ipnet"]["steps"] == 1  # nothing applied
    # a fast car (60 m/s), detection noise a millisecond apart, and a long gap (a new track) are all fine
    ok = [obs("car", 1000.2, 17.0, 5.0), obs("car", 1000.201, 19.0, 5.5)]
    assert c.post("/v1/predict", json={"observations": ok}).status_code == 200
    assert c.post("/v1/predict", json={"observations": [obs("car", 1100.0, 5000.0, 5.0)]}).status_code == 200
    assert metric(c, "trajpred_rejected_requests_total", reason="implausible_motion") == 2


def test_a_track_ahead_of_the_clock_does_not_lock_out_the_agent(make_client):
    """A sender's clock error puts an agent 200 s in the future (allowed, under TRAJPRED_MAX_FUTURE_S): its
    real-time observations start a new track instead of answering 409 until the TTL; an ordinary
    out-of-order observation is still stale."""
    c = make_client()
    now = time.time()
    assert (
        c.post("/v1/predict", json={"observations": [obs("skewed", now + 200.0, 0.0, 0.0)]}).status_code
        == 200
    )
    r = c.post("/v1/predict", json={"observations": [obs("skewed", now, 1.0, 0.0)]})
    assert r.status_code == 200, r.text
    (p,) = r.json()["predictions"]
    assert p["new_track"] and p["steps"] == 1
    assert (
        c.post("/v1/predict", json={"observations": [obs("skewed", now + 0.1, 2.0, 0.0)]}).json()[
            "predictions"
        ][0]["steps"]
        == 2
    )
    # within the clock (a track that did not run ahead): an older observation is refused, nothing applied
    r = c.post("/v1/predict", json={"observations": [obs("skewed", now + 0.05, 1.5, 0.0)]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "stale_timestamp"


def test_an_answer_too_large_is_refused_before_any_work(make_client):
    """agents x models x points over TRAJPRED_MAX_ANSWER_POINTS: 413 before the models run, nothing applied."""
    c = make_client(max_answer_points=100)  # 30 points per trajectory at the default 3 s horizon
    two = [obs("a1", 1000.0, 0.0, 0.0), obs("a2", 1000.0, 5.0, 0.0)]
    r = c.post("/v1/ab/predict", json={"observations": two})  # 2 x 2 x 30 = 120 points
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert err["code"] == "answer_too_large" and err["field"] == "observations" and "120" in err["message"]
    assert c.get("/v1/agents/a1").status_code == 404
    assert metric(c, "trajpred_observations_total", model="ipnet") == 0
    assert c.post("/v1/predict", json={"observations": two}).status_code == 200  # 2 x 1 x 30 = 60
