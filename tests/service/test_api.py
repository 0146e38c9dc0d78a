"""The HTTP contract through ``TestClient`` with the lifespan: predictions, state semantics, agents."""

from __future__ import annotations

import re

import numpy as np
import orjson
import pytest

from models.pipeline import load_predictors
from service.answers import _points_json_spliced
from service.schemas import ABPredictResponse, AgentSummary, PredictResponse, TrajectoryColumns
from tests.service.helpers import metric, obs
from tests.support import Replay


def _moving_vehicle(replay: Replay, min_obs: int = 40, min_path_m: float = 20.0):
    for tr in replay.tracks:
        moving = (
            len(tr.t) >= min_obs
            and np.linalg.norm(np.diff(tr.xy[:min_obs], axis=0), axis=1).sum() > min_path_m
        )
        if tr.agent_type == "vehicle" and moving:
            return tr
    pytest.fail("no moving vehicle in the replay log")


def _xy(prediction: dict) -> np.ndarray:
    return np.array([[p["x"], p["y"]] for p in prediction["trajectory"]])


def test_predict_answers_one_prediction_per_agent_from_its_newest_observation(client, replay, weights):
    horizons = load_predictors(["ipnet"], weights)["ipnet"].horizons_s
    n_points = int(np.sum(horizons <= 3.0 + 1e-9))
    previous: dict[str, float] = {}
    for i in range(3):
        body = replay.body(i)
        r = client.post("/v1/predict", json=body)
        assert r.status_code == 200, r.text
        answer = PredictResponse.model_validate(r.json())
        assert answer.model == "ipnet" and answer.model_version.startswith("ipnet-")
        sent = {o["agent_id"]: o for o in body["observations"]}
        assert [p.agent_id for p in answer.predictions] == list(dict.fromkeys(sent))
        for p in answer.predictions:
            o = sent[p.agent_id]
            assert p.timestamp == o["timestamp"] and p.agent_type == o["agent_type"]
            assert len(p.trajectory) == n_points
            np.testing.assert_allclose(
                [q.timestamp for q in p.trajectory], o["timestamp"] + horizons[:n_points]
            )
            if p.agent_id in previous:
                assert not p.new_track and p.steps >= 2
                assert p.dt_s == pytest.approx(o["timestamp"] - previous[p.agent_id])
            else:
                assert p.new_track and p.steps == 1 and p.dt_s is None
            previous[p.agent_id] = o["timestamp"]


def test_prediction_horizon_setting_limits_the_points(make_client, replay):
    c = make_client(prediction_horizon_s=1.0)
    r = c.post("/v1/predict", json=replay.body(0))
    pts = r.json()["predictions"][0]["trajectory"]
    assert len(pts) >= 1 and pts[-1]["timestamp"] - r.json()["predictions"][0]["timestamp"] <= 1.0 + 1e-9


def test_observations_of_one_agent_in_one_request_are_applied_in_timestamp_order(make_client, replay):
    tr = _moving_vehicle(replay)
    seq = [
        obs("v", float(t), float(x), float(y), "vehicle")
        for t, (x, y) in zip(tr.t[:8], tr.xy[:8], strict=True)
    ]
    one_by_one, batched = make_client(), make_client()
    for o in seq:
        last = one_by_one.post("/v1/predict", json={"observations": [o]}).json()["predictions"][0]
    shuffled = [seq[i] for i in (3, 0, 7, 5, 1, 6, 2, 4)]
    r = batched.post("/v1/predict", json={"observations": shuffled})
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert len(got) == 1 and got[0]["steps"] == 8 and got[0]["timestamp"] == seq[-1]["timestamp"]
    np.testing.assert_allclose(_xy(got[0]), _xy(last), atol=1e-9)
    assert got[0]["dt_s"] == pytest.approx(seq[-1]["timestamp"] - seq[-2]["timestamp"])


@pytest.mark.parametrize("route,model", [("/v1/predict", "ipnet"), ("/v1/baseline/predict", "gru")])
def test_prediction_depends_on_history_not_only_on_the_last_observations(client, replay, route, model):
    """Same last three observations (so the same kinematic state), different past: different prediction."""
    tr = _moving_vehicle(replay)
    k = 30
    t, xy = tr.t[: k + 1], tr.xy[: k + 1]
    other = xy.copy()
    # an earlier past that swerves: a lateral sine offset that vanishes on the last three observations
    other[:-3, 1] += 3.0 * np.sin(np.linspace(0.0, np.pi, k - 2))
    answers = {}
    for agent, path in (("past-a", xy), ("past-b", other)):
        body = {
            "observations": [
                obs(agent, float(a), float(p[0]), float(p[1]), "vehicle")
                for a, p in zip(t, path, strict=True)
            ]
        }
        r = client.post(route, json=body)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == model
        answers[agent] = _xy(r.json()["predictions"][0])
    diff = np.linalg.norm(answers["past-a"] - answers["past-b"], axis=1).max()
    # equal inputs give bit-equal outputs: 0.1 mm is far above float noise, and only memory can move it
    assert diff > 1e-4, f"{model}: the prediction ignores everything but the last observations ({diff:.2e} m)"


def test_gap_longer_than_ttl_starts_a_new_track_and_says_so(make_client):
    c = make_client(state_ttl_s=2.0)
    for t in (100.0, 100.1, 100.2):
        p = c.post("/v1/predict", json={"observations": [obs("g", t, t, 0.0)]}).json()["predictions"][0]
    assert p["steps"] == 3 and not p["new_track"]
    p = c.post("/v1/predict", json={"observations": [obs("g", 101.9, 102.0, 0.0)]}).json()["predictions"][0]
    assert p["steps"] == 4 and not p["new_track"] and p["dt_s"] == pytest.approx(1.7)
    p = c.post("/v1/predict", json={"observations": [obs("g", 104.0, 104.0, 0.0)]}).json()["predictions"][0]
    assert p["new_track"] and p["steps"] == 1 and p["dt_s"] is None
    assert c.get("/v1/agents/g").json()["models"]["ipnet"]["track_start"] == 104.0
    assert metric(c, "trajpred_new_tracks_total", model="ipnet") == 2


def test_stale_timestamp_is_rejected_with_409_and_the_request_changes_nothing(client):
    assert client.post("/v1/predict", json={"observations": [obs("s", 10.0, 0.0, 0.0)]}).status_code == 200
    before = client.get("/v1/agents/s").json()
    for t in (10.0, 9.5):
        r = client.post(
            "/v1/predict", json={"observations": [obs("fresh", 20.0, 1.0, 1.0), obs("s", t, 1.0, 0.0)]}
        )
        assert r.status_code == 409
        err = r.json()["error"]
        assert err["code"] == "stale_timestamp" and err["field"] == "timestamp" and err["index"] == 1
        assert "10.0" in err["message"]
    assert client.get("/v1/agents/fresh").status_code == 404  # the valid agent of the request was not applied
    after = client.get("/v1/agents/s").json()
    assert after["models"]["ipnet"]["steps"] == before["models"]["ipnet"]["steps"] == 1
    assert after["models"]["ipnet"]["last_timestamp"] == 10.0
    assert metric(client, "trajpred_rejected_requests_total", reason="stale_timestamp") == 2


def test_ab_predict_advances_both_models_on_the_same_observations(client, replay):
    for i in range(4):
        r = client.post("/v1/ab/predict", json=replay.body(i))
        assert r.status_code == 200, r.text
    ab = ABPredictResponse.model_validate(r.json())
    assert ab.models["ipnet"].model == "ipnet" and ab.models["baseline"].model == "gru"
    agents = list(dict.fromkeys(o["agent_id"] for o in replay.body(3)["observations"]))
    assert (
        [p.agent_id for p in ab.predictions.ipnet] == [p.agent_id for p in ab.predictions.baseline] == agents
    )
    ip, base = ab.predictions.ipnet[0], ab.predictions.baseline[0]
    assert ip.steps == base.steps and ip.timestamp == base.timestamp
    assert _xy(ip.model_dump()).shape == _xy(base.model_dump()).shape
    assert not np.allclose(_xy(ip.model_dump()), _xy(base.model_dump()))
    # shadow mode: each model has its own state, both advanced
    summary = AgentSummary.model_validate(client.get(f"/v1/agents/{agents[0]}").json())
    assert set(summary.models) == {"ipnet", "gru"}
    assert summary.models["ipnet"].steps == summary.models["gru"].steps == ip.steps


def test_agent_summary_and_end_of_track(client, replay, weights):
    tr = _moving_vehicle(replay)
    body = {
        "observations": [
            obs("a/1 x", float(t), float(x), float(y), "vehicle")
            for t, (x, y) in zip(tr.t[:12], tr.xy[:12], strict=True)
        ]
    }
    assert client.post("/v1/ab/predict", json=body).status_code == 200
    s = AgentSummary.model_validate(client.get("/v1/agents/a/1 x").json())
    ip = s.models["ipnet"]
    n_memory = load_predictors(["ipnet"], weights)["ipnet"].memory_size
    assert ip.steps == 12 and ip.last_timestamp == float(tr.t[11]) and ip.track_start == float(tr.t[0])
    assert 0.0 <= ip.age_s < 60.0 and ip.agent_type == "vehicle"
    temps = np.array(ip.neuron_temperatures_k)
    assert temps.shape == (n_memory,) and temps.min() >= 300.0 - 1e-3 and temps.max() > 300.0
    assert s.models["gru"].neuron_temperatures_k is None

    r = client.delete("/v1/agents/a/1 x")
    assert r.status_code == 200 and sorted(r.json()["deleted"]) == ["gru", "ipnet"]
    assert client.get("/v1/agents/a/1 x").status_code == 404
    assert client.delete("/v1/agents/a/1 x").status_code == 404
    assert metric(client, "trajpred_state_evictions_total", reason="ended") == 2
    p = client.post("/v1/predict", json={"observations": [obs("a/1 x", 1e4, 0.0, 0.0)]}).json()[
        "predictions"
    ][0]
    assert p["new_track"] and p["steps"] == 1


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["store"] == "memory"
    assert ready["models"]["ipnet"].startswith("ipnet-") and ready["models"]["baseline"].startswith("gru-")


def test_api_keys_guard_v1_routes_only(make_client):
    c = make_client(api_keys="first-secret-key, second-secret-key")
    body = {"observations": [obs("k", 1.0, 0.0, 0.0)]}
    for headers in ({}, {"X-API-Key": "wrong-key-000"}):
        r = c.post("/v1/predict", json=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["field"] == "X-API-Key"
        assert c.get("/v1/agents/k", headers=headers).status_code == 401
    assert (
        c.get("/v1/agents/k", headers={"X-API-Key": "second-secret-key"}).status_code == 404
    )  # nothing applied
    assert c.post("/v1/predict", json=body, headers={"X-API-Key": "first-secret-key"}).status_code == 200
    assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200
    assert metric(c, "trajpred_rejected_requests_total", reason="unauthorized") == 4


def test_idle_agents_expire_after_the_ttl(make_client):
    c = make_client(state_ttl_s=0.4, eviction_interval_s=0.05)
    c.post("/v1/ab/predict", json={"observations": [obs("idle", 1.0, 0.0, 0.0), obs("idle2", 1.0, 5.0, 0.0)]})
    assert metric(c, "trajpred_tracked_agents", model="ipnet") == 2
    import time

    deadline = time.monotonic() + 10
    while metric(c, "trajpred_state_evictions_total", reason="ttl") < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(c, "trajpred_state_evictions_total", reason="ttl") == 4  # 2 agents x 2 models
    assert c.get("/v1/agents/idle").status_code == 404
    assert metric(c, "trajpred_tracked_agents", model="ipnet") == 0


def test_oldest_agents_are_evicted_beyond_the_maximum_count(make_client):
    c = make_client(max_agents=3)
    for i in range(5):
        assert (
            c.post("/v1/predict", json={"observations": [obs(f"cap{i}", 1.0 + i, i, 0.0)]}).status_code == 200
        )
    assert [c.get(f"/v1/agents/cap{i}").status_code for i in range(5)] == [404, 404, 200, 200, 200]
    assert metric(c, "trajpred_state_evictions_total", reason="capacity") == 2
    assert metric(c, "trajpred_tracked_agents", model="ipnet") == 3


@pytest.mark.parametrize("route", ["/v1/predict", "/v1/baseline/predict", "/v1/ab/predict"])
def test_columns_layout_carries_the_same_predictions(make_client, replay, route):
    """``?layout=columns``: each trajectory as three arrays, numerically the answer of the default layout."""
    points, columns = make_client(), make_client()
    for i in range(4):
        a = points.post(route, json=replay.body(i))
        b = columns.post(route, params={"layout": "columns"}, json=replay.body(i))
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        schema = ABPredictResponse if route == "/v1/ab/predict" else PredictResponse
        pa, pb = schema.model_validate(a.json()), schema.model_validate(b.json())
        groups = (
            [(pa.predictions.ipnet, pb.predictions.ipnet), (pa.predictions.baseline, pb.predictions.baseline)]
            if isinstance(pa, ABPredictResponse)
            else [(pa.predictions, pb.predictions)]
        )
        for left, right in groups:
            assert [p.agent_id for p in left] == [p.agent_id for p in right]
            for p, q in zip(left, right, strict=True):
                assert isinstance(p.trajectory, list) and isinstance(q.trajectory, TrajectoryColumns)
                assert p.points() == q.points()  # same floats, bit for bit
                assert (p.steps, p.dt_s, p.new_track) == (q.steps, q.dt_s, q.new_track)
    # an unknown layout is a clear 422 on the query field, and changes no state
    bad = columns.post(route, params={"layout": "rows"}, json=replay.body(4))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "layout", bad.text
    # (had the rejected request been applied, this same frame would now be stale: 409)
    ok = columns.post(route, params={"layout": "columns"}, json=replay.body(4))
    assert ok.status_code == 200, ok.text


def test_points_are_written_byte_for_byte_as_the_list_of_point_objects() -> None:
    """The spliced JSON of the points layout equals orjson's encoding of one dict per point."""
    rng = np.random.default_rng(3)
    for agents, horizon in ((1, 1), (4, 30), (50, 7), (3, 0), (0, 5)):
        t = np.round(1.7e9 + rng.random((agents, 1)) + 0.1 * np.arange(1, horizon + 1), 6)
        x = np.round(rng.normal(0.0, 3e4, (agents, horizon)), 4)
        y = np.round(rng.normal(0.0, 3e4, (agents, horizon)), 4)
        if agents and horizon:  # a signed zero and an integer-valued float too
            x[:, 0], y[:, 0] = -0.0, 12.0
        expected = [
            [{"timestamp": a, "x": b, "y": c} for a, b, c in zip(tr, xr, yr, strict=True)]
            for tr, xr, yr in zip(t.tolist(), x.tolist(), y.tolist(), strict=True)
        ]
        assert orjson.dumps(_points_json_spliced(t, x, y)) == orjson.dumps(expected)  # (the compiled writer:
        # tests/service/test_jsontext.py)


def test_native_kernel_setting_picks_the_form_and_both_predict_alike(make_client, replay):
    """``TRAJPRED_NATIVE_KERNEL``: the compiled MTJ kernel and answer writer (default) or the torch form and
    orjson, same predictions."""
    fast, slow = make_client(), make_client(native_kernel=False)
    infer = {c: c.app.state.runtime.predictors["ipnet"].infer for c in (fast, slow)}
    assert infer[fast].native and not infer[slow].native
    for i in range(10):
        a, b = (c.post("/v1/predict", json=replay.body(i)) for c in (fast, slow))
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        pa, pb = a.json()["predictions"], b.json()["predictions"]
        assert [p["agent_id"] for p in pa] == [p["agent_id"] for p in pb]
        for p, q in zip(pa, pb, strict=True):
            # float32 rounding apart (tests/models/test_native.py: within 1 mm), the answer rounded to 0.1 mm
            assert np.abs(_xy(p) - _xy(q)).max() <= 1.5e-3


def test_the_docs_load_without_the_internet(client):
    page = client.get("/docs")
    assert page.status_code == 200
    scripts = re.findall(r'src="([^"]+)"', page.text) + re.findall(r'href="([^"]+\.css)"', page.text)
    assert scripts and all(s.startswith("/") for s in scripts), scripts  # nothing from another host
    for asset in scripts:
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 1000, asset
    assert client.get("/redoc").status_code == 200


def test_openapi_has_tags_examples_and_the_error_codes(client):
    spec = client.get("/openapi.json").json()
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            assert op.get("tags"), (method, path)
            assert op["responses"]["200"]["description"], (method, path)
            for status, resp in op["responses"].items():
                if "ErrorResponse" in str(resp):  # every error the service itself answers lists its codes
                    assert "`error.code`:" in resp["description"], (method, path, status)
    predict = spec["paths"]["/v1/predict"]["post"]
    assert "stale_timestamp" in predict["responses"]["409"]["description"]
    assert "implausible_motion" in predict["responses"]["422"]["description"]
    (example,) = spec["components"]["schemas"]["PredictRequest"]["examples"]
    assert client.post("/v1/predict", json=example).status_code == 200  # the documented example works
