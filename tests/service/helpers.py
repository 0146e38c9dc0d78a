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
    """One sample's value (0 when the series does not exist yet)."""
    return samples(client).get((name, frozenset(labels.items())), 0.0)
