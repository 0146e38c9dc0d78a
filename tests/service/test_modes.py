"""Several futures per agent (``?modes=K``) and per-point deviations, through the HTTP routes and the stream:
sorted probabilities that sum to 1, the most probable mode is the single answer, layouts and encodings
agree, bad values change nothing."""

from __future__ import annotations

import msgpack
import numpy as np
import orjson
import pytest

from models.pipeline import load_predictors
from service.schemas import ABPredictResponse, PredictResponse, TrajectoryColumns
from tests.service.conftest import MakeClient
from tests.service.test_stream import _close_code, _recv, _same_answers, _send
from tests.support import Replay

N_FRAMES = 25  # 2.5 s at 10 Hz: past the first observations, so the modes differ


def _frames(client, replay: Replay, path: str, params: dict, n: int = N_FRAMES) -> dict:
    answer: dict = {}
    for i in range(n):
        r = client.post(path, json=replay.body(i), params=params)
        assert r.status_code == 200, r.text
        answer = r.json()
    return answer


def test_modes_are_sorted_sum_to_one_and_lead_with_the_single_answer(
    make_client: MakeClient, replay, weights
):
    k_model = load_predictors(["ipnet"], weights)["ipnet"].n_modes
    assert k_model == 6  # the served weights: six futures
    for k in (1, 3, 6):
        answer = PredictResponse.model_validate(_frames(make_client(), replay, "/v1/predict", {"modes": k}))
        distinct = 0
        for p in answer.predictions:
            assert p.modes is not None and len(p.modes) == k
            probs = np.array([m.probability for m in p.modes])
            assert abs(probs.sum() - 1.0) <= 1e-6 and (np.diff(probs) <= 0).all()
            assert p.modes[0].trajectory == p.trajectory  # the most probable mode is the single answer
            for m in p.modes:
                assert isinstance(m.trajectory, list)
                assert all(
                    q.std_x is not None and q.std_x > 0 and q.std_y and q.std_y > 0 for q in m.trajectory
                )
            ends = np.array([[m.trajectory[-1].x, m.trajectory[-1].y] for m in p.modes])
            distinct += k > 1 and np.ptp(ends, axis=0).max() > 0.5
        if k > 1:
            assert distinct > len(answer.predictions) // 2  # the futures are not copies of one another


def test_without_modes_the_answer_is_the_single_trajectory_with_its_deviations(client, replay):
    answer = _frames(client, replay, "/v1/predict", {})
    for p in answer["predictions"]:
        assert "modes" not in p
        assert all(set(q) == {"timestamp", "x", "y", "std_x", "std_y"} for q in p["trajectory"])
        std = np.array([[q["std_x"], q["std_y"]] for q in p["trajectory"]])
        # deviations grow with the horizon (calibrated per horizon; a little noise between neighbours)
        assert std[-1].sum() > std[0].sum()


def test_single_mode_answers_equal_their_first_mode(make_client: MakeClient, replay):
    plain = _frames(make_client(), replay, "/v1/ab/predict", {})
    with_modes = _frames(make_client(), replay, "/v1/ab/predict", {"modes": 6})
    for role in ("ipnet", "baseline"):
        for a, b in zip(plain["predictions"][role], with_modes["predictions"][role], strict=True):
            assert a["trajectory"] == b["trajectory"] == b["modes"][0]["trajectory"]


def test_a_motion_baseline_serves_one_mode_with_its_fitted_deviations(make_client: MakeClient, replay):
    answer = _frames(make_client(baseline="cv"), replay, "/v1/baseline/predict", {"modes": 6})
    for p in answer["predictions"]:
        assert len(p["modes"]) == 1 and p["modes"][0]["probability"] == 1.0
        assert all(q["std_x"] > 0 and q["std_y"] > 0 for q in p["trajectory"])


@pytest.mark.parametrize(
    ("layout", "encoding"), [("columns", "json"), ("points", "msgpack"), ("columns", "msgpack")]
)
def test_layouts_and_encodings_carry_the_same_modes(
    make_client: MakeClient, replay, layout: str, encoding: str
):
    reference = _frames(make_client(), replay, "/v1/predict", {"modes": 4})
    other = make_client()
    headers = {"Accept": "application/msgpack"} if encoding == "msgpack" else {}
    for i in range(N_FRAMES):
        r = other.post(
            "/v1/predict", json=replay.body(i), params={"modes": 4, "layout": layout}, headers=headers
        )
        assert r.status_code == 200, r.text
    got = msgpack.unpackb(r.content) if encoding == "msgpack" else r.json()
    answer = PredictResponse.model_validate(got)
    for p, ref in zip(answer.predictions, reference["predictions"], strict=True):
        assert p.modes is not None
        for m, ref_m in zip(p.modes, ref["modes"], strict=True):
            assert m.probability == pytest.approx(ref_m["probability"], abs=1e-12)
            tr = m.trajectory
            if isinstance(tr, TrajectoryColumns):
                assert tr.std_x is not None and tr.std_y is not None
                points = [
                    {"timestamp": a, "x": b, "y": c, "std_x": d, "std_y": e}
                    for a, b, c, d, e in zip(tr.timestamp, tr.x, tr.y, tr.std_x, tr.std_y, strict=True)
                ]
            else:
                points = [q.model_dump() for q in tr]
            _same_answers(points, ref_m["trajectory"])


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_the_stream_answers_the_modes_of_the_http_route(make_client: MakeClient, replay, encoding: str):
    http, streamed = make_client(), make_client()
    with streamed.websocket_connect("/v1/stream?route=ab&modes=3") as ws:
        for i in range(N_FRAMES):
            want = http.post("/v1/ab/predict", json=replay.body(i), params={"modes": 3}).json()
            _send(ws, replay.body(i), encoding)
            got = _recv(ws, encoding)
            _same_answers(got, want)
    ABPredictResponse.model_validate(got)
    assert all(len(p["modes"]) == 3 for p in got["predictions"]["ipnet"])


@pytest.mark.parametrize("bad", ["0", "7", "-1", "two", "1.5"])
def test_bad_modes_are_refused_with_the_field_and_nothing_is_applied(client, replay, bad: str):
    body = replay.body(0)
    for path in ("/v1/predict", "/v1/baseline/predict", "/v1/ab/predict"):
        r = client.post(f"{path}?modes={bad}", json=body)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["field"] == "modes", error
    agent = body["observations"][0]["agent_id"]
    assert client.get(f"/v1/agents/{agent}").status_code == 404  # no state was written
    with client.websocket_connect(f"/v1/stream?modes={bad}") as ws:
        code, reason = _close_code(ws)
    assert code == 1008 and reason.startswith("modes")


def test_too_many_answer_points_counts_the_modes(make_client: MakeClient, replay):
    body = replay.body(0)
    n = len(body["observations"])
    # room for the single trajectories of the frame (30 points each), not for six modes beside them
    c = make_client(max_answer_points=n * 30)
    assert c.post("/v1/predict", json=body).status_code == 200
    r = c.post("/v1/predict", json=replay.body(1), params={"modes": 6})
    assert r.status_code == 413, r.text
    assert orjson.loads(r.content)["error"]["field"] == "observations"


def test_the_single_trajectory_set_serves_one_mode_without_deviations(make_client: MakeClient, replay):
    c = make_client(weights_dir=None, model_set="single")
    answer = _frames(c, replay, "/v1/predict", {"modes": 6}, n=3)
    for p in answer["predictions"]:
        assert len(p["modes"]) == 1 and p["modes"][0]["probability"] == 1.0
        assert set(p["trajectory"][0]) == {"timestamp", "x", "y"}  # no deviations: absent, not null
    assert answer["model_version"].startswith("ipnet-")
