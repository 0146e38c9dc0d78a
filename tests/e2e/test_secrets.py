"""No secrets in logs or answers: a real `ipnet serve` with an API key and a password-protected Redis."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.service.test_faults import redis_process
from tests.support import Server, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

API_KEY = "sekrit-api-key-7f3a9c"
WRONG_KEY = "wrong-api-key-41d2e8"
REDIS_PASSWORD = "sekrit-redis-pw-92be"


def test_no_secrets_in_logs_or_answers(weights: Path, tmp_path: Path):
    port = free_port()
    log = tmp_path / "serve.log"
    answers: list[str] = []
    with redis_process(port, tmp_path, "--requirepass", REDIS_PASSWORD, password=REDIS_PASSWORD) as redis:
        server = Server(
            {
                "TRAJPRED_WEIGHTS_DIR": str(weights),
                "TRAJPRED_SNAPSHOT_PATH": "",
                "TRAJPRED_API_KEYS": API_KEY,
                "TRAJPRED_STORE": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0",
                # the most talkative the service gets
                "TRAJPRED_LOG_LEVEL": "debug",
                "TRAJPRED_ACCESS_LOG": "true",
            },
            log,
        )
        try:
            server.wait_ready()
            body = {"observations": [{"agent_id": "s1", "timestamp": 1000.0, "x": 1.0, "y": 2.0}]}
            r = server.client.post("/v1/predict", json=body, headers={"X-API-Key": WRONG_KEY})
            assert r.status_code == 401
            answers.append(r.text)
            r = server.client.post("/v1/predict", json=body, headers={"X-API-Key": API_KEY})
            assert r.status_code == 200
            redis.kill()  # the outage errors name the store: they must not name its password
            redis.wait(10)
            body["observations"][0]["timestamp"] = 1000.1
            r = server.client.post("/v1/predict", json=body, headers={"X-API-Key": API_KEY})
            assert r.status_code == 503
            answers.append(r.text)
            r = server.client.get("/readyz")
            assert r.status_code == 503 and "127.0.0.1" in r.text
            answers.append(r.text)
        finally:
            server.stop(signal.SIGTERM)
    text = log.read_text(errors="replace")
    assert "POST /v1/predict" in text and "401" in text  # the log did capture the requests
    for secret in (API_KEY, WRONG_KEY, REDIS_PASSWORD):
        assert secret not in text, f"{secret} leaked into the log"
        for answer in answers:
            assert secret not in answer, f"{secret} leaked into an answer: {answer}"
