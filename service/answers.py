"""Answers of the predict routes as data, and their encodings (JSON, MessagePack): shared by the HTTP routes
and the stream (``service.stream``), so both answer byte for byte the same objects."""

from __future__ import annotations

import math
import mmap
import threading
from collections.abc import Callable
from typing import Any, Literal

import msgpack
import numpy as np
import orjson

from models.agent_types import AGENT_TYPES
from service.engine import TIME_DECIMALS, Engine
from service.frames import Predictions
from service.jsontext import Futures, Heads, Into, msgpack_text, points_text, text_bound
from service.schemas import POSITION_DECIMALS, Layout

Encoding = Literal["json", "msgpack"]
MSGPACK = "application/msgpack"

_KEYS = (b'{"timestamp":', b',"x":', b',"y":', b',"std_x":', b',"std_y":')
Std = tuple[np.ndarray, np.ndarray] | None  # (std_x, std_y), each (A, P), or none


def _points_json_spliced(
    t: np.ndarray, x: np.ndarray, y: np.ndarray, std: Std = None
) -> list[orjson.Fragment]:
    """Each row's trajectory as the JSON of a list of ``{"timestamp", "x", "y"[, "std_x", "std_y"]}`` points,
    one fragment per row, for any values (NaN as null, orjson's exponent notation): the way taken where the
    compiled writer declines. orjson writes every number of the batch in one call and the keys are spliced in
    by list slicing (C loops), so no Python dict exists per point; byte for byte what ``orjson.dumps`` gives
    for the list of dicts (``tests/service/test_jsontext.py`` checks it)."""
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


def _rounded(xy: np.ndarray, std: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, Std]:
    """x, y and the deviations (each (A, P)) rounded to 0.1 mm (far below any prediction error; full float64
    digits made the answer a third longer and slower to write and to parse)."""
    sd: Std = None
    if std is not None:
        sd = (np.round(std[..., 0], POSITION_DECIMALS), np.round(std[..., 1], POSITION_DECIMALS))
    return np.round(xy[..., 0], POSITION_DECIMALS), np.round(xy[..., 1], POSITION_DECIMALS), sd


def _trajectories(t: np.ndarray, xy: np.ndarray, std: np.ndarray | None, layout: Layout) -> list[Any]:
    """Each row's trajectory as JSON data in the answer's layout: ``t`` (A, P), ``xy`` and ``std`` (A, P, 2),
    positions and deviations rounded (:func:`_rounded`); the way taken when :func:`_json_answers`
    declines."""
    xs, ys, sd = _rounded(xy, std)
    if layout == "columns":
        # numpy rows per agent, written by orjson directly
        if sd is None:
            return [{"timestamp": t[i], "x": xs[i], "y": ys[i]} for i in range(len(t))]
        return [
            {"timestamp": t[i], "x": xs[i], "y": ys[i], "std_x": sd[0][i], "std_y": sd[1][i]}
            for i in range(len(t))
        ]
    return _points_json_spliced(t, xs, ys, sd)


def _heads(p: Predictions) -> list[dict[str, Any]]:
    """Each answer's fields before its trajectory, in the schema's order."""
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
    return [
        {
            "agent_id": agent,
            "timestamp": stamp,
            "steps": steps,
            "new_track": new,
            "dt_s": dt,
            "agent_type": kind,
        }
        for agent, stamp, steps, new, dt, kind in heads
    ]


_TYPE_JSON = {kind: orjson.dumps(kind) for kind in AGENT_TYPES}
# an answer's fields before its trajectory: the agent id's text between its quotes, then five JSON values
_HEAD = b'{"agent_id":"%b","timestamp":%b,"steps":%b,"new_track":%b,"dt_s":%b,"agent_type":%b'


def _heads_json(p: Predictions) -> list[bytes]:
    """:func:`_heads` as JSON text, each without its closing brace: written a column at a time (one orjson
    call per field, not one per answer: 0.84 -> 0.39 ms for 1,000 answers)."""
    if not p.agent_ids:
        return []

    def column(values: list[Any]) -> list[bytes]:
        return orjson.dumps(values)[1:-1].split(b",")  # numbers, booleans and null: no comma inside

    # strings: '","' only ever separates two of them, since a quote inside a JSON string is escaped
    ids = orjson.dumps(p.agent_ids)[2:-2].split(b'","')
    stamps, steps, new = column(p.timestamps.tolist()), column(p.steps.tolist()), column(p.new_track.tolist())
    dts = column([None if math.isnan(d) else d for d in p.dt_s.tolist()])
    kinds = [_TYPE_JSON[k] for k in p.agent_types]
    return [_HEAD % row for row in zip(ids, stamps, steps, new, dts, kinds, strict=True)]


def _served(p: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The trajectories an answer writes: ``t`` (R, P), ``xy`` and ``std`` (R, P, 2), one row per agent, or
    with ``p.show_modes`` one per agent and mode (row ``i * K + j``: agent ``i``'s mode ``j``; the first of
    each agent is its single trajectory)."""
    ts = np.ascontiguousarray(p.trajectory_t, dtype=np.float64)
    if not p.show_modes:
        return ts, p.trajectory_xy, p.trajectory_std
    a, k, n = p.modes_xy.shape[:3]
    std = None if p.modes_std is None else p.modes_std.reshape(a * k, n, 2)
    return np.repeat(ts, k, axis=0), p.modes_xy.reshape(a * k, n, 2), std


def _predictions(
    p: Predictions, layout: Layout = "points", encoding: Encoding = "json", compiled: bool = True
) -> Any:
    """One model's answers (the :class:`Prediction` schema, one per agent) for :func:`encode`: with the
    compiled writer, the list to be written into the answer's buffer (:class:`Later`); else the list
    already encoded (:class:`Encoded`: MessagePack) or as a list of dicts (JSON).

    Built directly (not through pydantic) because a frame of a few hundred agents has thousands of points,
    and from whole-batch conversions rather than per agent; ``tests/service`` validates answers against the
    response schemas. With ``p.show_modes`` each answer also lists the served modes with their probabilities.
    """
    t, xy, std = _served(p)
    if encoding == "msgpack":
        later = _msgpack_later(p, t, xy, std, layout) if compiled else None
        return Encoded([later]) if later is not None else _msgpack_slow(p, t, xy, std, layout)
    later = _json_later(p, t, xy, std, layout) if compiled else None
    return Encoded([later]) if later is not None else _json_slow(p, t, xy, std, layout)


def _json_slow(
    p: Predictions, t: np.ndarray, xy: np.ndarray, std: np.ndarray | None, layout: Layout
) -> list[dict[str, Any]]:
    """The list of answers as JSON data (orjson writes it): the way without the compiled writer, or for
    values it declines."""
    heads = _heads(p)
    flat = _trajectories(t, xy, std, layout)
    k = p.probs.shape[1]
    if p.show_modes:
        probs = p.probs.tolist()
        for i, d in enumerate(heads):
            d["trajectory"] = flat[i * k]
            d["modes"] = [{"probability": probs[i][j], "trajectory": flat[i * k + j]} for j in range(k)]
    else:
        for d, trajectory in zip(heads, flat, strict=True):
            d["trajectory"] = trajectory
    return heads


# the constant parts of a mode in MessagePack: {"probability": <float 64>, "trajectory": <points>}
_MODE_HEAD = b"\x82" + msgpack.packb("probability") + b"\xcb"
_TRAJECTORY_KEY = msgpack.packb("trajectory")
_MODES_KEY = msgpack.packb("modes")


def _msgpack_later(
    p: Predictions, t: np.ndarray, xy: np.ndarray, std: np.ndarray | None, layout: Layout
) -> Later | None:
    """The list of answers as MessagePack, for the compiled writer to write into the answer's buffer: the
    array's header, then each answer's fields before its trajectory packed by msgpack (with a nil
    trajectory, the map's last value, that the writer's bytes replace) followed by the writer's bytes of the
    agent: its trajectory and, with ``?modes``, the modes with their probabilities (rounded by the writer as
    :func:`_rounded` rounds). ``None`` without the compiled writer; ``tests/service/test_answers.py`` holds
    it to msgpack's bytes."""
    sd = None if std is None else (std[..., 0], std[..., 1])
    probs = p.probs if p.show_modes else None
    futures = Futures(p.probs.shape[1], b"") if p.show_modes else None
    packer = msgpack.Packer(use_bin_type=True)
    packed = []
    for d in _heads(p):
        d["trajectory"] = None
        head = packer.pack(d)[:-1]
        if p.show_modes:  # one more key in the map (the modes, after the trajectory): its fixmap header too
            head = bytes((head[0] + 1,)) + head[1:]
        packed.append(head)
    heads = Heads.of(packed)
    header = _array_header(len(packed))
    bound = text_bound(len(t), t.shape[1], futures, heads)
    if bound is None:
        return None

    def write(into: Into) -> int | None:
        out, at = into
        out[at : at + len(header)] = np.frombuffer(header, np.uint8)
        at += len(header)
        written = msgpack_text(
            t, xy[..., 0], xy[..., 1], True, sd, layout, POSITION_DECIMALS, probs, heads, (out, at)
        )
        return None if written is None else at + len(written[0])

    return Later(len(header) + bound, write, lambda: _msgpack_slow(p, t, xy, std, layout))


def _msgpack_slow(
    p: Predictions, t: np.ndarray, xy: np.ndarray, std: np.ndarray | None, layout: Layout
) -> Encoded:
    """The list of answers as MessagePack without the compiled writer (:func:`_msgpack_answers`)."""
    xs, ys, sd = _rounded(xy, std)
    return _msgpack_answers(p, _heads(p), _msgpack_trajectories(t, xs, ys, layout, sd))


def _msgpack_answers(p: Predictions, heads: list[dict[str, Any]], rows: list[Parts]) -> Encoded:
    """The list of answers as MessagePack, its trajectories (``rows``, as :func:`_served` orders them)
    pre-encoded, as the pieces :func:`encode` joins: the way taken without the compiled writer.

    The fields before the trajectory are packed by msgpack with a nil trajectory (the map's last value, one
    byte 0xc0) that the trajectory's bytes replace; the modes are joined from constant bytes and each
    probability's 8 big-endian bytes, not packed per value (a 100-agent answer has 600 modes)."""
    packer = msgpack.Packer(use_bin_type=True)
    parts: Parts = [_array_header(len(heads))]
    if not p.show_modes:
        for d, row in zip(heads, rows, strict=True):
            d["trajectory"] = None
            parts.append(packer.pack(d)[:-1])
            parts += row
        return Encoded(parts)
    k = p.probs.shape[1]
    probs = np.ascontiguousarray(p.probs, dtype=">f8").tobytes()
    for i, d in enumerate(heads):
        d["trajectory"] = None
        head = packer.pack(d)[:-1]
        # one more key in the map (the modes, after the trajectory): its fixmap header counts one more
        parts += [bytes((head[0] + 1,)), head[1:], *rows[i * k], _MODES_KEY, _array_header(k)]
        for j in range(i * k, i * k + k):
            parts += [_MODE_HEAD, probs[8 * j : 8 * j + 8], _TRAJECTORY_KEY, *rows[j]]
    return Encoded(parts)


def _json_later(
    p: Predictions, t: np.ndarray, xy: np.ndarray, std: np.ndarray | None, layout: Layout
) -> Later | None:
    """The JSON of the answers' list, for the compiled writer to write into the answer's buffer: each
    answer's fields (orjson's text for them) and its trajectory (with ``?modes``, the modes and their
    probabilities too), the positions and deviations rounded by the writer (as :func:`_rounded`). With six
    futures a 100-agent answer is about 1.8 MB: written where the answer's bytes are sent from, it is not
    copied again (a join of the writer's text with the fields cost a fifth as much as writing it).
    ``None`` without the compiled writer; ``tests/service/test_answers.py`` holds it to orjson's bytes."""
    sd = None if std is None else (std[..., 0], std[..., 1])
    futures = None
    if p.show_modes:
        # each agent's rows end its answer: the trajectory, then the modes with their probabilities
        probs = orjson.dumps(p.probs.ravel(), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
        futures = Futures(p.probs.shape[1], probs)
    heads = Heads.of(_heads_json(p))
    bound = text_bound(len(t), t.shape[1], futures, heads)
    if bound is None:
        return None

    def write(into: Into) -> int | None:
        out, at = into
        out[at] = ord("[")
        written = points_text(
            t, xy[..., 0], xy[..., 1], TIME_DECIMALS, POSITION_DECIMALS, True, sd, layout, futures, heads,
            (out, at + 1),
        )  # fmt: skip
        if written is None:
            return None
        end = at + 1 + len(written[0])
        out[end] = ord("]")
        return end + 1

    def slow() -> Parts:
        return [orjson.dumps(_json_slow(p, t, xy, std, layout), option=orjson.OPT_SERIALIZE_NUMPY)]

    return Later(bound + 2, write, slow)


class Later:
    """A list of answers that the compiled writer writes straight into the answer's buffer when
    :func:`encode` assembles it: ``bound`` bytes at most; ``write((buffer, offset))`` writes it there and
    returns where it ends, or ``None`` where the writer declines a value (not finite, or beyond the range
    where its text is exact), and then ``fallback()`` gives the same bytes the slow way."""

    def __init__(
        self,
        bound: int,
        write: Callable[[Into], int | None],
        fallback: Callable[[], list[bytes | memoryview]],
    ) -> None:
        self.bound, self.write, self.fallback = bound, write, fallback


Parts = list[Any]  # pieces of one value's encoding (bytes, memoryview, Later), assembled with the answer


class Encoded(Parts):
    """A value already encoded in the answer's encoding (JSON text or MessagePack), or to be written by the
    compiled writer (:class:`Later`), as the pieces :func:`encode` splices into the answer."""


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
) -> list[Parts]:
    """Each row's trajectory as MessagePack, the same object as ``msgpack.packb`` of the JSON layout gives
    (``tests/service/test_stream.py`` checks it), for the way without the compiled writer
    (:func:`_msgpack_later`): whole-batch numpy records (several times faster than a Python dict per
    point, and about four times slower than the writer for a 100-agent answer with six futures). A row is
    the pieces of its bytes, views of one buffer, copied once when the answer is joined."""
    a, k = t.shape
    values = (t, x, y, *(std or ()))
    head = _array_header(k)
    if layout == "columns":
        # one record per row: the map's header, then each column's key, array header and values
        fields: list[Any] = [("map", "u1")]
        for j in range(len(values)):
            key = _COLUMN_KEYS[j]
            fields += [(f"k{j}", "u1", (len(key),)), (f"h{j}", "u1", (len(head),)), (f"v{j}", _FLOAT, (k,))]
        rows = np.empty(a, np.dtype(fields))
        rows["map"] = 0x80 | len(values)
        for j, v in enumerate(values):
            rows[f"k{j}"] = np.frombuffer(_COLUMN_KEYS[j], np.uint8)
            rows[f"h{j}"] = np.frombuffer(head, np.uint8)
            rows[f"v{j}"]["f"] = 0xCB
            rows[f"v{j}"]["v"] = v
        data, size = rows.view(np.uint8).data, rows.dtype.itemsize
        return [[data[i * size : (i + 1) * size]] for i in range(a)]
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
    data, size = points.reshape(-1).view(np.uint8).data, k * dtype.itemsize
    return [[head, data[i * size : (i + 1) * size]] for i in range(a)]


def _splice_msgpack(obj: Any, out: Parts) -> None:
    """MessagePack of a payload whose predictions are :class:`Encoded`, appended to ``out`` as pieces: its
    few containers walked here, the rest packed by msgpack."""
    if isinstance(obj, Encoded):
        out += obj
    elif isinstance(obj, dict):
        n = len(obj)
        out.append(bytes((0x80 | n,)) if n < 16 else b"\xde" + n.to_bytes(2, "big"))
        for k, v in obj.items():
            out.append(msgpack.packb(k, use_bin_type=True))
            _splice_msgpack(v, out)
    elif isinstance(obj, list):
        out.append(_array_header(len(obj)))
        for v in obj:
            _splice_msgpack(v, out)
    else:
        out.append(msgpack.packb(obj, use_bin_type=True))


def _splice_json(obj: Any, out: Parts) -> None:
    """JSON of a payload, appended to ``out`` as pieces: its dicts walked here (compact, as orjson writes
    them) so that an :class:`Encoded` value is spliced as it is; any other value written by orjson (numpy
    arrays of the columns layout as they are)."""
    if isinstance(obj, Encoded):
        out += obj
    elif isinstance(obj, dict):
        sep = b"{"
        for k, v in obj.items():
            out += [sep, orjson.dumps(k), b":"]
            _splice_json(v, out)
            sep = b","
        out.append(b"}" if obj else b"{}")
    else:
        out.append(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY))


def encode(payload: dict[str, Any], encoding: Encoding) -> bytes | memoryview:
    """An answer's bytes: JSON by orjson (thousands of floats per frame: the stdlib encoder was a large
    share of the request in ``scripts/profile_hot_path.py``), or MessagePack; either way with the
    :class:`Encoded` values that :func:`predict_payload` built for that encoding spliced in. With the
    compiled writer's lists (:class:`Later`) the answer is one buffer that they are written into, and the
    result a view of it; else the pieces joined."""
    out: Parts = []
    if encoding == "msgpack":
        _splice_msgpack(payload, out)
    else:
        _splice_json(payload, out)
    if any(isinstance(piece, Later) for piece in out):
        body = _assembled(out)
        if body is not None:
            return body
        out = [q for piece in out for q in (piece.fallback() if isinstance(piece, Later) else (piece,))]
    return b"".join(out)


def _assembled(out: Parts) -> memoryview | None:
    """The pieces in one buffer (:class:`_Bodies`), each :class:`Later` written there by the compiled
    writer; ``None`` if one declines."""
    buf = _bodies.take(sum(p.bound if isinstance(p, Later) else len(p) for p in out))
    array = np.frombuffer(buf, np.uint8)
    view = memoryview(buf)
    at = 0
    for piece in out:
        if isinstance(piece, Later):
            end = piece.write((array, at))
            if end is None:
                return None
            at = end
        else:
            view[at : at + len(piece)] = piece
            at += len(piece)
    return view[:at]


class _Bodies(threading.local):
    """This thread's buffers that answers are written into and sent from, each taken again once nothing
    holds a view of it any more (the server has sent the answer and dropped it).

    A fresh buffer per answer paid a page fault per 4 KB written: encoding a 100-agent answer with six
    futures (about 1.9 MB) took 1.27 ms in a fresh buffer, 0.80 ms in a reused one and 0.91 ms the way
    before it (the writer's text joined with the answer's fields: a copy), one scratch measurement. The
    buffers are anonymous memory maps: sized for the longest text possible (about 2.5 times the usual), only
    the pages written become resident (a bytearray is zeroed whole when made). Whether one is in use is what
    the map itself knows: while a view of it exists it refuses to resize (``BufferError``). At most ``KEEP``
    buffers of at most ``KEEP_BYTES`` each are kept; beyond that (answers of thousands of agents with six
    futures, or more answers in flight) a buffer is used once."""

    KEEP = 4
    KEEP_BYTES = 1 << 25

    def __init__(self) -> None:
        self.bufs: list[mmap.mmap] = []

    def take(self, size: int) -> mmap.mmap:
        """A buffer of at least ``size`` bytes that nothing else holds."""
        for i, buf in enumerate(self.bufs):
            if _unheld(buf):
                if len(buf) >= size:
                    return buf
                if size <= self.KEEP_BYTES:  # too small: replaced by a larger one
                    buf.close()
                    self.bufs[i] = buf = _anonymous(size)
                    return buf
        buf = _anonymous(size)
        if size <= self.KEEP_BYTES and len(self.bufs) < self.KEEP:
            self.bufs.append(buf)
        return buf


def _anonymous(size: int) -> mmap.mmap:
    # private: a shared anonymous map (mmap's default) is backed by a memory file of the size it was made
    # with, and its pages beyond that fault (SIGBUS) if it is ever remapped larger
    return mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE)


def _unheld(buf: mmap.mmap) -> bool:
    """Whether no view of ``buf`` exists: a memory map with views cannot resize (to its own size here: the
    check changes nothing)."""
    try:
        buf.resize(len(buf))
    except BufferError:
        return False
    return True


_bodies = _Bodies()


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
