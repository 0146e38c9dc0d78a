"""Answers of the predict routes as data, and their encodings (JSON, MessagePack): shared by the HTTP routes
and the stream (``service.stream``), so both answer byte for byte the same objects."""

from __future__ import annotations

import math
from typing import Any, Literal

import msgpack
import numpy as np
import orjson

from service.engine import TIME_DECIMALS, Engine
from service.frames import Predictions
from service.jsontext import points_rows
from service.schemas import POSITION_DECIMALS, Layout

Encoding = Literal["json", "msgpack"]
MSGPACK = "application/msgpack"

_KEYS = (b'{"timestamp":', b',"x":', b',"y":', b',"std_x":', b',"std_y":')
Std = tuple[np.ndarray, np.ndarray] | None  # (std_x, std_y), each (A, P), or none


def _points_json(
    t: np.ndarray, x: np.ndarray, y: np.ndarray, compiled: bool = True, std: Std = None
) -> list[orjson.Fragment]:
    """Each row's trajectory as the JSON of a list of ``{"timestamp", "x", "y"[, "std_x", "std_y"]}`` points,
    one fragment per row.

    The compiled writer (``service.jsontext``) when every value is in its exact range, else this: orjson
    writes every number of the batch in one call and the keys are spliced in by list slicing (C loops), so
    no Python dict exists per point. Both are byte for byte what ``orjson.dumps`` gives for the list of
    dicts (``tests/service/test_api.py`` and ``test_jsontext.py`` check it).
    """
    rows = points_rows(t, x, y, TIME_DECIMALS, POSITION_DECIMALS, compiled, std)
    if rows is not None:
        return [orjson.Fragment(r) for r in rows]
    return _points_json_spliced(t, x, y, std)


def _points_json_spliced(
    t: np.ndarray, x: np.ndarray, y: np.ndarray, std: Std = None
) -> list[orjson.Fragment]:
    """:func:`_points_json` for any values (NaN as null, orjson's exponent notation): the slower way."""
    a, k = t.shape
    if a == 0 or k == 0:
        return [orjson.Fragment(b"[]") for _ in range(a)]
    n = a * k
    cols = [t, x, y, *(std or ())]
    c = len(cols)
    nums = orjson.dumps(np.stack(cols, axis=-1).ravel(), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")
    w = 2 * c + 1  # a key and a number per value, then the point's close
    parts: list[bytes] = [b""] * (w * n)
    for j in range(c):
        parts[2 * j :: w] = [_KEYS[j]] * n
        parts[2 * j + 1 :: w] = nums[j::c]
    parts[w - 1 :: w] = [b"},"] * n
    step = w * k
    parts[step - 1 :: step] = [b"}"] * a  # no comma after a row's last point
    return [orjson.Fragment(b"[" + b"".join(parts[i * step : (i + 1) * step]) + b"]") for i in range(a)]


def _trajectories(
    t: np.ndarray, xy: np.ndarray, std: np.ndarray | None, layout: Layout, encoding: Encoding, compiled: bool
) -> list[Any]:
    """Each row's trajectory in the answer's layout and encoding: ``t`` (A, P), ``xy`` and ``std`` (A, P, 2).

    Positions and deviations are rounded to 0.1 mm (far below any prediction error; full float64 digits made
    the answer a third longer and slower to write and to parse)."""
    xs = np.round(xy[..., 0], POSITION_DECIMALS)
    ys = np.round(xy[..., 1], POSITION_DECIMALS)
    sd: Std = None
    if std is not None:
        sd = (np.round(std[..., 0], POSITION_DECIMALS), np.round(std[..., 1], POSITION_DECIMALS))
    if encoding == "msgpack":
        return _msgpack_trajectories(t, xs, ys, layout, sd)
    if layout == "columns":
        # numpy rows per agent, written by orjson directly
        if sd is None:
            return [{"timestamp": t[i], "x": xs[i], "y": ys[i]} for i in range(len(t))]
        return [
            {"timestamp": t[i], "x": xs[i], "y": ys[i], "std_x": sd[0][i], "std_y": sd[1][i]}
            for i in range(len(t))
        ]
    return _points_json(t, xs, ys, compiled, sd)


def _predictions(
    p: Predictions, layout: Layout = "points", encoding: Encoding = "json", compiled: bool = True
) -> list[Any]:
    """One model's answers as plain JSON data (the :class:`Prediction` schema), one dict per agent; with
    ``encoding="msgpack"`` each answer already encoded (:class:`RawMsgpack`).

    Built directly (not through pydantic) because a frame of a few hundred agents has thousands of points,
    and from whole-batch conversions rather than per agent; ``tests/service`` validates answers against the
    response schemas. With ``p.show_modes`` each answer also lists the served modes with their probabilities.
    """
    dts = [None if math.isnan(d) else d for d in p.dt_s.tolist()]
    heads = zip(
        p.agent_ids,
        p.timestamps.tolist(),
        p.steps.tolist(),
        p.new_track.tolist(),
        dts,
        p.agent_types,
        strict=True,
    )
    ts = np.ascontiguousarray(p.trajectory_t, dtype=np.float64)
    a, k = p.probs.shape
    if p.show_modes:
        # every mode's trajectory in one batch (row i * K + j: agent i's mode j); the first is the answer's
        std = None if p.modes_std is None else p.modes_std.reshape(a * k, -1, 2)
        flat = _trajectories(
            np.repeat(ts, k, axis=0), p.modes_xy.reshape(a * k, -1, 2), std, layout, encoding, compiled
        )
        probs = p.probs.tolist()
        modes: list[Any] = [
            [{"probability": probs[i][j], "trajectory": flat[i * k + j]} for j in range(k)] for i in range(a)
        ]
        trajectories: list[Any] = flat[::k]
    else:
        trajectories = _trajectories(ts, p.trajectory_xy, p.trajectory_std, layout, encoding, compiled)
    answers = [
        {
            "agent_id": agent,
            "timestamp": stamp,
            "steps": steps,
            "new_track": new,
            "dt_s": dt,
            "agent_type": kind,
            "trajectory": trajectory,
        }
        for (agent, stamp, steps, new, dt, kind), trajectory in zip(heads, trajectories, strict=True)
    ]
    if p.show_modes:
        for d, m in zip(answers, modes, strict=True):
            d["modes"] = m
    if encoding == "msgpack":
        # each answer packed with a nil trajectory (its last value, one byte 0xc0) that the pre-encoded
        # trajectory replaces; the modes (after it) by _pack, their trajectories pre-encoded too
        packer = msgpack.Packer(use_bin_type=True)
        packed = []
        for d in answers:
            trajectory, d["trajectory"] = d["trajectory"], None
            listed = d.pop("modes", None)
            head = packer.pack(d)[:-1] + trajectory
            if listed is not None:
                # one more key in the map: its header counts 7 keys (0x87), now 8
                head = bytes((head[0] + 1,)) + head[1:] + _pack("modes") + _pack(listed)
            packed.append(RawMsgpack(head))
        return packed
    return answers


class RawMsgpack(bytes):
    """A value already encoded as MessagePack, spliced into the answer as it is by :func:`encode`."""


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    return b"\xdc" + n.to_bytes(2, "big") if n < 2**16 else b"\xdd" + n.to_bytes(4, "big")


# one point of the points layout, {"timestamp": t, "x": x, "y": y[, "std_x": sx, "std_y": sy]}, as
# MessagePack: a fixmap, each key a fixstr, each value a float 64 (0xcb, big-endian); every point of a batch
# written by numpy in one pass
_POINT_FIELDS = [("kt", "S10"), ("ft", "u1"), ("t", ">f8"), ("kx", "S2"), ("fx", "u1"), ("x", ">f8"),
                 ("ky", "S2"), ("fy", "u1"), ("y", ">f8")]  # fmt: skip
_POINT = np.dtype([("map", "u1"), *_POINT_FIELDS])
_POINT_STD = np.dtype(
    [("map", "u1"), *_POINT_FIELDS, ("ksx", "S6"), ("fsx", "u1"), ("sx", ">f8"), ("ksy", "S6"), ("fsy", "u1"),
     ("sy", ">f8")]
)  # fmt: skip
_FLOAT = np.dtype([("f", "u1"), ("v", ">f8")])
_COLUMN_KEYS = (b"\xa9timestamp", b"\xa1x", b"\xa1y", b"\xa5std_x", b"\xa5std_y")


def _msgpack_trajectories(
    t: np.ndarray, x: np.ndarray, y: np.ndarray, layout: Layout, std: Std = None
) -> list[RawMsgpack]:
    """Each row's trajectory as MessagePack, the same object as ``msgpack.packb`` of the JSON layout gives
    (``tests/service/test_stream.py`` checks it), built from whole-batch numpy records rather than a Python
    dict per point (several times faster for a frame of 100 agents)."""
    a, k = t.shape
    values = (t, x, y, *(std or ()))
    if layout == "columns":
        c = len(values)
        cols = np.empty((c, a, k), _FLOAT)
        cols["f"] = 0xCB
        cols["v"] = values
        head = _array_header(k)
        rows = cols.tobytes()
        step, size = a * k * _FLOAT.itemsize, k * _FLOAT.itemsize
        return [
            RawMsgpack(
                bytes((0x80 | c,))
                + b"".join(
                    _COLUMN_KEYS[j] + head + rows[j * step + i * size : j * step + (i + 1) * size]
                    for j in range(c)
                )
            )
            for i in range(a)
        ]
    dtype = _POINT if std is None else _POINT_STD
    points = np.empty((a, k), dtype)
    points["ft"], points["fx"], points["fy"] = 0xCB, 0xCB, 0xCB
    points["kt"], points["kx"], points["ky"] = b"\xa9timestamp", b"\xa1x", b"\xa1y"
    points["t"], points["x"], points["y"] = t, x, y
    points["map"] = 0x83
    if std is not None:
        points["map"] = 0x85
        points["fsx"], points["fsy"] = 0xCB, 0xCB
        points["ksx"], points["ksy"] = b"\xa5std_x", b"\xa5std_y"
        points["sx"], points["sy"] = std
    data, size, head = points.tobytes(), k * dtype.itemsize, _array_header(k)
    return [RawMsgpack(head + data[i * size : (i + 1) * size]) for i in range(a)]


def _pack(obj: Any) -> bytes:
    """MessagePack of an answer whose predictions are :class:`RawMsgpack`: its few containers walked here,
    the rest packed by msgpack."""
    if isinstance(obj, RawMsgpack):
        return obj
    if isinstance(obj, dict):
        n = len(obj)
        out = [bytes((0x80 | n,)) if n < 16 else b"\xde" + n.to_bytes(2, "big")]
        for k, v in obj.items():
            out += [msgpack.packb(k, use_bin_type=True), _pack(v)]
        return b"".join(out)
    if isinstance(obj, list):
        return _array_header(len(obj)) + b"".join(_pack(v) for v in obj)
    return bytes(msgpack.packb(obj, use_bin_type=True))


def encode(payload: dict[str, Any], encoding: Encoding) -> bytes:
    """An answer as bytes: JSON by orjson (thousands of floats per frame: the stdlib encoder was a large share
    of the request in ``scripts/profile_hot_path.py``; numpy rows of the columns layout as they are), or
    MessagePack (build the payload with ``encoding="msgpack"``: its trajectories come pre-encoded)."""
    if encoding == "msgpack":
        return _pack(payload)
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def predict_payload(
    engine: Engine, out: dict[str, Predictions], roles: list[str], layout: Layout, encoding: Encoding
) -> dict[str, Any]:
    """The answer of a predict route: one role's (``/v1/predict``, ``/v1/baseline/predict``) or both
    (``/v1/ab/predict``)."""
    compiled = engine.settings.native_kernel  # TRAJPRED_NATIVE_KERNEL: the answer writer too
    refs = {}
    for role in roles:
        p = engine.predictors[engine.roles[role]]
        refs[role] = {"model": p.name, "model_version": p.version}
    if len(roles) == 1:
        (role,) = roles
        return {**refs[role], "predictions": _predictions(out[role], layout, encoding, compiled)}
    return {
        "models": refs,
        "predictions": {r: _predictions(out[r], layout, encoding, compiled) for r in roles},
    }
