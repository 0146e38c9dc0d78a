"""Tests for models/data.py against the real data in the shared data folder.

Each raw loader is checked against the reference conversion in the same folder's ``normalized/``:

- ``load_av2(av2/raw/sensor_logs)`` <-> ``av2/normalized/av2_sensor_logs_city_frame_10hz.csv``
- ``load_av2(av2/raw/motion_forecasting/<id>)`` <->
  ``av2/normalized/av2_motion_forecasting_scenario_10hz.csv``
- ``load_ethucy(ethucy/raw)`` <-> ``ethucy/normalized/ethucy_2p5hz.csv``
- ``load_lyft(lyft_l5/raw/single_scene.zarr)`` <-> ``lyft_l5/normalized/lyft_single_scene_10hz.csv``
- KITTI has no raw loader: ``load_csv`` reads ``kitti/normalized/kitti_tracking_10hz.csv``; every normalized
  file is also read with ``load_csv`` and compared with the same reference.

The reference tracks are built here with plain pandas from the normalized CSV (grouping, sorting, the
per-agent type vote), independently of the loaders' own grouping code; only ``map_agent_type`` is shared.

Tolerances
- positions: POS_TOL_M = 5e-4 m (+1e-6 float slack). The normalized files write x_m/y_m with 3 decimals,
  so an exact conversion differs from them by at most half a unit of the last digit; anything larger is
  a real error (a 2D-only rotation, a pose from the wrong timestamp, ... are off by cm to m).
- times: T_TOL_S = 1e-6 s. AV2 sensor logs and Lyft write t_s rounded to 1 ms, so there the loaders are
  compared with 1e-6 s against (timestamp_ns - first timestamp_ns) / 1e9 from the same CSV, and with
  5e-4 s (+1e-6) (half a unit of the written ms) against the rounded t_s column.
"""

from __future__ import annotations

import functools
import pickle
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from models.data import (
    AGENT_TYPES,
    DataFormatError,
    Track,
    default_data_root,
    detect_format,
    load_av2,
    load_csv,
    load_ethucy,
    load_lyft,
    load_tracks,
    map_agent_type,
)

POS_TOL_M = 5e-4 + 1e-6
T_TOL_S = 1e-6
T_ROUNDED_TOL_S = 5e-4 + 1e-6

AV2_LOGS = (
    "3b3570b4-7b0b-3268-a571-b0889dbf40b6",
    "3bffdcff-c3a7-38b6-a0f2-64196d130958",
    "7fab2350-7eaf-3b7e-a39d-6937a4c1bede",
    "adcf7d18-0510-35b0-a2fa-b4cea13a6d76",
)
AV2_NO_POSE_LOG = "b87683ae-14c5-321f-8af3-623e7bafc3a7"
AV2_SCENARIO = "0a1e6f0a-1817-4a98-b02e-db8c9327d151"
LYFT_SCENE = "lyft_single_scene_host-a101"

AV2_SENSOR_CSV = "av2/normalized/av2_sensor_logs_city_frame_10hz.csv"
AV2_SCENARIO_CSV = "av2/normalized/av2_motion_forecasting_scenario_10hz.csv"
ETHUCY_CSV = "ethucy/normalized/ethucy_2p5hz.csv"
LYFT_CSV = "lyft_l5/normalized/lyft_single_scene_10hz.csv"
KITTI_CSV = "kitti/normalized/kitti_tracking_10hz.csv"
NORMALIZED_CSVS = (AV2_SENSOR_CSV, AV2_SCENARIO_CSV, ETHUCY_CSV, LYFT_CSV, KITTI_CSV)


# --------------------------------------------------------------------------------------------------
# independent reference built from a normalized CSV


class Ref(NamedTuple):
    agent_type: str
    t: np.ndarray  # t_s column as written
    t_ns: np.ndarray | None  # (timestamp_ns - scene's first timestamp_ns) / 1e9, if the CSV has it
    xy: np.ndarray


_PRIORITY: dict[str | None, int] = {**{name: i for i, name in enumerate(AGENT_TYPES)}, None: len(AGENT_TYPES)}


@functools.cache
def _reference(csv_path: Path) -> dict[tuple[str, str], Ref]:
    """(scene, agent) -> Ref; agent type = most rows after mapping, ties -> AGENT_TYPES order, static last."""
    df = pd.read_csv(csv_path, dtype={"scene_id": str, "agent_id": str, "agent_type": str})
    prio_of_raw = {raw: _PRIORITY[map_agent_type(raw)] for raw in df["agent_type"].unique()}
    df["prio"] = df["agent_type"].map(prio_of_raw).astype(int)
    votes = (
        df.groupby(["scene_id", "agent_id", "prio"])
        .size()
        .rename("n")
        .reset_index()
        .sort_values(["scene_id", "agent_id", "n", "prio"], ascending=[True, True, False, True])
        .drop_duplicates(["scene_id", "agent_id"])
        .set_index(["scene_id", "agent_id"])["prio"]
    )
    has_ns = "timestamp_ns" in df.columns
    if has_ns:
        first = df.groupby("scene_id")["timestamp_ns"].transform("min")
        df["t_ns"] = (df["timestamp_ns"] - first) / 1e9
    df = df.sort_values(["scene_id", "agent_id", "t_s"], kind="stable")
    out: dict[tuple[str, str], Ref] = {}
    for key, g in df.groupby(["scene_id", "agent_id"], sort=False):
        prio = votes[key]
        if prio == len(AGENT_TYPES):  # static / ignored
            continue
        out[key] = Ref(
            AGENT_TYPES[prio],
            g["t_s"].to_numpy(np.float64),
            g["t_ns"].to_numpy(np.float64) if has_ns else None,
            g[["x_m", "y_m"]].to_numpy(np.float64),
        )
    return out


def _assert_match(
    tracks: list[Track], ref: dict[tuple[str, str], Ref], *, use_ns: bool = False, pos_tol: float = POS_TOL_M
) -> tuple[float, float]:
    """Same (scene, agent) set, types, lengths; times/positions within tolerance. Returns worst errors."""
    got = {(tr.scene_id, tr.agent_id): tr for tr in tracks}
    assert len(got) == len(tracks), "duplicate (scene_id, agent_id) in loader output"
    missing, extra = sorted(set(ref) - set(got)), sorted(set(got) - set(ref))
    assert not missing and not extra, f"missing {len(missing)} {missing[:3]}, extra {len(extra)} {extra[:3]}"
    worst_t = worst_xy = 0.0
    for key, tr in got.items():
        r = ref[key]
        assert tr.agent_type == r.agent_type, (key, tr.agent_type, r.agent_type)
        assert tr.t.shape == r.t.shape, (key, tr.t.shape, r.t.shape)
        assert tr.xy.shape == (len(r.t), 2)
        if use_ns:
            assert r.t_ns is not None
            worst_t = max(worst_t, float(np.abs(tr.t - r.t_ns).max()))
            assert np.abs(tr.t - r.t).max() <= T_ROUNDED_TOL_S, key
        else:
            worst_t = max(worst_t, float(np.abs(tr.t - r.t).max()))
        worst_xy = max(worst_xy, float(np.abs(tr.xy - r.xy).max()))
    assert worst_t <= T_TOL_S, f"worst time error {worst_t:.3g} s"
    assert worst_xy <= pos_tol, f"worst position error {worst_xy:.3g} m"
    return worst_t, worst_xy


def _assert_sorted(tracks: list[Track]) -> None:
    keys = [(tr.scene_id, tr.agent_id) for tr in tracks]
    assert keys == sorted(keys)


# --------------------------------------------------------------------------------------------------
# loaded data, shared by the tests of a module run


@pytest.fixture(scope="module")
def av2_sensor(data_root: Path) -> list[Track]:
    return load_av2(data_root / "av2/raw/sensor_logs")


@pytest.fixture(scope="module")
def lyft(data_root: Path) -> list[Track]:
    return load_lyft(data_root / "lyft_l5/raw/single_scene.zarr")


@pytest.fixture(scope="module")
def ethucy(data_root: Path) -> list[Track]:
    return load_ethucy(data_root / "ethucy/raw")


# --------------------------------------------------------------------------------------------------
# type mapping, data root, Track


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # AV2 sensor categories
        ("REGULAR_VEHICLE", "vehicle"),
        ("LARGE_VEHICLE", "vehicle"),
        ("BUS", "vehicle"),
        ("BOX_TRUCK", "vehicle"),
        ("TRUCK", "vehicle"),
        ("TRUCK_CAB", "vehicle"),
        ("VEHICULAR_TRAILER", "vehicle"),
        ("SCHOOL_BUS", "vehicle"),
        ("ARTICULATED_BUS", "vehicle"),
        ("MOTORCYCLE", "vehicle"),
        ("EGO_VEHICLE", "vehicle"),
        ("PEDESTRIAN", "pedestrian"),
        ("OFFICIAL_SIGNALER", "pedestrian"),
        ("STROLLER", "pedestrian"),
        ("WHEELCHAIR", "pedestrian"),
        ("BICYCLIST", "cyclist"),
        ("MOTORCYCLIST", "cyclist"),
        ("WHEELED_RIDER", "cyclist"),
        ("WHEELED_DEVICE", "unknown"),  # not in the table -> unknown
        # static AV2 categories and scenario types
        ("BOLLARD", None),
        ("CONSTRUCTION_CONE", None),
        ("CONSTRUCTION_BARREL", None),
        ("SIGN", None),
        ("STOP_SIGN", None),
        ("MOBILE_PEDESTRIAN_CROSSING_SIGN", None),
        ("MESSAGE_BOARD_TRAILER", None),
        ("TRAFFIC_LIGHT_TRAILER", None),
        ("BICYCLE", None),
        ("static", None),
        ("background", None),
        ("construction", None),
        ("riderless_bicycle", None),
        ("RIDERLESS_BICYCLE", None),
        # AV2 scenario object types
        ("vehicle", "vehicle"),
        ("bus", "vehicle"),
        ("pedestrian", "pedestrian"),
        ("cyclist", "cyclist"),
        ("motorcyclist", "cyclist"),
        ("unknown", "unknown"),
        # Lyft
        ("PERCEPTION_LABEL_CAR", "vehicle"),
        ("PERCEPTION_LABEL_TRUCK", "vehicle"),
        ("PERCEPTION_LABEL_PEDESTRIAN", "pedestrian"),
        ("PERCEPTION_LABEL_CYCLIST", "cyclist"),
        ("PERCEPTION_LABEL_UNKNOWN", "unknown"),
        # KITTI
        ("Car", "vehicle"),
        ("Van", "vehicle"),
        ("Truck", "vehicle"),
        ("Tram", "vehicle"),
        ("EGO", "vehicle"),
        ("Pedestrian", "pedestrian"),
        ("Person", "pedestrian"),
        ("Person_sitting", "pedestrian"),
        ("Cyclist", "cyclist"),
        ("Misc", "unknown"),
        # case-insensitive, whitespace-tolerant, unseen -> unknown
        ("  regular_vehicle ", "vehicle"),
        ("Bollard", None),
        ("hovercraft", "unknown"),
    ],
)
def test_map_agent_type(raw: str, expected: str | None) -> None:
    assert map_agent_type(raw) == expected


def test_default_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TRAJPRED_DATA_ROOT", raising=False)
    repo_root = Path(__file__).resolve().parents[2]
    assert default_data_root().resolve() == (repo_root.parent / "shared" / "data").resolve()
    monkeypatch.setenv("TRAJPRED_DATA_ROOT", str(tmp_path))
    assert default_data_root() == tmp_path


def test_track_validates_its_arrays() -> None:
    tr = Track("s", "a", "vehicle", np.array([0, 1]), np.array([[0, 0], [1, 1]]))  # ints -> float64
    assert tr.t.dtype == np.float64 and tr.xy.dtype == np.float64 and len(tr) == 2
    with pytest.raises(ValueError, match="strictly increasing"):
        Track("s", "a", "vehicle", np.array([0.0, 0.0]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="mismatch"):
        Track("s", "a", "vehicle", np.array([0.0, 0.1]), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="agent_type"):
        Track("s", "a", "car", np.array([0.0]), np.zeros((1, 2)))


# --------------------------------------------------------------------------------------------------
# raw loaders vs normalized references


def test_av2_sensor_logs_match_normalized(data_root: Path, av2_sensor: list[Track]) -> None:
    _assert_match(av2_sensor, _reference(data_root / AV2_SENSOR_CSV), use_ns=True)
    _assert_sorted(av2_sensor)
    assert {tr.scene_id for tr in av2_sensor} == set(AV2_LOGS)
    assert {tr.source for tr in av2_sensor} == {"av2"}
    # the ego, from the poses at every annotation timestamp (156-157 sweeps per log), starts at t=0
    egos = {tr.scene_id: tr for tr in av2_sensor if tr.agent_id == "EGO"}
    assert set(egos) == set(AV2_LOGS)
    assert all(e.agent_type == "vehicle" and len(e) in (156, 157) and e.t[0] == 0.0 for e in egos.values())
    # README counts for log adcf7d18: 146 tracks = 47 cars (+3 buses, 2 box trucks, 1 large vehicle, 1 truck),
    # 38 pedestrians, and 54 static (41 bollards, 6 cones, 6 signs, 1 parked bicycle) that are dropped
    adcf = Counter(tr.agent_type for tr in av2_sensor if tr.scene_id == AV2_LOGS[3])
    assert adcf == {"vehicle": 54 + 1, "pedestrian": 38}


def test_av2_scenario_matches_normalized(data_root: Path) -> None:
    tracks = load_av2(data_root / "av2/raw/motion_forecasting" / AV2_SCENARIO)
    _assert_match(tracks, _reference(data_root / AV2_SCENARIO_CSV))
    _assert_sorted(tracks)
    # README: 58 tracks = 32 vehicles (incl. the AV), 12 pedestrians, 4 riderless bicycles,
    # 8 static, 2 background (the last three are dropped)
    assert Counter(tr.agent_type for tr in tracks) == {"vehicle": 32, "pedestrian": 12}
    ids = {tr.agent_id for tr in tracks}
    assert {"138951", "AV"} <= ids  # focal track and the autonomous vehicle
    t_all = np.concatenate([tr.t for tr in tracks])
    assert t_all.min() == 0.0 and t_all.max() == pytest.approx(10.9)
    np.testing.assert_allclose(t_all * 10, np.round(t_all * 10), atol=1e-9)  # 10 Hz grid


def test_av2_single_scenario_parquet_file(data_root: Path) -> None:
    parquet = data_root / "av2/raw/motion_forecasting" / AV2_SCENARIO / f"scenario_{AV2_SCENARIO}.parquet"
    tracks = load_av2(parquet)
    assert len(tracks) == 44 and {tr.scene_id for tr in tracks} == {AV2_SCENARIO}


def test_av2_root_skips_log_without_pose(data_root: Path) -> None:
    with pytest.warns(UserWarning, match=AV2_NO_POSE_LOG):
        tracks = load_av2(data_root / "av2/raw")
    assert {tr.scene_id for tr in tracks} == {*AV2_LOGS, AV2_SCENARIO}


def test_av2_log_without_pose_is_an_error(data_root: Path) -> None:
    with pytest.raises(DataFormatError, match=r"city_SE3_egovehicle\.feather") as exc:
        load_av2(data_root / "av2/raw/sensor_logs_no_pose" / AV2_NO_POSE_LOG)
    assert AV2_NO_POSE_LOG in str(exc.value)


def test_ethucy_matches_normalized(data_root: Path, ethucy: list[Track]) -> None:
    _assert_match(ethucy, _reference(data_root / ETHUCY_CSV))
    _assert_sorted(ethucy)
    # README table: rows and pedestrians per file
    readme = {
        "biwi_eth": (5492, 360),
        "biwi_hotel": (6543, 389),
        "crowds_zara01": (5153, 148),
        "crowds_zara02": (9722, 204),
        "crowds_zara03": (5005, 137),
        "students001": (21813, 415),
        "students003": (17953, 434),
        "uni_examples": (2747, 118),
    }
    rows: Counter[str] = Counter()
    peds: Counter[str] = Counter()
    for tr in ethucy:
        rows[tr.scene_id] += len(tr)
        peds[tr.scene_id] += 1
    assert {s: (rows[s], peds[s]) for s in rows} == readme
    assert {tr.agent_type for tr in ethucy} == {"pedestrian"}


def test_ethucy_single_file(data_root: Path) -> None:
    tracks = load_ethucy(data_root / "ethucy/raw/biwi_eth.txt")
    assert len(tracks) == 360
    first = next(tr for tr in tracks if tr.agent_id == "1")
    assert first.t[0] == pytest.approx(780 / 10 * 0.4)  # first row of the file: frame 780, ped 1
    np.testing.assert_allclose(first.xy[0], [8.46, 3.59])


def test_lyft_matches_normalized(data_root: Path, lyft: list[Track]) -> None:
    _assert_match(lyft, _reference(data_root / LYFT_CSV), use_ns=True)
    _assert_sorted(lyft)
    # README: 248 frames, 20,802 agent rows, 1,653 track ids; + EGO at every frame
    assert len(lyft) == 1653 + 1
    assert sum(len(tr) for tr in lyft) == 20802 + 248
    ego = next(tr for tr in lyft if tr.agent_id == "EGO")
    assert ego.agent_type == "vehicle" and len(ego) == 248 and ego.scene_id == LYFT_SCENE
    assert ego.t[-1] == pytest.approx(24.7, abs=0.01)


def test_kitti_normalized_csv(data_root: Path) -> None:
    tracks = load_csv(data_root / KITTI_CSV)
    _assert_match(tracks, _reference(data_root / KITTI_CSV), pos_tol=1e-9)
    assert sum(len(tr) for tr in tracks) == 55270
    assert len({tr.scene_id for tr in tracks}) == 21
    # README per-type table: Car 579, Van 57, Truck 13, Tram 12, EGO 21 -> vehicle; Pedestrian 167, Person 34
    # -> pedestrian; Cyclist 37; Misc 18 -> unknown. Rows likewise.
    agents = Counter(tr.agent_type for tr in tracks)
    assert agents == {
        "vehicle": 579 + 57 + 13 + 12 + 21,
        "pedestrian": 167 + 34,
        "cyclist": 37,
        "unknown": 18,
    }
    rows: Counter[str] = Counter()
    for tr in tracks:
        rows[tr.agent_type] += len(tr)
    assert rows == {
        "vehicle": 27300 + 8008 + 3301 + 1189 + 595,
        "pedestrian": 11470 + 676,
        "cyclist": 1938,
        "unknown": 793,
    }
    egos = [tr for tr in tracks if tr.agent_id.endswith("_ego")]
    assert len(egos) == 21 and sum(len(e) for e in egos) == 8008


@pytest.mark.parametrize("rel", [AV2_SENSOR_CSV, AV2_SCENARIO_CSV, ETHUCY_CSV, LYFT_CSV])
def test_load_csv_reads_normalized_files(data_root: Path, rel: str) -> None:
    tracks = load_csv(data_root / rel)
    _assert_match(tracks, _reference(data_root / rel), pos_tol=1e-9)
    _assert_sorted(tracks)
    assert {tr.source for tr in tracks} == {"csv"}


def test_lyft_type_vote(lyft: list[Track]) -> None:
    """46 Lyft tracks change their argmax label between frames; the vote gives each one type."""
    types = {tr.agent_id: tr.agent_type for tr in lyft}
    assert types["185"] == "vehicle"  # 43 CAR rows vs 3 UNKNOWN
    assert types["363"] == "unknown"  # 92 UNKNOWN vs 9 PEDESTRIAN
    assert types["231"] == "vehicle"  # 4 CAR vs 4 UNKNOWN: tie -> the specific type
    assert types["1626"] == "pedestrian"  # 2 PEDESTRIAN vs 2 UNKNOWN
    assert Counter(types.values()) == {"vehicle": 331, "pedestrian": 27, "cyclist": 14, "unknown": 1282}


# --------------------------------------------------------------------------------------------------
# load_tracks


def test_load_tracks_filters_and_sorts(data_root: Path) -> None:
    # README: pedestrians with >= 20 observations per ETH/UCY file: 44+122+142+189+120+352+370+82
    peds = load_tracks(data_root / "ethucy/raw", agent_types=["pedestrian"], min_len=20)
    assert len(peds) == 1421 and all(len(tr) >= 20 for tr in peds)
    _assert_sorted(peds)
    # README: only 26 Lyft CAR tracks have >= 50 frames (+ the EGO)
    cars = load_tracks(
        data_root / "lyft_l5/raw/single_scene.zarr", fmt="lyft", agent_types=("vehicle",), min_len=50
    )
    assert len(cars) == 27 and {tr.agent_type for tr in cars} == {"vehicle"}
    assert len(load_tracks(data_root / "lyft_l5/raw", min_len=1)) == 1654
    assert len(load_tracks(data_root / "lyft_l5/raw")) < 1654  # default min_len=2 drops 1-frame tracks
    with pytest.raises(ValueError, match="agent type"):
        load_tracks(data_root / "ethucy/raw", agent_types=["car"])
    with pytest.raises(ValueError, match="format"):
        load_tracks(data_root / "ethucy/raw", fmt="kitti")


# --------------------------------------------------------------------------------------------------
# detect_format


@pytest.mark.parametrize(
    ("rel", "fmt"),
    [
        ("av2/raw", "av2"),
        ("av2/raw/sensor_logs", "av2"),
        (f"av2/raw/sensor_logs/{AV2_LOGS[0]}", "av2"),
        (f"av2/raw/sensor_logs_no_pose/{AV2_NO_POSE_LOG}", "av2"),
        (f"av2/raw/motion_forecasting/{AV2_SCENARIO}", "av2"),
        (f"av2/raw/motion_forecasting/{AV2_SCENARIO}/scenario_{AV2_SCENARIO}.parquet", "av2"),
        ("ethucy/raw", "ethucy"),
        ("ethucy/raw/biwi_eth.txt", "ethucy"),
        ("lyft_l5/raw", "lyft"),
        ("lyft_l5/raw/single_scene.zarr", "lyft"),
        *((rel, "csv") for rel in NORMALIZED_CSVS),
        ("kitti/normalized", "csv"),
    ],
)
def test_detect_format_real_paths(data_root: Path, rel: str, fmt: str) -> None:
    assert detect_format(data_root / rel) == fmt


def test_detect_format_csv_and_undetectable(data_root: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "tracks.csv"
    csv_file.write_text("scene_id,agent_id,agent_type,t_s,x_m,y_m\ns,a,car,0,0,0\n")
    assert detect_format(csv_file) == "csv"
    assert detect_format(tmp_path) == "csv"
    with pytest.raises(DataFormatError, match="no recognised data files"):
        detect_format(data_root / "kitti/raw")  # KITTI label/oxts text is not ETH/UCY
    with pytest.raises(DataFormatError, match="ambiguous"):
        detect_format(data_root)
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "nope")


# --------------------------------------------------------------------------------------------------
# interchange CSV: valid and malformed files

HEADER = "scene_id,agent_id,agent_type,t_s,x_m,y_m"


def test_load_csv_groups_sorts_maps_and_ignores_extras(tmp_path: Path) -> None:
    path = tmp_path / "ok.csv"
    path.write_text(
        "extra,scene_id,agent_id,agent_type,t_s,x_m,y_m\n"
        "z,s2,b,Pedestrian,0.2,5,5\n"
        "z,s1,a,regular_vehicle,0.2,2,20\n"
        "z,s1,a,REGULAR_VEHICLE,0.0,0,0\n"
        "z,s1,a,Regular_Vehicle,0.1,1,10\n"
        "z,s1,cone,CONSTRUCTION_CONE,0.0,9,9\n"
        "z,s2,b,pedestrian,0.1,4,4\n"
        "z,s1,10,MOTORCYCLIST,0.0,3,3\n"
    )
    tracks = load_csv(path)
    assert [(tr.scene_id, tr.agent_id, tr.agent_type) for tr in tracks] == [
        ("s1", "10", "cyclist"),
        ("s1", "a", "vehicle"),
        ("s2", "b", "pedestrian"),
    ]
    a = tracks[1]
    np.testing.assert_array_equal(a.t, [0.0, 0.1, 0.2])
    np.testing.assert_array_equal(a.xy, [[0, 0], [1, 10], [2, 20]])
    assert a.source == "csv"


@pytest.mark.parametrize(
    ("name", "content", "row", "needles"),
    [
        # a missing column has no data row: the message names the header instead
        ("missing_column", "scene_id,agent_id,agent_type,t_s,x_m\ns,a,car,0,1\n", None, ["header", "y_m"]),
        (
            "nonnumeric_x",
            f"{HEADER}\ns,a,car,0,1,1\ns,a,car,1,2,2\ns,a,car,2,abc,3\n",
            3,
            ["row 3", "x_m", "non-numeric", "'abc'"],
        ),
        ("nan_y", f"{HEADER}\ns,a,car,0,1,1\ns,a,car,1,2,nan\n", 2, ["row 2", "y_m", "NaN"]),
        ("inf_t", f"{HEADER}\ns,a,car,0,1,1\ns,a,car,inf,2,2\n", 2, ["row 2", "t_s", "inf"]),
        ("empty_x", f"{HEADER}\ns,a,car,0,,1\n", 1, ["row 1", "x_m", "missing value"]),
        (
            "empty_agent",
            f"{HEADER}\ns,a,car,0,1,1\ns,,car,1,1,1\n",
            2,
            ["row 2", "agent_id", "missing value"],
        ),
        (
            "duplicate_t",
            f"{HEADER}\ns,a,car,0,1,1\ns,a,car,0.1,2,2\ns,b,car,0.1,5,5\ns,a,car,0.1,3,3\n",
            4,
            ["row 4", "duplicate timestamp", "'a'", "row 2"],
        ),
        ("ragged", f"{HEADER}\ns,a,car,0,1,1\ns,a,car,1,1,1\ns,a,car,2,1,1,7\n", 3, ["row 3", "7 fields"]),
        ("empty_file", "", None, ["empty file"]),
        ("header_only", f"{HEADER}\n", None, ["no data rows"]),
    ],
)
def test_load_csv_malformed(
    tmp_path: Path, name: str, content: str, row: int | None, needles: list[str]
) -> None:
    path = tmp_path / f"{name}.csv"
    path.write_text(content)
    with pytest.raises(DataFormatError) as exc:
        load_csv(path)
    msg = str(exc.value)
    assert f"{name}.csv" in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert exc.value.row == row
    assert isinstance(exc.value, ValueError)


def test_load_csv_not_text(tmp_path: Path) -> None:
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage\x00\n\x9c")
    with pytest.raises(DataFormatError, match=r"binary\.csv"):
        load_csv(path)


def test_data_format_error_fields_and_pickle() -> None:
    err = DataFormatError("/x/y.csv", "bad value", row=7, column="x_m")
    assert str(err) == "/x/y.csv, row 7, column 'x_m': bad value"
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.reason, back.row, back.column) == ("/x/y.csv", "bad value", 7, "x_m")


def test_ethucy_malformed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("0 1 1.0 2.0\n10 1 oops 2.0\n")
    with pytest.raises(DataFormatError, match=r"bad.txt, row 2, column 'x': non-numeric"):
        load_ethucy(bad)
    dup = tmp_path / "dup.txt"
    dup.write_text("0 1 1.0 2.0\n10 1 1.5 2.0\n10 1 1.6 2.0\n")
    with pytest.raises(DataFormatError, match=r"dup.txt, row 3: duplicate timestamp"):
        load_ethucy(dup)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("vehicle.car", "vehicle"),
        ("TYPE_VEHICLE", "vehicle"),
        ("human.pedestrian.adult", "pedestrian"),
        ("TYPE_PEDESTRIAN", "pedestrian"),
        ("TYPE_CYCLIST", "cyclist"),
        ("vehicle.motorcycle_rider", "cyclist"),
        ("movable_object.barrier", None),
        ("scooter", "unknown"),
        ("BICYCLE", None),  # exact labels win: AV2's BICYCLE is a parked bicycle
    ],
)
def test_labels_of_other_datasets_map_by_their_words(raw: str, expected: str | None) -> None:
    assert map_agent_type(raw) == expected
