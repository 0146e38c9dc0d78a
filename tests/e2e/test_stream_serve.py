"""The stream on a real `ipnet serve`, through the Python client: back-pressure while the state store stalls,
and a graceful shutdown (SIGTERM) that answers every message already read before closing with 1001."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from clients.client import ApiError, AsyncTrajpredClient, StreamClosed, TrajpredClient
from clients.processes import REDIS_NO_PERSISTENCE, start_redis, stop_process
from service.schemas import ABPredictResponse, PredictResponse
from tests.support import Replay, Server, _wait, free_port, serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "stream-e2e-key-0123456789"
MAX_INFLIGHT = 2


def _gauge(server: Server, name: str) -> float:
    text = server.client.get("/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def test_client_streams_in_both_encodings_and_needs_the_key(weights: Path, tmp_path: Path, replay: Replay):
    env = {"TRAJPRED_WEIGHTS_DIR": str(weights), "TRAJPRED_API_KEYS": KEY, "TRAJPRED_SNAPSHOT_PATH": ""}
    with serve(env, tmp_path / "serve.log") as server:
        with TrajpredClient(server.url) as anonymous, pytest.raises(InvalidStatus):
            anonymous.stream()
        with TrajpredClient(server.url, api_key=KEY) as client, client.stream("ab", encoding="msgpack") as s:
            for i in range(5):
                answer = s.predict(replay.body(i)["observations"])
                assert isinstance(answer, ABPredictResponse)
                assert {p.timestamp for p in answer.predictions.ipnet} == {replay.times[i]}
            with pytest.raises(ApiError) as stale:  # frame 4 again: rejected, the stream goes on
                s.predict(replay.body(4)["observations"])
            assert stale.value.status == 409 and stale.value.code == "stale_timestamp"
            answer = s.predict(replay.body(5)["observations"])
            assert {p.timestamp for p in answer.predictions.baseline} == {replay.times[5]}

        async def run_async() -> list[PredictResponse]:
            async with (
                AsyncTrajpredClient(server.url, api_key=KEY) as client,
                client.stream("predict", layout="columns") as s,
            ):
                for i in range(6, 9):  # pipelined, then read in order
                    await s.send(replay.body(i)["observations"])
                return [await s.recv() for _ in range(3)]

        answers = asyncio.run(run_async())
        assert [a.predictions[0].timestamp for a in answers] == replay.times[6:9]


def test_back_pressure_and_a_graceful_shutdown_answer_every_message_read(
    weights: Path, tmp_path: Path, replay: Replay
):
    redis_port = free_port()
    redis = start_redis(redis_port, tmp_path, *REDIS_NO_PERSISTENCE)
    env = {
        "TRAJPRED_WEIGHTS_DIR": str(weights),
        "TRAJPRED_STORE": f"redis://127.0.0.1:{redis_port}/0",
        "TRAJPRED_STREAM_MAX_INFLIGHT": str(MAX_INFLIGHT),
        "TRAJPRED_SNAPSHOT_PATH": "",
    }
    server = Server(env, tmp_path / "serve.log").wait_ready()
    try:
        with TrajpredClient(server.url) as client, client.stream("predict") as s:
            assert s.predict(replay.body(0)["observations"]).predictions
            # the store stalls: the first message waits on it, the server reads MAX_INFLIGHT and stops
            redis.send_signal(signal.SIGSTOP)
            for i in range(1, 7):
                s.send(replay.body(i)["observations"])
            _wait(
                lambda: _gauge(server, "trajpred_stream_messages_inflight") == MAX_INFLIGHT, "the bound", 15
            )
            time.sleep(1.0)
            assert _gauge(server, "trajpred_stream_messages_inflight") == MAX_INFLIGHT  # reads nothing more
            redis.send_signal(signal.SIGCONT)
            for i in range(1, 7):  # every message answered, in order
                assert {p.timestamp for p in s.recv(timeout_s=30).predictions} == {replay.times[i]}
            assert _gauge(server, "trajpred_stream_messages_inflight") == 0

            # shutdown while messages wait on the store: those read are answered, then 1001
            redis.send_signal(signal.SIGSTOP)
            for i in range(7, 10):
                s.send(replay.body(i)["observations"])
            _wait(
                lambda: _gauge(server, "trajpred_stream_messages_inflight") == MAX_INFLIGHT, "the bound", 15
            )
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            redis.send_signal(signal.SIGCONT)
            answered = []
            with pytest.raises(StreamClosed) as closed:
                while True:
                    answered.append(s.recv(timeout_s=30))
            assert closed.value.code == 1001
            assert [a.predictions[0].timestamp for a in answered] == replay.times[7 : 7 + MAX_INFLIGHT]
        # uvicorn shuts down gracefully, then re-raises the signal: the exit status says SIGTERM
        assert server.proc.wait(30) in (0, -signal.SIGTERM)
        assert "Traceback" not in server.log()
    finally:
        redis.send_signal(signal.SIGCONT)
        server.stop()
        stop_process(redis, 10)
