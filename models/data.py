"""Loaders for real trajectory data (AV2, ETH/UCY, Lyft L5, interchange CSV).

Every loader returns a list of :class:`Track` (one per (scene, agent)), with times in seconds and
positions in metres in a world/city frame, sorted by ``(scene_id, agent_id)``. Static objects
(bollards, cones, signs, parked bicycles, background, ...) are dropped by the loaders because
:func:`map_agent_type` maps them to ``None``.

An agent's type is decided by a vote over its rows (trackers such as Lyft's can change the label of a
track from frame to frame): the mapped type with the most rows wins; ties go to the type that comes first
in ``AGENT_TYPES`` (vehicle, pedestrian, cyclist, unknown), and static only wins an outright majority.

The data root is never hard-coded: :func:`default_data_root` is the library's setting ``TRAJPRED_DATA_ROOT``
(``models.settings``), by default ``<repo root>/../shared/data``.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.agent_types import AGENT_TYPES
from models.settings import LibrarySettings

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AGENT_TYPES",
    "CSV_REQUIRED_COLUMNS",
    "DataFormatError",
    "Track",
    "default_data_root",
    "detect_format",
    "load_av2",
    "load_csv",
    "load_ethucy",
    "load_lyft",
    "load_tracks",
    "map_agent_type",
]

FORMATS = ("csv", "av2", "ethucy", "lyft")


def _pandas() -> Any:
    """pandas, imported by the loaders that use it: the serving path imports this module (through the model
    catalog) but never loads data, and the service does not need the data extra."""
    import pandas

    return pandas


CSV_REQUIRED_COLUMNS = ("scene_id", "agent_id", "agent_type", "t_s", "x_m", "y_m")

#: AV2 motion-forecasting scenarios are sampled at exactly 10 Hz (t = timestep * 0.1).
AV2_SCENARIO_DT_S = 0.1
#: ETH/UCY (SGAN copy): frame ids step 10 per 0.4 s, t = frame / 10 * 0.4.
ETHUCY_FRAME_STEP = 10
ETHUCY_DT_S = 0.4
#: agent id used for the recording vehicle (AV2 sensor logs, Lyft).
EGO_ID = "EGO"

# l5kit's PERCEPTION_LABELS, used when a zarr does not carry its own "labels" attribute.
LYFT_LABELS = (
    "PERCEPTION_LABEL_NOT_SET",
    "PERCEPTION_LABEL_UNKNOWN",
    "PERCEPTION_LABEL_DONTCARE",
    "PERCEPTION_LABEL_CAR",
    "PERCEPTION_LABEL_VAN",
    "PERCEPTION_LABEL_TRAM",
    "PERCEPTION_LABEL_BUS",
    "PERCEPTION_LABEL_TRUCK",
    "PERCEPTION_LABEL_EMERGENCY_VEHICLE",
    "PERCEPTION_LABEL_OTHER_VEHICLE",
    "PERCEPTION_LABEL_BICYCLE",
    "PERCEPTION_LABEL_MOTORCYCLE",
    "PERCEPTION_LABEL_CYCLIST",
    "PERCEPTION_LABEL_MOTORCYCLIST",
    "PERCEPTION_LABEL_PEDESTRIAN",
    "PERCEPTION_LABEL_ANIMAL",
    "AVRESEARCH_LABEL_DONTCARE",
)

_VEHICLE = (
    # AV2 sensor categories
    *("REGULAR_VEHICLE", "LARGE_VEHICLE", "BUS", "BOX_TRUCK", "TRUCK", "TRUCK_CAB", "VEHICULAR_TRAILER"),
    *("SCHOOL_BUS", "ARTICULATED_BUS", "MOTORCYCLE", "RAILED_VEHICLE", "EGO_VEHICLE"),
    # AV2 scenario object_type, KITTI, generic
    *("VEHICLE", "EGO", "CAR", "VAN", "TRAM"),
    # Lyft (PERCEPTION_LABEL_ prefix stripped)
    *("EMERGENCY_VEHICLE", "OTHER_VEHICLE"),
)
_PEDESTRIAN = ("PEDESTRIAN", "OFFICIAL_SIGNALER", "STROLLER", "WHEELCHAIR", "PERSON", "PERSON_SITTING")
_CYCLIST = ("CYCLIST", "BICYCLIST", "MOTORCYCLIST", "WHEELED_RIDER")
_UNKNOWN = ("UNKNOWN", "MISC", "NOT_SET")
_STATIC = (
    *("BOLLARD", "CONSTRUCTION_CONE", "CONSTRUCTION_BARREL", "SIGN", "STOP_SIGN"),
    *("MOBILE_PEDESTRIAN_CROSSING_SIGN", "MESSAGE_BOARD_TRAILER", "TRAFFIC_LIGHT_TRAILER"),
    # AV2 scenario object_type
    *("STATIC", "BACKGROUND", "CONSTRUCTION", "RIDERLESS_BICYCLE"),
    # parked bicycles (AV2 BICYCLE has no rider; riders are BICYCLIST), don't-care regions
    *("BICYCLE", "DONTCARE", "AVRESEARCH_LABEL_DONTCARE"),
)
_WORD_GROUPS: tuple[tuple[frozenset[str], str | None], ...] = (
    (frozenset({"PEDESTRIAN", "HUMAN", "PERSON", "ADULT", "CHILD", "WALKER"}), "pedestrian"),
    (frozenset({"CYCLIST", "BICYCLIST", "MOTORCYCLIST", "RIDER", "BIKER"}), "cyclist"),
    (frozenset({"BARRIER", "CONE", "TRAFFICCONE", "BOLLARD", "SIGN", "STATIC", "DEBRIS", "POLE"}), None),
    (
        frozenset(
            {"VEHICLE", "CAR", "TRUCK", "BUS", "VAN", "TRAILER", "MOTORCYCLE", "MOTORBIKE", "TAXI", "AV"}
        ),
        "vehicle",
    ),
)
_TYPE_MAP: dict[str, str | None] = {
    **{k: "vehicle" for k in _VEHICLE},
    **{k: "pedestrian" for k in _PEDESTRIAN},
    **{k: "cyclist" for k in _CYCLIST},
    **{k: "unknown" for k in _UNKNOWN},
    **dict.fromkeys(_STATIC),
}
_NONE_CODE = len(AGENT_TYPES)  # vote code of static/ignored rows


def default_data_root() -> Path:
    """``$TRAJPRED_DATA_ROOT`` or ``<repo root>/../shared/data`` (``models.settings.LibrarySettings``)."""
    return LibrarySettings().data_root


class DataFormatError(ValueError):
    """A data file that cannot be read; the message names the file, the row and the reason."""

    def __init__(
        self, path: os.PathLike[str] | str, reason: str, row: int | None = None, column: str | None = None
    ) -> None:
        self.path = str(path)
        self.reason = reason
        self.row = row
        self.column = column
        where = self.path
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason, self.row, self.column))


@dataclass(frozen=True, eq=False)
class Track:
    """One agent's trajectory. ``eq=False``: numpy fields make value equality/hashing ill-defined."""

    scene_id: str
    agent_id: str
    agent_type: str  # one of AGENT_TYPES
    t: np.ndarray  # (N,) float64 seconds, strictly increasing
    xy: np.ndarray  # (N, 2) float64 metres, world/city frame
    source: str = ""  # e.g. "av2", "ethucy", "lyft", "csv"

    def __post_init__(self) -> None:
        t = np.asarray(self.t, dtype=np.float64)
        xy = np.asarray(self.xy, dtype=np.float64)
        if t.ndim != 1 or xy.shape != (t.shape[0], 2):
            raise ValueError(f"Track {self.scene_id}/{self.agent_id}: t {t.shape} and xy {xy.shape} mismatch")
        if t.size > 1 and not np.all(np.diff(t) > 0):
            raise ValueError(f"Track {self.scene_id}/{self.agent_id}: t is not strictly increasing")
        if self.agent_type not in AGENT_TYPES:
            raise ValueError(f"Track {self.scene_id}/{self.agent_id}: bad agent_type {self.agent_type!r}")
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "xy", xy)

    def __len__(self) -> int:
        return int(self.t.shape[0])


def map_agent_type(raw: str) -> str | None:
    """Map a dataset label (AV2, Lyft, KITTI, ETH/UCY, plain) to one of AGENT_TYPES.

    Case-insensitive; ``None`` means a static/ignored object (bollards, cones, signs, parked bicycles,
    background, don't-care regions); any label not known here maps to ``"unknown"``.
    """
    key = re.sub(r"[\s\-]+", "_", str(raw).strip()).upper()
    if key.startswith("PERCEPTION_LABEL_"):
        key = key[len("PERCEPTION_LABEL_") :]
    if key in _TYPE_MAP:
        return _TYPE_MAP[key]
    # labels of other datasets (nuScenes 'vehicle.car', 'human.pedestrian.adult'; Waymo 'TYPE_CYCLIST'; ...):
    # decide by the words they contain, riders before vehicles ('vehicle.motorcycle_rider' is a cyclist)
    words = set(re.split(r"[^A-Z0-9]+", key))
    for group, label in _WORD_GROUPS:
        if words & group:
            return label
    return "unknown"


# --------------------------------------------------------------------------------------------------
# shared track builder


def _build_tracks(
    path: Path | str,
    source: str,
    scene: np.ndarray,
    agent: np.ndarray,
    raw_type: np.ndarray,
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray | None = None,
    row_label: str = "row",
) -> list[Track]:
    """Group rows by (scene, agent), sort by t, reject duplicate times, vote the agent type."""
    pd = _pandas()
    n = len(t)
    if rows is None:
        rows = np.arange(1, n + 1)
    t = np.asarray(t, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    for name, arr in (("t", t), ("x", x), ("y", y)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise DataFormatError(path, f"non-finite {name} value {arr[bad[0]]!r}", int(rows[bad[0]]))
    if n == 0:
        return []
    sc_codes, sc_uni = pd.factorize(np.asarray(scene, dtype=object))
    ag_codes, ag_uni = pd.factorize(np.asarray(agent, dtype=object))
    pair, _ = pd.factorize(sc_codes.astype(np.int64) * max(len(ag_uni), 1) + ag_codes)
    ty_codes, ty_uni = pd.factorize(np.asarray(raw_type, dtype=object))
    ty_map = np.array(
        [_NONE_CODE if (m := map_agent_type(r)) is None else AGENT_TYPES.index(m) for r in ty_uni],
        dtype=np.int64,
    )
    mapped = ty_map[ty_codes]

    order = np.lexsort((t, pair))
    p_s, t_s = pair[order], t[order]
    dup = np.flatnonzero((p_s[1:] == p_s[:-1]) & (t_s[1:] == t_s[:-1]))
    if dup.size:
        i = dup[0]
        first, second = int(rows[order[i]]), int(rows[order[i + 1]])
        raise DataFormatError(
            path,
            f"duplicate timestamp t={t_s[i + 1]!r} for scene {scene[order[i]]!r} agent "
            f"{agent[order[i]]!r} (same as {row_label} {first})",
            second,
        )
    n_pairs = int(pair.max()) + 1
    counts = np.zeros((n_pairs, _NONE_CODE + 1), dtype=np.int64)
    np.add.at(counts, (pair, mapped), 1)
    vote = counts.argmax(axis=1)  # first maximum wins -> AGENT_TYPES order, static last

    starts = np.flatnonzero(np.r_[True, p_s[1:] != p_s[:-1]])
    ends = np.r_[starts[1:], n]
    xy_s = np.column_stack([x[order], y[order]])
    tracks = []
    for s, e in zip(starts, ends, strict=True):
        p = p_s[s]
        if vote[p] == _NONE_CODE:
            continue
        i0 = order[s]
        tracks.append(
            Track(
                scene_id=str(sc_uni[sc_codes[i0]]),
                agent_id=str(ag_uni[ag_codes[i0]]),
                agent_type=AGENT_TYPES[vote[p]],
                t=t_s[s:e].copy(),
                xy=xy_s[s:e].copy(),
                source=source,
            )
        )
    tracks.sort(key=lambda tr: (tr.scene_id, tr.agent_id))
    return tracks


def _require_columns(path: Path, columns: Sequence[str], required: Sequence[str]) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataFormatError(
            path, f"missing required column(s) {missing} in header; found {list(columns)}", column=missing[0]
        )


def _check_finite(path: Path, df: pd.DataFrame, columns: Sequence[str], row_offset: int = 1) -> None:
    for c in columns:
        vals = df[c].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.flatnonzero(~np.isfinite(vals))
        if bad.size:
            raise DataFormatError(path, f"NaN/inf value {vals[bad[0]]!r}", int(bad[0]) + row_offset, c)


# --------------------------------------------------------------------------------------------------
# interchange CSV


def _numeric_column(path: Path, values: pd.Series, column: str) -> np.ndarray:
    pd = _pandas()
    num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(num))
    if bad.size:
        i = int(bad[0])
        raw = values.iloc[i]
        if raw is None or (isinstance(raw, float) and np.isnan(raw)) or str(raw).strip() == "":
            reason = "missing value"
        elif np.isnan(num[i]) and str(raw).strip().lower() not in ("nan", "+nan", "-nan"):
            reason = f"non-numeric value {raw!r}"
        else:
            reason = f"NaN/inf value {raw!r}"
        raise DataFormatError(path, reason, i + 1, column)
    return num


def _load_one_csv(path: Path) -> list[Track]:
    pd = _pandas()
    try:
        with path.open("r", newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"not a UTF-8 text file ({exc.reason})") from exc
    except csv.Error as exc:
        raise DataFormatError(path, f"unreadable CSV header ({exc})") from exc
    if header is None or not any(h.strip() for h in header):
        raise DataFormatError(path, "empty file (no header, no data rows)")
    columns = [h.strip() for h in header]
    _require_columns(path, columns, CSV_REQUIRED_COLUMNS)
    try:
        df = pd.read_csv(
            path,
            dtype=str,
            index_col=False,
            keep_default_na=False,
            encoding="utf-8-sig",
        )
    except pd.errors.ParserError as exc:
        msg = str(exc).strip()
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
        if m:
            expected, line, saw = (int(g) for g in m.groups())
            reason = f"malformed CSV: {saw} fields but the header has {expected} (file line {line})"
            raise DataFormatError(path, reason, line - 1) from exc
        raise DataFormatError(path, f"malformed CSV ({msg})") from exc
    except (ValueError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataFormatError(path, f"unreadable CSV ({exc})") from exc
    df.columns = [c.strip() for c in df.columns]
    df = df.loc[:, ~df.columns.duplicated()]
    if len(df) == 0:
        raise DataFormatError(path, "empty file (header only, no data rows)")
    strings = {}
    for c in ("scene_id", "agent_id", "agent_type"):
        col = df[c].fillna("").astype(str).str.strip()
        empty = np.flatnonzero((col == "").to_numpy())
        if empty.size:
            raise DataFormatError(path, "missing value", int(empty[0]) + 1, c)
        strings[c] = col.to_numpy(dtype=object)
    t = _numeric_column(path, df["t_s"], "t_s")
    x = _numeric_column(path, df["x_m"], "x_m")
    y = _numeric_column(path, df["y_m"], "y_m")
    return _build_tracks(
        path, "csv", strings["scene_id"], strings["agent_id"], strings["agent_type"], t, x, y
    )


def load_csv(path: os.PathLike[str] | str) -> list[Track]:
    """Read an interchange CSV (columns scene_id, agent_id, agent_type, t_s, x_m, y_m; others ignored).

    ``path`` may also be a directory: every ``*.csv`` directly in it is read.
    """
    path = _existing(path)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise DataFormatError(path, "no *.csv files in directory")
    tracks = [tr for f in files for tr in _load_one_csv(f)]
    tracks.sort(key=lambda tr: (tr.scene_id, tr.agent_id))
    return tracks


# --------------------------------------------------------------------------------------------------
# AV2


_AV2_ANN_COLUMNS = ("timestamp_ns", "track_uuid", "category", "tx_m", "ty_m", "tz_m")
_AV2_POSE_COLUMNS = ("timestamp_ns", "qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m")
_AV2_SCENARIO_COLUMNS = ("track_id", "object_type", "timestep", "position_x", "position_y")


def _read_table(path: Path, columns: Sequence[str], kind: str, optional: Sequence[str] = ()) -> pd.DataFrame:
    """Read a feather/parquet file, check the required columns, return them (+ optional ones present)."""
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    try:
        table = feather.read_table(path) if kind == "feather" else pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(path, f"cannot read {kind} file ({exc})") from exc
    names = table.schema.names
    _require_columns(path, names, columns)
    return table.select([*columns, *(c for c in optional if c in names)]).to_pandas()


def _quat_to_rot(q: np.ndarray) -> np.ndarray:
    """(N,4) quaternions (qw, qx, qy, qz) -> (N,3,3) rotation matrices (normalised first)."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def _av2_annotation_file(log_dir: Path) -> Path | None:
    preferred = log_dir / "annotations.feather"
    if preferred.is_file():
        return preferred
    found = sorted(log_dir.glob("annotations*.feather"))
    return found[0] if found else None


def _load_av2_log(log_dir: Path) -> list[Track]:
    ann_path = _av2_annotation_file(log_dir)
    if ann_path is None:
        raise DataFormatError(log_dir, "no annotations*.feather in AV2 log directory")
    pose_path = log_dir / "city_SE3_egovehicle.feather"
    if not pose_path.is_file():
        raise DataFormatError(
            pose_path,
            "missing ego pose file city_SE3_egovehicle.feather: AV2 annotations are in the ego frame and "
            "cannot be placed in the city frame without it",
        )
    ann = _read_table(ann_path, _AV2_ANN_COLUMNS, "feather")
    pose = _read_table(pose_path, _AV2_POSE_COLUMNS, "feather")
    if len(ann) == 0:
        raise DataFormatError(ann_path, "no annotation records")
    _check_finite(ann_path, ann, ("tx_m", "ty_m", "tz_m"))
    _check_finite(pose_path, pose, ("qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m"))
    ann_ts = ann["timestamp_ns"].to_numpy(dtype=np.int64)
    pose_ts = pose["timestamp_ns"].to_numpy(dtype=np.int64)
    p_order = np.argsort(pose_ts, kind="stable")
    pose_sorted = pose_ts[p_order]
    idx = np.minimum(np.searchsorted(pose_sorted, ann_ts), len(pose_sorted) - 1)
    miss = np.flatnonzero(pose_sorted[idx] != ann_ts) if len(pose_sorted) else np.arange(len(ann_ts))
    if miss.size:
        raise DataFormatError(
            ann_path,
            f"no ego pose in {pose_path.name} at annotation timestamp_ns {int(ann_ts[miss[0]])} "
            f"({miss.size} annotation records without an exact pose)",
            int(miss[0]) + 1,
        )
    pose_rows = p_order[idx]
    rot = _quat_to_rot(pose[["qw", "qx", "qy", "qz"]].to_numpy(dtype=np.float64))
    trans = pose[["tx_m", "ty_m", "tz_m"]].to_numpy(dtype=np.float64)
    p_ego = ann[["tx_m", "ty_m", "tz_m"]].to_numpy(dtype=np.float64)
    p_city = np.einsum("nij,nj->ni", rot[pose_rows], p_ego) + trans[pose_rows]

    t0 = int(ann_ts.min())
    category = ann["category"].fillna("").astype(str).to_numpy(dtype=object)
    # the ego is represented once, as EGO from the poses (annotations_with_ego also has it as a cuboid at 0)
    keep = np.array([str(c).strip().upper() != "EGO_VEHICLE" for c in category])
    ego_ts = np.unique(ann_ts)
    ego_rows = p_order[np.searchsorted(pose_sorted, ego_ts)]
    n_ego = len(ego_ts)
    log_id = log_dir.name
    rows = np.r_[np.flatnonzero(keep) + 1, -(np.arange(n_ego) + 1)]  # negative rows: synthetic EGO
    return _build_tracks(
        ann_path,
        "av2",
        np.full(int(keep.sum()) + n_ego, log_id, dtype=object),
        np.r_[ann["track_uuid"].astype(str).to_numpy(dtype=object)[keep], np.full(n_ego, EGO_ID, object)],
        np.r_[category[keep], np.full(n_ego, "EGO_VEHICLE", dtype=object)],
        np.r_[(ann_ts[keep] - t0) / 1e9, (ego_ts - t0) / 1e9],
        np.r_[p_city[keep, 0], trans[ego_rows, 0]],
        np.r_[p_city[keep, 1], trans[ego_rows, 1]],
        rows=rows,
    )


def _load_av2_scenario(path: Path) -> list[Track]:
    df = _read_table(path, _AV2_SCENARIO_COLUMNS, "parquet", optional=("scenario_id",))
    if len(df) == 0:
        raise DataFormatError(path, "no records")
    _check_finite(path, df, ("timestep", "position_x", "position_y"))
    if "scenario_id" in df.columns:
        scene = df["scenario_id"].fillna("").astype(str).to_numpy(dtype=object)
    else:
        stem = path.stem
        scene = np.full(len(df), stem.removeprefix("scenario_"), dtype=object)
    return _build_tracks(
        path,
        "av2",
        scene,
        df["track_id"].astype(str).to_numpy(dtype=object),
        df["object_type"].fillna("").astype(str).to_numpy(dtype=object),
        df["timestep"].to_numpy(dtype=np.float64) * AV2_SCENARIO_DT_S,
        df["position_x"].to_numpy(dtype=np.float64),
        df["position_y"].to_numpy(dtype=np.float64),
    )


def load_av2(path: os.PathLike[str] | str) -> list[Track]:
    """Read AV2 data: a sensor log dir, a scenario parquet, or any directory above them (recursive).

    Sensor logs: cuboid centres are moved to the city frame with the ego pose at the same timestamp
    (p_city = R(q) p_ego + t), t = seconds since the log's first annotation, scene id = log id, and the ego
    is added as agent ``EGO`` (vehicle) at every annotation timestamp. Scenarios: t = timestep * 0.1,
    scene id = scenario_id. When a parent directory is loaded, logs without a pose file are skipped with a
    warning; loading such a log directly raises :class:`DataFormatError`.
    """
    path = _existing(path)
    if path.is_file():
        if path.suffix == ".parquet":
            return _load_av2_scenario(path)
        if path.suffix == ".feather":
            return _load_av2_log(path.parent)
        raise DataFormatError(path, "not an AV2 file (expected scenario_*.parquet or *.feather)")
    if _av2_annotation_file(path) is not None:
        return _load_av2_log(path)
    log_dirs = sorted({p.parent for p in path.rglob("annotations*.feather")})
    scenarios = sorted(path.rglob("scenario_*.parquet"))
    if not log_dirs and not scenarios:
        raise DataFormatError(path, "no AV2 data (annotations*.feather or scenario_*.parquet) found")
    tracks: list[Track] = []
    for d in log_dirs:
        if not (d / "city_SE3_egovehicle.feather").is_file():
            warnings.warn(
                f"skipping AV2 log {d}: no city_SE3_egovehicle.feather (ego-frame only, no city frame)",
                UserWarning,
                stacklevel=2,
            )
            continue
        tracks.extend(_load_av2_log(d))
    for f in scenarios:
        tracks.extend(_load_av2_scenario(f))
    tracks.sort(key=lambda tr: (tr.scene_id, tr.agent_id))
    return tracks


# --------------------------------------------------------------------------------------------------
# ETH/UCY


def _id_str(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _load_ethucy_file(path: Path) -> list[Track]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"not a text file ({exc.reason})") from exc
    frames, pids, xs, ys, rows = [], [], [], [], []
    names = ("frame", "ped_id", "x", "y")
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise DataFormatError(path, f"expected 4 fields 'frame ped_id x y', got {len(fields)}", lineno)
        vals = []
        for name, f in zip(names, fields, strict=True):
            try:
                v = float(f)
            except ValueError:
                raise DataFormatError(path, f"non-numeric value {f!r}", lineno, name) from None
            if not np.isfinite(v):
                raise DataFormatError(path, f"NaN/inf value {f!r}", lineno, name)
            vals.append(v)
        frames.append(vals[0])
        pids.append(vals[1])
        xs.append(vals[2])
        ys.append(vals[3])
        rows.append(lineno)
    if not rows:
        raise DataFormatError(path, "empty file (no data rows)")
    frame = np.asarray(frames)
    uniq, inv = np.unique(np.asarray(pids), return_inverse=True)
    agent = np.asarray([_id_str(u) for u in uniq], dtype=object)[inv]
    return _build_tracks(
        path,
        "ethucy",
        np.full(len(rows), path.stem, dtype=object),
        agent,
        np.full(len(rows), "pedestrian", dtype=object),
        frame / ETHUCY_FRAME_STEP * ETHUCY_DT_S,
        np.asarray(xs),
        np.asarray(ys),
        rows=np.asarray(rows),
    )


def load_ethucy(path: os.PathLike[str] | str) -> list[Track]:
    """Read ETH/UCY ``frame ped_id x y`` text: one file or every ``*.txt`` directly in a directory.

    t = frame / 10 * 0.4 s, scene id = file stem, agent id = ped id (``"12"`` for 12.0), type pedestrian.
    """
    path = _existing(path)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise DataFormatError(path, "no *.txt files in directory")
    tracks = [tr for f in files for tr in _load_ethucy_file(f)]
    tracks.sort(key=lambda tr: (tr.scene_id, tr.agent_id))
    return tracks


# --------------------------------------------------------------------------------------------------
# Lyft L5


def _zarr_field(path: Path, group: Any, array: str, field: str) -> np.ndarray:
    try:
        return np.asarray(group[array][field])
    except (KeyError, ValueError, IndexError) as exc:
        raise DataFormatError(
            path, f"zarr array {array!r} has no field {field!r} ({exc})", column=field
        ) from exc


def load_lyft(path: os.PathLike[str] | str) -> list[Track]:
    """Read a Lyft L5 zarr (v2): agents by track id per scene, plus ``EGO`` from frames/ego_translation.

    t = (frame timestamp - scene's first frame timestamp) / 1e9, agent id = str(track_id), label =
    argmax of label_probabilities (voted per track), scene id = ``lyft_<zarr stem>_<host>`` (with the
    scene index inserted before the host when the zarr holds several scenes).
    """
    import zarr

    path = _existing(path)
    if path.is_dir() and path.suffix != ".zarr" and not (path / ".zgroup").exists():
        found = sorted(p for p in path.glob("*.zarr") if p.is_dir())
        if not found:
            raise DataFormatError(path, "no *.zarr directory found")
        merged = [tr for z in found for tr in load_lyft(z)]
        merged.sort(key=lambda tr: (tr.scene_id, tr.agent_id))
        return merged
    try:
        root = zarr.open(str(path), mode="r")
        missing = [name for name in ("frames", "agents", "scenes") if name not in root]
    except Exception as exc:  # zarr raises many types (PathNotFoundError, KeyError, ...)
        raise DataFormatError(path, f"not a Lyft L5 zarr ({exc})") from exc
    if missing:
        raise DataFormatError(path, f"not a Lyft L5 zarr: no {missing} arrays (need frames/agents/scenes)")
    labels = tuple(root.attrs.get("labels", LYFT_LABELS))
    ts = _zarr_field(path, root, "frames", "timestamp").astype(np.int64)
    agent_iv = _zarr_field(path, root, "frames", "agent_index_interval").astype(np.int64)
    ego = _zarr_field(path, root, "frames", "ego_translation").astype(np.float64)
    frame_iv = _zarr_field(path, root, "scenes", "frame_index_interval").astype(np.int64)
    hosts = _zarr_field(path, root, "scenes", "host")
    centroid = _zarr_field(path, root, "agents", "centroid").astype(np.float64)
    track_id = _zarr_field(path, root, "agents", "track_id")
    probs = _zarr_field(path, root, "agents", "label_probabilities")
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise DataFormatError(
            path, f"label_probabilities has shape {probs.shape}, expected (N, {len(labels)})"
        )
    label_idx = probs.argmax(axis=1)
    label_arr = np.asarray(labels, dtype=object)
    stem = path.stem
    tracks: list[Track] = []
    for s, (f0, f1) in enumerate(frame_iv):
        if f1 <= f0:
            continue
        scene_id = f"lyft_{stem}_{hosts[s]}" if len(frame_iv) == 1 else f"lyft_{stem}_{s:05d}_{hosts[s]}"
        a0, a1 = int(agent_iv[f0, 0]), int(agent_iv[f1 - 1, 1])
        counts = agent_iv[f0:f1, 1] - agent_iv[f0:f1, 0]
        if a1 < a0 or np.any(counts < 0) or counts.sum() != a1 - a0:
            raise DataFormatError(path, f"inconsistent frames/agent_index_interval in scene {s}")
        bad = np.flatnonzero(np.diff(ts[f0:f1]) <= 0)
        if bad.size:
            raise DataFormatError(
                path,
                f"frames/timestamp not strictly increasing in scene {s}",
                int(f0 + bad[0]) + 2,
                "timestamp",
            )
        bad = np.flatnonzero(~np.isfinite(ego[f0:f1, :2]).all(axis=1))
        if bad.size:
            raise DataFormatError(path, "NaN/inf ego position", int(f0 + bad[0]) + 1, "ego_translation")
        t_frame = (ts[f0:f1] - ts[f0]) / 1e9
        t_agent = np.repeat(t_frame, counts)
        n_fr, n_ag = f1 - f0, a1 - a0
        tracks.extend(
            _build_tracks(
                path,
                "lyft",
                np.full(n_ag + n_fr, scene_id, dtype=object),
                np.r_[track_id[a0:a1].astype(str).astype(object), np.full(n_fr, EGO_ID, dtype=object)],
                np.r_[label_arr[label_idx[a0:a1]], np.full(n_fr, "EGO_VEHICLE", dtype=object)],
                np.r_[t_agent, t_frame],
                np.r_[centroid[a0:a1, 0], ego[f0:f1, 0]],
                np.r_[centroid[a0:a1, 1], ego[f0:f1, 1]],
                rows=np.r_[np.arange(a0, a1) + 1, -(np.arange(f0, f1) + 1)],
                row_label="agent record",
            )
        )
    tracks.sort(key=lambda tr: (tr.scene_id, tr.agent_id))
    return tracks


# --------------------------------------------------------------------------------------------------
# dispatch


def _existing(path: os.PathLike[str] | str) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or directory: {p}")
    return p


def _looks_like_ethucy(path: Path) -> bool:
    """First non-empty line of a text file is 4 numbers (``frame ped_id x y``)."""
    try:
        with path.open("r", encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                if fields:
                    return len(fields) == 4 and all(_is_number(f) for f in fields)
    except (OSError, UnicodeDecodeError):
        return False
    return False


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _format_markers(p: Path, recursive: bool) -> set[str]:
    glob = p.rglob if recursive else p.glob
    found = set()
    if next(glob("annotations*.feather"), None) or next(glob("scenario_*.parquet"), None):
        found.add("av2")
    if any(d.is_dir() for d in glob("*.zarr")):
        found.add("lyft")
    if any(_looks_like_ethucy(f) for f in glob("*.txt")):
        found.add("ethucy")
    if next(glob("*.csv"), None):
        found.add("csv")
    return found


def detect_format(path: os.PathLike[str] | str) -> str:
    """Guess the format of a file or directory: "csv" | "av2" | "ethucy" | "lyft".

    Files go by suffix (.csv, .txt, .parquet/.feather, .zarr); a directory by the data files directly in
    it, or, when there are none, by the data files anywhere below it (must be a single format).
    """
    p = _existing(path)
    if p.is_file():
        suffix = p.suffix.lower()
        by_suffix = {".csv": "csv", ".txt": "ethucy", ".parquet": "av2", ".feather": "av2"}
        if suffix in by_suffix:
            return by_suffix[suffix]
        raise DataFormatError(p, f"cannot detect data format from file suffix {suffix!r}")
    if p.suffix == ".zarr" or (p / ".zgroup").exists():
        return "lyft"
    found = _format_markers(p, recursive=False)
    if "av2" in found:  # an AV2 log/scenario folder (may hold a map .json and other files)
        return "av2"
    if not found:
        found = _format_markers(p, recursive=True)
    if len(found) == 1:
        return found.pop()
    why = f"ambiguous ({', '.join(sorted(found))})" if found else "no recognised data files"
    raise DataFormatError(p, f"cannot detect data format: {why}")


_LOADERS = {"csv": load_csv, "av2": load_av2, "ethucy": load_ethucy, "lyft": load_lyft}


def load_tracks(
    path: os.PathLike[str] | str,
    fmt: str = "auto",
    agent_types: Sequence[str] | None = None,
    min_len: int = 2,
) -> list[Track]:
    """Load any supported format, keep the given agent types and tracks with >= min_len points.

    Static (None-typed) agents are always dropped; the result is sorted by (scene_id, agent_id).
    """
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in _LOADERS:
        raise ValueError(f"unknown format {fmt!r}; expected 'auto' or one of {FORMATS}")
    if isinstance(agent_types, str):
        agent_types = (agent_types,)
    wanted = set(AGENT_TYPES if agent_types is None else agent_types)
    bad = wanted - set(AGENT_TYPES)
    if bad:
        raise ValueError(f"unknown agent type(s) {sorted(bad)}; expected a subset of {AGENT_TYPES}")
    if min_len < 1:
        raise ValueError(f"min_len must be >= 1, got {min_len}")
    tracks = [tr for tr in _LOADERS[fmt](path) if tr.agent_type in wanted and len(tr) >= min_len]
    tracks.sort(key=lambda tr: (tr.scene_id, tr.agent_id))
    return tracks
