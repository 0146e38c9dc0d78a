"""Real `ipnet serve` processes: streaming a real AV2 log, history, SIGTERM and restart, Redis replicas."""

from __future__ import annotations

import concurrent.futures
import json
import signal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support import Replay, Server, _wait, serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _post(server: Server, route: str, body: dict[str, Any]) -> dict[str, Any]:
    r = server.client.post(route, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _by_agent(answer: dict[str, Any], role: str | None = None) -> dict[str, np.ndarray]:
    preds = answer["predictions"][role] if role else answer["predictions"]
    return {
        p["agent_id"]: np.array([[q["timestamp"], q["x"], q["y"]] for q in p["trajectory"]]) for p in preds
    }


def _assert_same(a: dict[str, Any], b: dict[str, Any], role: str | None = None) -> None:
    pa, pb = _by_agent(a, role), _by_agent(b, role)
    assert pa.keys() == pb.keys()
    for agent in pa:
        np.testing.assert_allclose(pb[agent], pa[agent], rtol=0, atol=1e-9, err_msg=agent)


def test_stream_history_and_graceful_restart(weights: Path, replay: Replay, tmp_path: Path):
    # no periodic snapshot during the test: the file can only come from the SIGTERM shutdown
    env = {"TRAJPRED_WEIGHTS_DIR": str(weights), "TRAJPRED_SNAPSHOT_INTERVAL_S": "3600"}
    half = len(replay.times) // 2
    with serve({**env, "TRAJPRED_SNAPSHOT_PATH": str(tmp_path / "ref.snap")}, tmp_path / "ref.log") as ref:
        restarted = Server({**env, "TRAJPRED_SNAPSHOT_PATH": str(tmp_path / "b.snap")}, tmp_path / "b.log")
        try:
            restarted.wait_ready()
            for i in range(half):
                _assert_same(
                    _post(ref, "/v1/predict", replay.body(i)), _post(restarted, "/v1/predict", replay.body(i))
                )

            # predictions depend on history: same last three observations, a different past
            vehicle = next(
                t
                for t in replay.tracks
                if t.agent_type == "vehicle" and len(t.t) > 40 and np.linalg.norm(t.xy[40] - t.xy[0]) > 10.0
            )
            t, xy = vehicle.t[:41], vehicle.xy[:41]
            other = xy.copy()
            other[:-3] += np.stack([np.zeros(38), 2.5 * np.sin(np.linspace(0, np.pi, 38))], axis=1)
            answers = []
            for name, path in (("hist-a", xy), ("hist-b", other)):
                obs = [
                    {
                        "agent_id": name,
                        "timestamp": float(a),
                        "x": float(p[0]),
                        "y": float(p[1]),
                        "agent_type": "vehicle",
                    }
                    for a, p in zip(t, path, strict=True)
                ]
                answers.append(_by_agent(_post(ref, "/v1/predict", {"observations": obs}))[name][:, 1:])
            assert np.abs(answers[0] - answers[1]).max() > 1e-4  # only the neurons' memory differs

            # SIGTERM: a graceful stop writes the snapshot; the restarted server continues every track
            # uvicorn shuts down gracefully, then re-raises the signal: the exit status says SIGTERM
            assert restarted.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
            assert (tmp_path / "b.snap").is_file()
            restarted = Server(
                {**env, "TRAJPRED_SNAPSHOT_PATH": str(tmp_path / "b.snap")}, tmp_path / "b2.log"
            )
            restarted.wait_ready()
            assert restarted.client.get("/readyz").json()["snapshot"].startswith("restored")
            for i in range(half, len(replay.times)):
                want, got = (
                    _post(ref, "/v1/predict", replay.body(i)),
                    _post(restarted, "/v1/predict", replay.body(i)),
                )
                _assert_same(want, got)
                assert [p["steps"] for p in got["predictions"]] == [p["steps"] for p in want["predictions"]]
        finally:
            restarted.stop()


def test_two_replicas_on_one_redis_match_one_server(
    weights: Path, replay: Replay, redis_url: str, tmp_path: Path
):
    env = {"TRAJPRED_WEIGHTS_DIR": str(weights), "TRAJPRED_STORE": redis_url, "TRAJPRED_SNAPSHOT_PATH": ""}
    with (
        serve({**env, "TRAJPRED_REDIS_KEY_PREFIX": "replicas"}, tmp_path / "r1.log") as r1,
        serve({**env, "TRAJPRED_REDIS_KEY_PREFIX": "replicas"}, tmp_path / "r2.log") as r2,
        serve({**env, "TRAJPRED_REDIS_KEY_PREFIX": "single"}, tmp_path / "one.log") as one,
    ):
        for i in range(len(replay.times)):
            replica = (r1, r2)[i % 2]  # fed alternately, frame by frame
            want, got = (
                _post(one, "/v1/ab/predict", replay.body(i)),
                _post(replica, "/v1/ab/predict", replay.body(i)),
            )
            _assert_same(want, got, "ipnet")
            _assert_same(want, got, "baseline")

        # both replicas hammer one agent at once: every accepted observation is applied exactly once
        def send(k: int, i: int) -> int:
            body = {
                "observations": [
                    {"agent_id": "contended", "timestamp": 1000.0 + 0.1 * i, "x": float(i), "y": 0.0}
                ]
            }
            return httpx.post(f"{(r1, r2)[k % 2].url}/v1/ab/predict", json=body, timeout=30).status_code

        order = list(np.random.default_rng(3).permutation(40))
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(send, range(40), order))
        assert set(codes) <= {200, 409}
        state = r2.client.get("/v1/agents/contended").json()["models"]
        assert state["ipnet"]["steps"] == state["gru"]["steps"] == codes.count(200)


def test_access_log_is_off_by_default_and_on_when_asked(weights: Path, tmp_path: Path):
    # at log level info, where uvicorn would write its access line for every request; JSON lines by default
    env = {"TRAJPRED_WEIGHTS_DIR": str(weights), "TRAJPRED_SNAPSHOT_PATH": "", "TRAJPRED_LOG_LEVEL": "info"}
    frame = {"observations": [{"agent_id": "log-0", "timestamp": 1.0, "x": 0.0, "y": 0.0}]}
    for access, log in (("", tmp_path / "default.log"), ("true", tmp_path / "on.log")):
        with serve({**env, "TRAJPRED_ACCESS_LOG": access} if access else env, log) as server:
            r = server.client.post("/v1/predict", json=frame, headers={"X-Request-ID": "req-ok"})
            assert r.status_code == 200 and r.headers["x-request-id"] == "req-ok"
            bad = server.client.post(
                "/v1/predict", json={"observations": []}, headers={"X-Request-ID": "req-bad"}
            )
            assert bad.status_code == 422
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        assert any("Application startup complete" in x["message"] for x in lines)  # it logs at this level
        assert all({"time", "level", "logger", "message"} <= set(x) for x in lines)
        access_lines = [x for x in lines if '"POST /v1/predict HTTP/1.1"' in x["message"]]
        if access:
            assert [(x["request_id"], x["message"][-3:]) for x in access_lines] == [
                ("req-ok", "200"),
                ("req-bad", "422"),
            ], access_lines
        else:
            assert access_lines == [], access_lines


def test_the_listener_opens_before_the_models_load_and_a_failed_startup_fails_liveness(
    weights: Path, tmp_path: Path
):
    """``/healthz`` answers while the models load; a startup that cannot finish (no weights) leaves the
    service unready and fails liveness too, so that an orchestrator restarts it instead of waiting for ever."""
    empty = tmp_path / "no-weights"
    empty.mkdir()
    server = Server(
        {"TRAJPRED_WEIGHTS_DIR": str(empty), "TRAJPRED_SNAPSHOT_PATH": ""}, tmp_path / "serve.log"
    )
    try:
        _wait(lambda: server.client.get("/healthz").status_code == 503, "the failed startup", 60, server.proc)
        health = server.client.get("/healthz").json()["error"]
        assert health["code"] == "not_ready" and "startup failed" in health["message"]
        assert "not found" in health["message"]  # the missing weights are named
        ready = server.client.get("/readyz")
        assert ready.status_code == 503 and "starting" in ready.json()["error"]["message"]
        r = server.client.post(
            "/v1/predict", json={"observations": [{"agent_id": "a", "timestamp": 1.0, "x": 0.0, "y": 0.0}]}
        )
        assert r.status_code == 503 and r.headers["retry-after"]
    finally:
        server.stop()
    # with its weights, the same server becomes ready
    with serve(
        {"TRAJPRED_WEIGHTS_DIR": str(weights), "TRAJPRED_SNAPSHOT_PATH": ""}, tmp_path / "ok.log"
    ) as ok:
        assert ok.client.get("/healthz").status_code == 200
        assert ok.client.get("/readyz").json()["status"] == "ready"


def test_answers_of_every_size_in_a_row_from_one_server(weights: Path, tmp_path: Path):
    # a real server writes its answers into buffers it reuses once sent and replaces when too small: answers
    # that grow, shrink and grow again (both encodings, six futures) all arrive whole and the server lives
    import msgpack

    from clients.bench import Fleet

    env = {"TRAJPRED_WEIGHTS_DIR": str(weights), "TRAJPRED_SNAPSHOT_PATH": ""}
    with serve(env, tmp_path / "serve.log") as server:
        for k, n in enumerate([1, 10, 300, 2, 300, 40]):
            fleet = Fleet(n, f"size-{k}", 0.1)
            for encoding in ("json", "msgpack"):
                headers = {"content-type": "application/json"}
                if encoding == "msgpack":
                    headers["accept"] = "application/msgpack"
                r = server.client.post("/v1/predict?modes=6", content=fleet.frame(0), headers=headers)
                assert r.status_code == 200, r.text
                answer = r.json() if encoding == "json" else msgpack.unpackb(r.content)
                assert [p["agent_id"] for p in answer["predictions"]] == fleet.ids
                assert all(len(p["modes"]) == 6 for p in answer["predictions"])
                fleet = Fleet(n, f"size-{k}-{encoding}", 0.1)  # new agents for the second encoding
        assert server.client.get("/healthz").status_code == 200
