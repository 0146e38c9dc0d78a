"""The engine's two places to step (event loop or worker thread) and its accounting after the answer."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from tests.service.helpers import metric
from tests.support import Replay

FRAMES = 30


def _answers(client, replay: Replay) -> list[dict]:
    out = []
    for i in range(FRAMES):
        r = client.post("/v1/ab/predict", json=replay.body(i))
        assert r.status_code == 200, r.text
        out.append(r.json()["predictions"])
    return out


def test_inline_and_worker_thread_steps_answer_alike(make_client, replay: Replay):
    """Every request stepped in the worker thread, or every one on the event loop: the same answers."""
    threaded = _answers(make_client(inline_step_max_updates=0), replay)
    inline = _answers(make_client(inline_step_max_updates=1_000_000), replay)
    for a, b in zip(threaded, inline, strict=True):
        for role in ("ipnet", "baseline"):
            assert [p["agent_id"] for p in a[role]] == [p["agent_id"] for p in b[role]]
            for pa, pb in zip(a[role], b[role], strict=True):
                xa = np.array([[q["x"], q["y"]] for q in pa["trajectory"]])
                xb = np.array([[q["x"], q["y"]] for q in pb["trajectory"]])
                np.testing.assert_array_equal(xa, xb)


def test_a_failing_accounting_is_logged_and_later_requests_still_count(
    make_client, replay: Replay, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    client = make_client()
    engine = client.app.state.runtime.engine
    real = engine.scorer.observe_many
    calls = {"n": 0}

    def failing_once(observations):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("scoring bug")
        return real(observations)

    monkeypatch.setattr(engine.scorer, "observe_many", failing_once)
    with caplog.at_level(logging.ERROR, logger="service.accounting"):
        for i in range(4):
            assert (
                client.post("/v1/predict", json=replay.body(i)).status_code == 200
            )  # the answer is not hurt
        sent = sum(len(replay.body(i)["observations"]) for i in range(4))
        # every request's metrics were counted, the failing one included (they come before the scoring)
        assert metric(client, "trajpred_observations_total", model="ipnet") == sent
    assert calls["n"] == 4
    assert any("accounting of a committed request failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("baseline", ["cv", "ctrv"])
def test_motion_model_baselines_keep_their_states(make_client, replay: Replay, baseline: str):
    """``TRAJPRED_BASELINE=cv`` (no memory) or ``ctrv`` (a smoothed turn rate): non-learned models go through
    the same columnar state records."""
    client = make_client(baseline=baseline)
    for i in range(5):
        r = client.post("/v1/ab/predict", json=replay.body(i))
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["models"]["baseline"]["model"] == baseline
    agent = replay.body(4)["observations"][0]["agent_id"]
    models = client.get(f"/v1/agents/{agent}").json()["models"]
    assert models[baseline]["steps"] == models["ipnet"]["steps"] >= 1
    assert models[baseline]["neuron_temperatures_k"] is None
    engine = client.app.state.runtime.engine
    assert engine.predictors[baseline].memory_size == (0 if baseline == "cv" else 2)


def _wait_for(condition, timeout_s: float = 5.0) -> bool:
    """Poll: the test thread sees the app's event loop (another thread) only between its callbacks."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_back_to_back_answers_are_accounted_right_after_them_sparse_ones_at_the_timer(
    make_client, replay: Replay, monkeypatch: pytest.MonkeyPatch
):
    client = make_client()
    engine = client.app.state.runtime.engine
    # a delay long enough that the test tells the two paths apart by time
    monkeypatch.setattr(engine.accounting, "delay_s", 1.0)
    pending = engine.accounting
    assert client.post("/v1/predict", json=replay.body(0)).status_code == 200
    # the first answer after start has no predecessor: its accounting waits for the timer
    time.sleep(0.1)
    assert len(pending) == 1
    # the next one comes within the delay: both are accounted just after it, well before the timer
    assert client.post("/v1/predict", json=replay.body(1)).status_code == 200
    assert _wait_for(lambda: not pending, timeout_s=0.5)
    # a sparse answer again (more than the delay after the previous one): back to the timer
    time.sleep(1.2)
    assert client.post("/v1/predict", json=replay.body(2)).status_code == 200
    time.sleep(0.1)
    assert len(pending) == 1
    assert _wait_for(lambda: not pending, timeout_s=3.0)  # and the timer does it
    sent = sum(len(replay.body(i)["observations"]) for i in range(3))
    assert metric(client, "trajpred_observations_total", model="ipnet") == sent
