"""``trajpred_max_agents``: the capacity as a series, for the tracked-agents-near-capacity alert."""

from __future__ import annotations

from tests.service.helpers import metric, obs


def test_capacity_gauge_is_the_setting_and_tracked_agents_reach_it(make_client):
    client = make_client(max_agents=3)
    assert metric(client, "trajpred_max_agents") == 3
    body = {"observations": [obs(f"a{i}", 1000.0, float(i), 0.0) for i in range(5)]}
    assert client.post("/v1/predict", json=body).status_code == 200
    # what the alert divides: tracked agents per model over the capacity
    assert metric(client, "trajpred_tracked_agents", model="ipnet") == 3
    assert metric(client, "trajpred_state_evictions_total", reason="capacity") == 2
