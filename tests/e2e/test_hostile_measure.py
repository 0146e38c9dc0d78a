"""``python -m clients.hostile --quick``: the attack measurement runs against a real ``ipnet serve`` and an
authenticated client keeps being served under every attack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_hostile_measurement_runs_and_authenticated_clients_are_served():
    out = subprocess.run(
        [sys.executable, "-m", "clients.hostile", "--quick", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    results = json.loads(out.stdout)
    for attack in ("slow_bodies", "huge_header", "huge_url", "idle_flood", "unread_answers"):
        figures = results[attack]
        assert figures["authenticated_requests"] > 0, attack
        assert figures["authenticated_success_rate"] == 1.0, (attack, figures)
    for attack in ("huge_header", "huge_url"):
        figures = results[attack]
        assert figures["answer"].split()[1] in {"414", "431"}, figures
        assert figures["rss_after_mb"] - figures["rss_before_mb"] < 50, figures  # the request was not held
    many = results["one_agent_many_observations"]
    assert many["10000_of_one_agent"]["code"] == "too_many_observations_per_agent"
    assert many["64_of_one_agent"]["status"] == many["64_over_64_agents"]["status"] == 200
    assert results["metrics_flood"]["stream_frames"][1] > 0
