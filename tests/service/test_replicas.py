"""Online scoring behind a load balancer: replicas sharing a real Redis score every frame between them.

Each replica sees only the frames routed to it; scoring a prediction needs the agent's later observations,
which may reach another replica. The shared scoring log (``service.scoring_log``) makes any replica's A/B
report, and the sum of the replicas' Prometheus series, those of one server fed the whole stream.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from service.schemas import ABReport
from service.scoring_log import EntryDecodeError, ScoringEntry
from tests.service.conftest import MakeClient
from tests.service.helpers import metric, obs
from tests.support import Replay

#: how far a replica's figures may be from one server's (they agree to float32 rounding)
REL_TOL = 0.03


def _report(client, **params: str) -> ABReport:
    r = client.get("/v1/ab/report", params=params)
    assert r.status_code == 200, r.text
    return ABReport.model_validate(r.json())


@pytest.mark.slow
def test_round_robin_over_two_replicas_scores_like_one_server(
    make_client: MakeClient, replay: Replay, redis_url: str
):
    single = make_client()
    prefix = f"replicas-{uuid.uuid4().hex[:8]}"
    replicas = [make_client(store=redis_url, redis_key_prefix=prefix) for _ in range(2)]
    for i in range(len(replay.times)):
        body = replay.body(i)
        assert single.post("/v1/ab/predict", json=body).status_code == 200
        r = replicas[i % 2].post("/v1/ab/predict", json=body)  # round robin: each sees every other frame
        assert r.status_code == 200, r.text

    want = _report(single)
    assert want.models["ipnet"].n > 100
    for replica in replicas:
        got = _report(replica)
        for role in ("ipnet", "baseline"):
            mine, ref = got.models[role], want.models[role]
            assert mine.n == ref.n, role
            assert mine.ade_m == pytest.approx(ref.ade_m, rel=REL_TOL)
            assert mine.fde_m == pytest.approx(ref.fde_m, rel=REL_TOL)
            assert mine.ade_median_m == pytest.approx(ref.ade_median_m, rel=REL_TOL)
        assert got.ade_reduction == pytest.approx(want.ade_reduction, abs=0.005)

    # Prometheus sums the replicas: each prediction is counted once, by the replica that made it
    for model in ("ipnet", "gru"):
        for name in ("trajpred_ade_meters", "trajpred_fde_meters"):
            counts = [metric(c, f"{name}_count", model=model) for c in replicas]
            assert all(c > 0 for c in counts), counts  # both replicas made (and counted) predictions
            assert sum(counts) == metric(single, f"{name}_count", model=model)
            total = sum(metric(c, f"{name}_sum", model=model) for c in replicas)
            assert total == pytest.approx(metric(single, f"{name}_sum", model=model), rel=REL_TOL)
        matured = sum(metric(c, "trajpred_scored_predictions_total", outcome="matured") for c in replicas)
        assert matured == metric(single, "trajpred_scored_predictions_total", outcome="matured")


def test_an_ended_track_is_forgotten_by_every_replica(make_client: MakeClient, redis_url: str):
    """A DELETE on one replica ends the track's pending predictions on the others too: a new track that
    reuses the id 10 km away is never scored against the old track's predictions."""
    prefix = f"replicas-{uuid.uuid4().hex[:8]}"
    a, b = (make_client(store=redis_url, redis_key_prefix=prefix, scoring_min_steps=5) for _ in range(2))
    t0 = 1_700_000_000.0

    def stream(x0: float, start: float, frames: int) -> None:
        for k in range(frames):
            body = {"observations": [obs("car", start + 0.1 * k, x0 + 1.0 * k, 0.0, "vehicle")]}
            r = (a, b)[k % 2].post("/v1/ab/predict", json=body)
            assert r.status_code == 200, r.text

    stream(0.0, t0, 20)  # predictions pending on both replicas' scorers
    assert a.delete("/v1/agents/car").status_code == 200
    stream(10_000.0, t0 + 2.0, 45)  # the id reused 10 km away, long enough for its own predictions to mature
    for replica in (a, b):
        report = _report(replica)
        assert report.models["ipnet"].n > 0
        assert report.models["ipnet"].ade_p90_m < 100.0  # a prediction of the old track would be ~10 km off


def test_a_scoring_entry_survives_its_wire_format():
    rng = np.random.default_rng(0)
    horizons = np.round(np.arange(1, 51) * 0.1, 6)
    entry = ScoringEntry(
        origin="abc",
        ended=["gone"],
        observations=[("a", 1.0, 2.0, 3.0), ("b", 1.1, -2.0, 5e5)],
        agents=["a", "b"],
        agent_types=["vehicle", "pedestrian"],
        anchor_t=[1.0, 1.1],
        anchor_xy=np.array([[2.0, 3.0], [-2.0, 5e5]]),
        steps=[20, 31],
        step_s=[0.1, None],
        horizons_s=horizons,
        trajectories={
            m: rng.normal(size=(2, 50, 2)) * 30 + [[[2.0, 3.0]], [[-2.0, 5e5]]] for m in ("x", "x#1", "y")
        },
        # the heading, then the deviations along / across it (models with deviations only)
        deviations={
            "x": np.concatenate([[[[1.0, 0.0]], [[0.6, 0.8]]], rng.gamma(2.0, 0.5, (2, 50, 2))], axis=1)
        },
    )
    back = ScoringEntry.decode(entry.encode(scoring_horizon_s=3.0))
    assert (back.origin, back.ended, back.observations) == (entry.origin, entry.ended, entry.observations)
    assert (back.agents, back.agent_types, back.steps, back.step_s) == (
        entry.agents,
        entry.agent_types,
        entry.steps,
        entry.step_s,
    )
    kept = horizons <= 4.0 + 1e-9  # one second past the scoring horizon
    assert np.array_equal(back.horizons_s, horizons[kept])
    for m, tr in entry.trajectories.items():
        assert np.abs(back.trajectories[m] - tr[:, kept]).max() < 1e-4  # float32 offsets from the anchor
    assert set(back.deviations) == {"x"}
    dev = entry.deviations["x"]
    want = np.concatenate([dev[:, :1], dev[:, 1:][:, kept]], axis=1)
    assert np.abs(back.deviations["x"] - want).max() < 1e-6
    with pytest.raises(EntryDecodeError):
        ScoringEntry.decode(entry.encode(3.0)[:-3])
    with pytest.raises(EntryDecodeError):
        ScoringEntry.decode(b"\x05\x00\x00\x00{bad}")
