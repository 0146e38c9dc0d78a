"""Answers of the predict routes as data, and their encodings (JSON, MessagePack): shared by the HTTP routes
and the stream (``service.stream``), so both answer byte for byte the same objects."""

from __future__ import annotations

import math
from typing import Any, Literal

import msgpack
import numpy as np
import orjson

from service.engine import TIME_DECIMALS, Engine, Predictions
from service.jsontext import points_rows
from service.schemas import POSITION_DECIMALS, Layout

Encoding = Literal["json", "msgpack"]
MSGPACK = "application/msgpack"

_POINT_PARTS = (b'{"timestamp":', b',"x":', b',"y":', b"},", b"}")


def _points_json(t: np.ndarray, x: np.ndarray, y: np.ndarray, compiled: bool = True) -> list[orjson.Fragment]:
    """Each row's trajectory as the JSON of a list of ``{"timestamp", "x", "y"}`` points, one fragment per row.

    The compiled writer (``service.jsontext``) when every value is in its exact range, else this: orjson
    writes every number of the batch in one call and the keys are spliced in by list slicing (C loops), so
    no Python dict exists per point. Both are byte for byte what ``orjson.dumps`` gives for the list of
    dicts (``tests/service/test_api.py`` and ``test_jsontext.py`` check it).
    """
    rows = points_rows(t, x, y, TIME_DECIMALS, POSITION_DECIMALS, compiled)
    if rows is not None:
        return [orjson.Fragment(r) for r in rows]
    return _points_json_spliced(t, x, y)


def _points_json_spliced(t: np.ndarray, x: np.ndarray, y: np.ndarray) -> list[orjson.Fragment]:
    """:func:`_points_json` for any values (NaN as null, orjson's exponent notation): the slower way."""
    a, k = t.shape
    if a == 0 or k == 0:
        return [orjson.Fragment(b"[]") for _ in range(a)]
    n = a * k
    nums = orjson.dumps(np.stack([t, x, y], axis=-1).ravel(), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(
        b","
    )
    ts_key, x_key, y_key, close, last = _POINT_PARTS
    parts: list[bytes] = [b""] * (7 * n)
    parts[0::7] = [ts_key] * n
    parts[1::7] = nums[0::3]
    parts[2::7] = [x_key] * n
    parts[3::7] = nums[1::3]
    parts[4::7] = [y_key] * n
    parts[5::7] = nums[2::3]
    parts[6::7] = [close] * n
    step = 7 * k
    parts[step - 1 :: step] = [last] * a  # no comma after a row's last point
    return [orjson.Fragment(b"[" + b"".join(parts[i * step : (i + 1) * step]) + b"]") for i in range(a)]


def _predictions(
    p: Predictions, layout: Layout = "points", encoding: Encoding = "json", compiled: bool = True
) -> list[Any]:
    """One model's answers as plain JSON data (the :class:`Prediction` schema), one dict per agent; with
    ``encoding="msgpack"`` each answer already encoded (:class:`RawMsgpack`).

    Built directly (not through pydantic) because a frame of a few hundred agents has thousands of points,
    and from whole-batch conversions rather than per agent; ``tests/service`` validates answers against the
    response schemas. Positions are rounded to 0.1 mm (far below any prediction error; full float64 digits
    made the answer a third longer and slower to write and to parse).
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
    xs = np.round(p.trajectory_xy[..., 0], POSITION_DECIMALS)
    ys = np.round(p.trajectory_xy[..., 1], POSITION_DECIMALS)
    if encoding == "msgpack":
        trajectories: Any = _msgpack_trajectories(ts, xs, ys, layout)
    elif layout == "columns":
        # three numpy rows per agent, written by orjson directly
        trajectories = ({"timestamp": ts[i], "x": xs[i], "y": ys[i]} for i in range(len(p)))
    else:
        trajectories = _points_json(ts, xs, ys, compiled)
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
    if encoding == "msgpack":
        # each answer packed with a nil trajectory (its last value, one byte 0xc0) that the pre-encoded
        # trajectory replaces
        packer = msgpack.Packer(use_bin_type=True)
        packed = []
        for d in answers:
            trajectory, d["trajectory"] = d["trajectory"], None
            packed.append(RawMsgpack(packer.pack(d)[:-1] + trajectory))
        return packed
    return answers


class RawMsgpack(bytes):
    """A value already encoded as MessagePack, spliced into the answer as it is by :func:`encode`."""


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    return b"\xdc" + n.to_bytes(2, "big") if n < 2**16 else b"\xdd" + n.to_bytes(4, "big")


# one point of the points layout, {"timestamp": t, "x": x, "y": y}, as MessagePack: a fixmap of 3, each key
# a fixstr, each value a float 64 (0xcb, big-endian); every point of a batch written by numpy in one pass
_POINT = np.dtype(
    [("map", "u1"), ("kt", "S10"), ("ft", "u1"), ("t", ">f8"), ("kx", "S2"), ("fx", "u1"), ("x", ">f8"),
     ("ky", "S2"), ("fy", "u1"), ("y", ">f8")]
)  # fmt: skip
_FLOAT = np.dtype([("f", "u1"), ("v", ">f8")])


def _msgpack_trajectories(t: np.ndarray, x: np.ndarray, y: np.ndarray, layout: Layout) -> list[RawMsgpack]:
    """Each row's trajectory as MessagePack, the same object as ``msgpack.packb`` of the JSON layout gives
    (``tests/service/test_stream.py`` checks it), built from whole-batch numpy records rather than a Python
    dict per point (several times faster for a frame of 100 agents)."""
    a, k = t.shape
    if layout == "columns":
        cols = np.empty((3, a, k), _FLOAT)
        cols["f"] = 0xCB
        cols["v"] = (t, x, y)
        head = _array_header(k)
        rows = cols.tobytes()
        step, size = a * k * _FLOAT.itemsize, k * _FLOAT.itemsize
        return [
            RawMsgpack(
                b"\x83\xa9timestamp"
                + head
                + rows[i * size : (i + 1) * size]
                + b"\xa1x"
                + head
                + rows[step + i * size : step + (i + 1) * size]
                + b"\xa1y"
                + head
                + rows[2 * step + i * size : 2 * step + (i + 1) * size]
            )
            for i in range(a)
        ]
    points = np.empty((a, k), _POINT)
    points["map"], points["ft"], points["fx"], points["fy"] = 0x83, 0xCB, 0xCB, 0xCB
    points["kt"], points["kx"], points["ky"] = b"\xa9timestamp", b"\xa1x", b"\xa1y"
    points["t"], points["x"], points["y"] = t, x, y
    data, size, head = points.tobytes(), k * _POINT.itemsize, _array_header(k)
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
