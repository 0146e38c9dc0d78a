"""``WebSocket /v1/stream`` and the MessagePack encoding, in process (``TestClient``, lifespan run): the same
answers, state and errors as the HTTP routes; order; refusals and close codes."""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
import numpy as np
import orjson
import pytest
from starlette.websockets import WebSocketDisconnect

from service.answers import MSGPACK, Encoded, _msgpack_trajectories, encode
from service.jsontext import msgpack_text
from service.schemas import ABPredictResponse, ErrorResponse, PredictResponse
from tests.service.conftest import MakeClient
from tests.service.helpers import metric, obs
from tests.support import Replay

KEY = "stream-test-key-0123456789"
ROUTES = {"predict": "/v1/predict", "baseline": "/v1/baseline/predict", "ab": "/v1/ab/predict"}
N_FRAMES = 12


def _send(ws, body, encoding: str) -> None:
    if encoding == "msgpack":
        ws.send_bytes(msgpack.packb(body, use_bin_type=True))
    else:
        ws.send_text(orjson.dumps(body).decode())


def _recv(ws, encoding: str):
    message = ws.receive()
    if encoding == "msgpack":
        assert message.get("bytes") is not None, message
        return msgpack.unpackb(message["bytes"], raw=False)
    assert message.get("text") is not None, message
    return orjson.loads(message["text"])


def _close_code(ws) -> tuple[int, str]:
    message = ws.receive()
    assert message["type"] == "websocket.close", message
    return message["code"], message.get("reason", "")


def _same_answers(a, b) -> None:
    """Two answers as data: equal, numbers to 1e-9 (JSON text and MessagePack doubles of one rounding)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (a, b)
        for k in a:
            _same_answers(a[k], b[k])
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same_answers(x, y)
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-9)
    else:
        assert a == b


def _summary(client, agent: str) -> dict:
    """An agent's state summary without its age (wall-clock time since its last update)."""
    summary = client.get(f"/v1/agents/{agent}").json()
    for m in summary["models"].values():
        del m["age_s"]
    return summary


@pytest.mark.parametrize(
    ("route", "layout", "encoding"),
    [("ab", "points", "json"), ("ab", "columns", "msgpack"), ("predict", "points", "msgpack"),
     ("baseline", "columns", "json")],
)  # fmt: skip
def test_stream_answers_and_state_equal_the_http_route(
    make_client: MakeClient, replay: Replay, route: str, layout: str, encoding: str
):
    http, streamed = make_client(), make_client()
    model = ABPredictResponse if route == "ab" else PredictResponse
    params = {} if layout == "points" else {"layout": layout}
    with streamed.websocket_connect(f"/v1/stream?route={route}&layout={layout}") as ws:
        for i in range(N_FRAMES):
            expected = http.post(ROUTES[route], json=replay.body(i), params=params)
            assert expected.status_code == 200, expected.text
            _send(ws, replay.body(i), encoding)
            got = _recv(ws, encoding)
            model.model_validate(got)  # the published answer schema
            _same_answers(got, expected.json())
    agents = {o["agent_id"] for i in range(N_FRAMES) for o in replay.body(i)["observations"]}
    for agent in sorted(agents)[:10]:
        assert _summary(streamed, agent) == _summary(http, agent)
    # the same accounting: observations applied, and the stream's duration series
    for model_name in ("ipnet", "gru"):
        assert metric(streamed, "trajpred_observations_total", model=model_name) == metric(
            http, "trajpred_observations_total", model=model_name
        )
    assert metric(streamed, "trajpred_request_duration_seconds_count", route="/v1/stream") == N_FRAMES


def test_replies_come_in_order_of_the_messages(client, replay: Replay):
    with client.websocket_connect("/v1/stream?route=predict") as ws:
        for i in range(6):  # pipelined: every frame sent before any reply is read
            _send(ws, replay.body(i), "json")
        for i in range(6):
            answer = PredictResponse.model_validate(_recv(ws, "json"))
            assert {p.timestamp for p in answer.predictions} == {replay.times[i]}


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_a_rejected_message_changes_no_state_and_the_stream_stays_open(
    make_client: MakeClient, replay: Replay, encoding: str
):
    http, streamed = make_client(), make_client()
    first, second = replay.body(0), replay.body(1)
    bad = {"observations": [*second["observations"], {**second["observations"][0], "x": "far"}]}
    with streamed.websocket_connect("/v1/stream?route=ab") as ws:
        _send(ws, first, encoding)
        _recv(ws, encoding)
        _send(ws, bad, encoding)
        error = ErrorResponse.model_validate(_recv(ws, encoding)).error
        assert (error.status, error.code, error.field, error.index) == (
            422,
            "invalid_type",
            "x",
            len(second["observations"]),
        )
        # not decodable at all: the error names the body, the stream goes on
        if encoding == "msgpack":
            ws.send_bytes(b"\xc1not msgpack")
        else:
            ws.send_text('{"observations": [')
        error = ErrorResponse.model_validate(_recv(ws, encoding)).error
        assert (error.status, error.code, error.field) == (400, "malformed_json", "body")
        _send(ws, second, encoding)
        got = _recv(ws, encoding)
    http.post("/v1/ab/predict", json=first)
    _same_answers(got, http.post("/v1/ab/predict", json=second).json())
    assert metric(streamed, "trajpred_rejected_requests_total", reason="invalid_type") == 1
    assert metric(streamed, "trajpred_rejected_requests_total", reason="malformed_json") == 1


def test_without_a_valid_key_the_handshake_is_refused(make_client: MakeClient, replay: Replay):
    c = make_client(api_keys=KEY)
    for headers in ({}, {"X-API-Key": "wrong-key-0123456789abc"}):
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            c.websocket_connect("/v1/stream", headers=headers),
        ):
            pass
        assert refused.value.code == 1008
    assert metric(c, "trajpred_rejected_requests_total", reason="unauthorized") == 2
    with c.websocket_connect("/v1/stream", headers={"X-API-Key": KEY}) as ws:
        _send(ws, replay.body(0), "json")
        PredictResponse.model_validate(_recv(ws, "json"))


@pytest.mark.parametrize(("query", "word"), [("route=train", "route"), ("route=ab&layout=rows", "layout")])
def test_unknown_route_or_layout_closes_with_1008_and_the_reason(client, query: str, word: str):
    with client.websocket_connect(f"/v1/stream?{query}") as ws:
        code, reason = _close_code(ws)
    assert code == 1008 and reason.startswith(word)


def test_a_message_over_the_body_bound_closes_with_1009(make_client: MakeClient):
    c = make_client(max_body_bytes=4096)
    big = {"observations": [obs(f"a{i}", 1.0, float(i), 0.0) for i in range(100)]}
    assert len(orjson.dumps(big)) > 4096
    with c.websocket_connect("/v1/stream") as ws:
        _send(ws, {"observations": [obs("small", 1.0, 0.0, 0.0)]}, "json")
        PredictResponse.model_validate(_recv(ws, "json"))
        _send(ws, big, "json")
        code, _ = _close_code(ws)
    assert code == 1009
    assert metric(c, "trajpred_rejected_requests_total", reason="payload_too_large") == 1


def test_streams_beyond_the_bound_close_with_1013(make_client: MakeClient, replay: Replay):
    c = make_client(stream_max_connections=1)
    with c.websocket_connect("/v1/stream") as first:
        assert metric(c, "trajpred_streams_open") == 1
        with c.websocket_connect("/v1/stream") as second:
            code, reason = _close_code(second)
        assert code == 1013 and "TRAJPRED_STREAM_MAX_CONNECTIONS" in reason
        _send(first, replay.body(0), "json")  # the open stream is untouched
        PredictResponse.model_validate(_recv(first, "json"))
    assert metric(c, "trajpred_server_errors_total", reason="overloaded") == 1


@pytest.mark.parametrize("layout", ["points", "columns"])
def test_http_routes_speak_msgpack_both_ways(make_client: MakeClient, replay: Replay, layout: str):
    as_json, as_msgpack = make_client(), make_client()
    params = {} if layout == "points" else {"layout": layout}
    for i in range(3):
        expected = as_json.post("/v1/ab/predict", json=replay.body(i), params=params)
        r = as_msgpack.post(
            "/v1/ab/predict",
            content=msgpack.packb(replay.body(i), use_bin_type=True),
            params=params,
            headers={"Content-Type": MSGPACK, "Accept": MSGPACK},
        )
        assert r.status_code == 200 and r.headers["content-type"] == MSGPACK
        _same_answers(msgpack.unpackb(r.content, raw=False), expected.json())
    # a MessagePack body answered in JSON (no Accept), and a malformed one: 400 naming the body
    r = as_msgpack.post(
        "/v1/predict",
        content=msgpack.packb(replay.body(3), use_bin_type=True),
        headers={"Content-Type": MSGPACK},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    r = as_msgpack.post("/v1/predict", content=b"\xc1", headers={"Content-Type": MSGPACK})
    assert r.status_code == 400
    assert (r.json()["error"]["code"], r.json()["error"]["field"]) == ("malformed_json", "body")


def test_stream_and_http_frames_share_one_state(client, replay: Replay):
    """A client may mix the two: the stream advances the same per-agent state the HTTP routes do."""
    client.post("/v1/predict", json=replay.body(0))
    with client.websocket_connect("/v1/stream") as ws:
        _send(ws, replay.body(0), "json")  # already applied over HTTP: stale
        error = ErrorResponse.model_validate(_recv(ws, "json")).error
        assert (error.status, error.code) == (409, "stale_timestamp")
        _send(ws, replay.body(1), "json")
        answer = PredictResponse.model_validate(_recv(ws, "json"))
    steps = {p.agent_id: p.steps for p in answer.predictions}
    again = {o["agent_id"] for o in replay.body(0)["observations"]}
    assert all(steps[a] == 2 for a in steps if a in again)
    assert np.all([p.dt_s is None or p.dt_s > 0 for p in answer.predictions])


def _msgpack_rows(compiled: bool, t: Any, x: Any, y: Any, layout: Any, std: Any) -> list[bytes]:
    """Each row's MessagePack: the compiled writer's, or the numpy records of the way without it."""
    if not compiled:
        return [b"".join(parts) for parts in _msgpack_trajectories(t, x, y, layout, std)]
    written = msgpack_text(t, x, y, std=std, layout=layout)
    assert written is not None
    text, ends = written
    return [bytes(text[s:e]) for s, e in itertools.pairwise([0, *ends])]


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("with_std", [False, True])
@pytest.mark.parametrize("layout", ["points", "columns"])
@pytest.mark.parametrize(("agents", "points"), [(3, 31), (2, 15), (1, 70_000), (0, 31)])
def test_msgpack_trajectories_are_byte_for_byte_what_msgpack_packs(
    layout: str, agents: int, points: int, with_std: bool, compiled: bool
):
    rng = np.random.default_rng(agents * points)
    t, x, y, sx, sy = (rng.normal(size=(agents, points)) for _ in range(5))
    if agents:
        x[0, 0], y[-1, -1] = np.nan, np.inf
    rows = _msgpack_rows(compiled, t, x, y, layout, (sx, sy) if with_std else None)
    assert len(rows) == agents
    for i, raw in enumerate(rows):
        ti, xi, yi = t[i].tolist(), x[i].tolist(), y[i].tolist()
        cols = {"timestamp": ti, "x": xi, "y": yi}
        if with_std:
            cols |= {"std_x": sx[i].tolist(), "std_y": sy[i].tolist()}
        if layout == "columns":
            expected: object = cols
        else:
            expected = [dict(zip(cols, v, strict=True)) for v in zip(*cols.values(), strict=True)]
        assert raw == msgpack.packb(expected, use_bin_type=True)
    payload = {"model": "m", "predictions": [{"agent_id": str(i), "dt_s": None, "trajectory": Encoded([r])}
                                              for i, r in enumerate(rows)]}  # fmt: skip
    plain = {**payload, "predictions": [{**p, "trajectory": msgpack.unpackb(r)} for p, r in
                                        zip(payload["predictions"], rows, strict=True)]}  # fmt: skip
    assert encode(payload, "msgpack") == msgpack.packb(plain, use_bin_type=True)
