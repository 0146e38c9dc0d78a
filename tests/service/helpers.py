"""Small helpers for the service tests (metrics parsing, observation builders)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families


def obs(agent: str, t: float, x: float, y: float, agent_type: str | None = None) -> dict[str, Any]:
    o: dict[str, Any] = {"agent_id": agent, "timestamp": t, "x": x, "y": y}
    if agent_type is not None:
        o["agent_type"] = agent_type
    return o


def samples(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``/metrics``: (name, labels) -> value."""
    r = client.get("/metrics")
    assert r.status_code == 200
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(client: TestClient, name: str, **labels: str) -> float:
    """The sum over the samples of ``name`` that carry ``labels`` (0 when none exists yet).

    Labels left out are summed over, as PromQL's ``sum without`` would (e.g. the ``interval`` regime).
    """
    want = set(labels.items())
    return sum(v for (n, ls), v in samples(client).items() if n == name and want <= ls)
