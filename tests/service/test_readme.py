"""README's examples run as written: the curl body through the app gives the documented answer fields, and
the documented error body has the shape the service writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from service.schemas import PredictResponse

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _curl_examples() -> list[tuple[str, dict]]:
    """(path, body) of every ``curl ... localhost:8000/PATH ... -d '{...}'`` in README."""
    found = re.findall(r"curl -s localhost:8000(/\S+) .*?-d '(\{.*?\})'", README, flags=re.S)
    return [(path, json.loads(body)) for path, body in found]


def test_the_curl_example_answers_the_documented_fields(client):
    examples = _curl_examples()
    assert examples, "README has no curl example"
    for path, body in examples:
        r = client.post(path, json=body)
        assert r.status_code == 200, r.text
        answer = PredictResponse.model_validate(r.json())
        # "one prediction per agent, from its newest observation"
        agents = list(dict.fromkeys(o["agent_id"] for o in body["observations"]))
        assert [p.agent_id for p in answer.predictions] == agents
        documented = re.search(r"`predictions: \[\{([^}]*),\s+trajectory: \[\{([^}]*)\}", README)
        assert documented is not None
        fields = [f.strip() for f in documented.group(1).split(",")] + ["trajectory"]
        assert list(r.json()["predictions"][0]) == fields
        point = [f.strip() for f in documented.group(2).split(",")]
        assert (
            list(r.json()["predictions"][0]["trajectory"][0])
            == point
            == ["timestamp", "x", "y", "std_x", "std_y"]
        )
        assert r.headers["x-request-id"]  # the documented request id


def test_the_documented_error_body_is_what_the_service_writes(client):
    documented = re.search(r'`(\{"error": \{"status": 422.*?\}\]\}\})`', README, flags=re.S)
    assert documented is not None, "README shows no error body"
    text = re.sub(r"\s*\n\s*", " ", documented.group(1))
    doc = json.loads(text.replace('"message": "..."', '"message": "x"'))["error"]
    bad = {"observations": [{"agent_id": "a", "timestamp": 1.0, "x": 0.0, "y": 0.0}] * 3}
    bad["observations"] = [*bad["observations"], {"agent_id": "b", "timestamp": "soon", "x": 0.0, "y": 0.0}]
    err = client.post("/v1/predict", json=bad).json()["error"]
    assert set(err) == set(doc)
    assert (err["status"], err["code"], err["field"], err["index"]) == (
        doc["status"],
        doc["code"],
        doc["field"],
        doc["index"],
    )
    assert err["message"] == doc["message"]
    assert [(d["field"], d["index"]) for d in err["details"]] == [
        (d["field"], d["index"]) for d in doc["details"]
    ]
