"""The `ipnet` command as a user runs it: evaluate a new interchange CSV with the shipped weights, energy."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest

from models.checkpoint import recipe_dir
from models.data import load_tracks
from models.pipeline import seed_dirs


def ipnet(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def interchange_csv(data_root, tmp_path):
    """A CSV a user would write: the interchange columns plus extras, raw type names, one AV2 log."""
    log = sorted((data_root / "av2" / "raw" / "sensor_logs").iterdir())[0]
    tracks = load_tracks(log, "av2", agent_types=["vehicle", "pedestrian"])
    path = tmp_path / "new_city.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scene_id", "agent_id", "agent_type", "t_s", "x_m", "y_m", "speed_note"])
        for tr in tracks:
            raw_type = "REGULAR_VEHICLE" if tr.agent_type == "vehicle" else "PEDESTRIAN"
            for t, (x, y) in zip(tr.t, tr.xy, strict=True):
                w.writerow(["city_x", tr.agent_id, raw_type, f"{t:.3f}", f"{x:.3f}", f"{y:.3f}", "n/a"])
    return path


def test_evaluate_a_new_interchange_csv_with_shipped_weights(interchange_csv) -> None:
    res = json.loads(ipnet("evaluate", "--data", str(interchange_csv), "--json"))
    # IPNet, every learned baseline (each seed of the served set) and the motion models
    assert set(res["models"]) == {"ipnet", "gru", "lstm", "gru_nodt", "ctgru", "cv", "ca", "ctrv"}
    assert res["protocol"]["obs_s"] == 2.0 and res["protocol"]["agent_types"] == ["vehicle"]
    for name, m in res["models"].items():
        assert m["n_windows"] > 50, name
        assert math.isfinite(m["ade_m"]) and 0 < m["ade_m"] < m["fde_m"], name
        assert set(m["horizons_s"]) == {"1", "2", "3"}
        assert m["n_seeds"] == (
            1 if name in ("cv", "ca", "ctrv") else len(seed_dirs(recipe_dir("multimodal")))
        ), name
        if name not in ("cv", "ca", "ctrv"):
            assert m["k"] == 6 and m["min_fde_k_m"] < m["fde_m"] and 0.5 < m["coverage_95"] <= 1.0, name
        assert m["n_scenes"] == 1  # the whole CSV is one scene: the interval is over the seeds alone
        assert m["ade_ci95_m"][0] <= m["ade_m"] <= m["ade_ci95_m"][1], name
    assert res["ipnet_vs_best_baseline"]["baseline"] in ("gru", "lstm", "gru_nodt", "ctgru")
    text = ipnet("evaluate", "--data", str(interchange_csv), "--agent-types", "all", "--drop-rate", "0.3")
    assert "ipnet" in text and "windows" in text and "95% interval" in text and "IPNet vs the best" in text


def test_energy_command_gives_components_ratios_sweep_and_sources(data_root) -> None:
    log = sorted((data_root / "av2" / "raw" / "sensor_logs").iterdir())[0]
    res = json.loads(ipnet("energy", "--json", "--measure-on", str(log)))
    assert set(res["models"]) == {"ipnet", "gru", "lstm"}
    for name, m in res["models"].items():
        assert m["joules_per_update"] == pytest.approx(sum(m["components"].values()), rel=1e-12), name
    ip = res["models"]["ipnet"]["components"]
    assert 0 < ip["drive"] < ip["adc"] and res["assumptions"]["mean_v2"]["source"].startswith("[M] measured")
    assert res["ratios"]["lstm_over_ipnet"] == pytest.approx(
        res["models"]["lstm"]["joules_per_update"] / res["models"]["ipnet"]["joules_per_update"]
    )
    scales = [r["time_scale"] for r in res["time_scale_sweep"]]
    assert scales[0] == pytest.approx(1e-10) and scales[-1] == pytest.approx(1e-6)
    assert all({"time_scale", "lstm_over_ipnet", "gru_over_ipnet"} <= set(r) for r in res["time_scale_sweep"])
    for name, a in res["assumptions"].items():
        assert set(a) == {"value", "unit", "source"} and a["source"][:3] in ("[S]", "[D]", "[A]", "[M]"), name
    text = ipnet("energy", "--hold", "thermal")
    assert "2874" in text and "time_scale sweep" in text and "state hold between frames: thermal" in text


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (("evaluate", "--data", "README.md"), 2, "cannot detect data format"),
        (("evaluate", "--data", "no/such/folder"), 2, "no/such/folder"),
        (
            ("bench", "--server", "http://127.0.0.1:9", "--duration", "1", "--wait", "1"),
            1,
            "not ready after 1.0 s",
        ),
        (("bench", "--server", "http://127.0.0.1:9", "--route", "ping", "--stream"), 2, "predict routes"),
    ],
)
def test_a_failing_command_prints_one_error_line_and_its_status(args, status, says) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == status, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], out.stderr


def test_a_command_without_its_extra_names_the_extra(tmp_path) -> None:
    data = tmp_path / "frames.csv"
    data.write_text("scene_id,agent_id,agent_type,t_s,x_m,y_m\ns,a,vehicle,0.0,0.0,0.0\n")
    # pandas made unimportable, as in an install of the service alone (pip install ipnet-traj)
    code = (
        "import sys; sys.modules['pandas'] = None; from service.cli import main; "
        f"sys.exit(main(['evaluate', '--data', {str(data)!r}, '--no-progress']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip() == "error: this command needs the 'data' extra: pip install 'ipnet-traj[data]'"
