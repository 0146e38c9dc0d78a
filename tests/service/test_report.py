"""A real log replayed through /v1/ab/predict?modes=6: the online report and histograms (single answer and
min-of-K) match `ipnet evaluate --k 6`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.cli import main as ipnet
from service.schemas import ABReport
from tests.service.helpers import metric
from tests.support import Replay

#: relative tolerance between online and offline means. They score the same windows at the same true
#: timestamps; what differs is the history: offline restarts each model on the 2 s window, online the model
#: carries its state from the start of the track.
REL_TOL = 0.03


def _evaluate(capsys: pytest.CaptureFixture[str], data: Path, weights: Path, types: str) -> dict:
    capsys.readouterr()
    code = ipnet(
        [
            "evaluate",
            "--data",
            str(data),
            "--weights",
            str(weights),
            "--models",
            "ipnet,gru",
            "--stride-s",
            "0.1",
            "--agent-types",
            types,
            "--k",
            "6",
            "--json",
        ]
    )
    assert code == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_online_report_agrees_with_offline_evaluate(make_client, replay: Replay, weights, capsys):
    # every prediction is scored online, to compare with every offline window (stride 0.1 s below)
    client = make_client(scoring_stride_s=0.0)
    for i in range(len(replay.times)):
        r = client.post("/v1/ab/predict", json=replay.body(i), params={"modes": 6})
        assert r.status_code == 200, r.text

    report = ABReport.model_validate(client.get("/v1/ab/report", params={"agent_type": "vehicle"}).json())
    offline = _evaluate(capsys, replay.path, weights, "vehicle")
    assert offline["protocol"]["obs_s"] == 2.0 and offline["protocol"]["pred_s"] == report.horizon_s == 3.0
    for role, model in (("ipnet", "ipnet"), ("baseline", "gru")):
        online, off = report.models[role], offline["models"][model]
        # the served folder holds one seed: the offline figures are that one model's
        assert online.model == model and [online.model_version] == offline["model_versions"][model]
        # the same windows: every complete 2 s -> 3 s vehicle window of the log, anchored at every frame
        assert online.n == off["n_windows"] > 100
        assert online.ade_m == pytest.approx(off["ade_m"], rel=REL_TOL)
        assert online.fde_m == pytest.approx(off["fde_m"], rel=REL_TOL)
        # min-of-K over the 6 futures served, as `ipnet evaluate --k 6` computes them
        assert online.k == off["k"] == 6
        assert online.min_ade_k_m == pytest.approx(off["min_ade_k_m"], rel=REL_TOL)
        assert online.min_fde_k_m == pytest.approx(off["min_fde_k_m"], rel=REL_TOL)
        assert online.min_ade_k_m < online.ade_m
        assert online.miss_rate_2m == pytest.approx(off["miss_rate_2m"], abs=0.03)
        # the share of true points inside the single answer's 95% region
        assert online.coverage_95 == pytest.approx(off["coverage_95"], abs=0.03)
        for h in ("1", "2", "3"):
            got = getattr(report.horizons_s[h], role)
            assert report.horizons_s[h].n == online.n
            assert got == pytest.approx(off["horizons_s"][h], rel=REL_TOL), (role, h)
    want = 1.0 - offline["models"]["ipnet"]["ade_m"] / offline["models"]["gru"]["ade_m"]
    assert report.ade_reduction == pytest.approx(want, abs=0.02)

    # the histograms hold every matured prediction (all agent types): compare their means
    everything = _evaluate(capsys, replay.path, weights, "all")
    for model in ("ipnet", "gru"):
        off = everything["models"][model]
        for name, key in (("trajpred_ade_meters", "ade_m"), ("trajpred_fde_meters", "fde_m")):
            count = metric(client, f"{name}_count", model=model)
            assert count == off["n_windows"]
            assert metric(client, f"{name}_sum", model=model) / count == pytest.approx(off[key], rel=REL_TOL)
        for name, key in (
            ("trajpred_min_ade_meters", "min_ade_k_m"),
            ("trajpred_min_fde_meters", "min_fde_k_m"),
        ):
            count = metric(client, f"{name}_count", model=model)
            assert count == off["n_windows"]
            assert metric(client, f"{name}_sum", model=model) / count == pytest.approx(off[key], rel=REL_TOL)
        misses = metric(client, "trajpred_misses_total", model=model)
        assert misses / off["n_windows"] == pytest.approx(off["miss_rate_2m"], abs=0.03)
        inside = metric(client, "trajpred_covered_points_total", model=model)
        assert inside / metric(client, "trajpred_scored_points_total", model=model) == pytest.approx(
            off["coverage_95"], abs=0.03
        )
        for h in ("1", "2", "3"):
            count = metric(client, "trajpred_displacement_error_meters_count", model=model, horizon_s=h)
            total = metric(client, "trajpred_displacement_error_meters_sum", model=model, horizon_s=h)
            assert count == off["n_windows"]
            assert total / count == pytest.approx(off["horizons_s"][h], rel=REL_TOL)
    assert (
        metric(client, "trajpred_scored_predictions_total", outcome="matured")
        == everything["models"]["ipnet"]["n_windows"]
    )
