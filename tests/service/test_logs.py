"""Request ids and the JSON log lines: echoed, generated, set on every line written during a request."""

from __future__ import annotations

import json
import logging
import re

from service.logs import REQUEST_ID, JsonFormatter, TextFormatter
from tests.service.conftest import MakeClient
from tests.service.helpers import obs

KEY = "log-test-key-0123456789"


def test_a_sane_request_id_is_echoed_and_any_other_replaced(client):
    frame = {"observations": [obs("id-0", 1.0, 0.0, 0.0)]}
    r = client.post("/v1/predict", json=frame, headers={"X-Request-ID": "frame-17.cam_2"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "frame-17.cam_2"
    generated = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    for bad in ("has spaces", "x" * 129, 'quote"d'):
        echoed = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert echoed != bad and re.fullmatch(r"[0-9a-f]{32}", echoed)


def test_refusals_carry_the_id_too(make_client: MakeClient):
    c = make_client(api_keys=KEY)
    r = c.post("/v1/predict", json={"observations": []}, headers={"X-Request-ID": "refused-1"})
    assert r.status_code == 401 and r.headers["x-request-id"] == "refused-1"


def test_the_formatters_write_the_id_of_the_running_request():
    token = REQUEST_ID.set("r-9")
    try:
        record = logging.LogRecord(
            "service.engine", logging.WARNING, __file__, 1, "slow %s", ("store",), None
        )
        line = json.loads(JsonFormatter().format(record))
        assert line["request_id"] == "r-9" and line["message"] == "slow store" and line["level"] == "warning"
        assert TextFormatter().format(record).endswith("slow store [r-9]")
    finally:
        REQUEST_ID.reset(token)
    outside = json.loads(JsonFormatter().format(record))
    assert "request_id" not in outside


def test_an_exception_is_one_json_line_with_its_traceback():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.LogRecord("service", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "failed" and "RuntimeError: boom" in line["exception"]
