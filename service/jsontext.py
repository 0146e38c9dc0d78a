"""The trajectories of an answer, written by one compiled loop (``points_json.c``): as JSON text in the points
or the columns layout, or as MessagePack of the same objects (:func:`msgpack_text`: the rounded numbers' bits,
no exactness question); with several futures, each agent's modes and probabilities too.

A 1,000-agent frame answers 30,000 points (3 s at 10 Hz). Written through Python objects (a bytes object
per number, or a dict per point) that cost about 10 ms per frame, a third of the request; numpy cannot do
better (a fixed-slot writer by table lookups was no faster: many passes over short columns).
Here one C pass writes every row's text into one buffer. It replaced a numba loop of the same algorithm that
took more than twice as long, timed side by side at 100 agents x 50 points.

The text is byte for byte what ``orjson.dumps`` gives for the list of ``{"timestamp", "x", "y"}`` dicts of
the values rounded to a fixed number of decimals (``tests/service/test_jsontext.py`` checks it): the writer
rounds as ``np.round(v, d)`` does (to the float nearest to an integer over ``10**d``), and that decimal,
trailing zeros dropped (one kept after the point), is the shortest text that reads back as the same float,
which is what orjson writes; so no rounded copy of the arrays is made first. Where that does not hold (a
value not finite, above about 2e15 once scaled, or small enough for orjson's exponent notation),
:func:`points_text` returns ``None`` and the caller writes the batch the slow way; so does it when the writer
is not built (a source tree used without installing the package: one warning at start-up) or is not wanted
(``compiled=False``: the service's ``TRAJPRED_NATIVE_KERNEL=false``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.native import Extension, load_extension
from service.schemas import Layout

Rows = tuple[memoryview, list[int]]  # every row back to back, and where each ends


class _Writer:
    def __init__(self, ext: Extension) -> None:
        self.ffi = ext.ffi
        self.json = ext.lib.answer_json_rows
        self.msgpack = ext.lib.msgpack_rows
        self.size = ext.lib.json_rows_size


@functools.cache
def _writer() -> _Writer | None:
    ext = load_extension(
        "service._points_json_native", "the compiled answer writer", "orjson (slower answers)"
    )
    return None if ext is None else _Writer(ext)


def available() -> bool:
    """Whether the compiled writer is in use (else every answer takes the slow way). The first call imports
    it: the service calls this at start-up, so that no request pays for it."""
    return _writer() is not None


@dataclass(frozen=True)
class Futures:
    """Rows taken ``k`` at a time as one agent's futures, most probable first, with their probabilities:
    ``probabilities`` is their JSON text, one per row, separated by commas (as orjson writes a list, without
    its brackets)."""

    k: int
    probabilities: bytes


@dataclass(frozen=True)
class Heads:
    """Each answer's fields before its trajectory, one per row (or per group of futures), back to back in
    ``text``, answer ``u`` ending at ``ends[u]``: JSON text of the object up to its last field before the
    trajectory (no closing brace), or its packed MessagePack map up to there. With heads the writer writes
    the whole list of answers but its brackets (JSON) or its array header (MessagePack)."""

    text: bytes
    ends: np.ndarray  # (U,) int64

    @staticmethod
    def of(parts: list[bytes]) -> Heads:
        """Heads from each answer's bytes."""
        return Heads(b"".join(parts), np.cumsum([len(h) for h in parts], dtype=np.int64))


#: where the writer writes instead of a buffer of its own: (array of bytes, offset); it must hold the
#: writer's bound (:func:`text_bound`) from the offset
Into = tuple[np.ndarray, int]


def text_bound(a: int, k: int, futures: Futures | None = None, heads: Heads | None = None) -> int | None:
    """The bytes :func:`points_text` and :func:`msgpack_text` may write for ``a`` rows of ``k`` points (with
    these futures and heads; for MessagePack, futures' probabilities take no text); ``None`` without the
    compiled writer."""
    w = _writer()
    if w is None:
        return None
    group, probs = (futures.k, len(futures.probabilities)) if futures is not None else (0, 0)
    return int(w.size(a, k, group, probs, 0 if heads is None else len(heads.text)))


def points_text(
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    t_decimals: int,
    xy_decimals: int,
    compiled: bool = True,
    std: tuple[np.ndarray, np.ndarray] | None = None,
    layout: Layout = "points",
    futures: Futures | None = None,
    heads: Heads | None = None,
    into: Into | None = None,
) -> Rows | None:
    """Row ``i`` as the JSON of the list ``[{"timestamp": t[i, k], "x": x[i, k], "y": y[i, k]}, ...]``, each
    point also with ``"std_x"``, ``"std_y"`` when ``std`` gives them; with ``layout="columns"`` as the JSON of
    ``{"timestamp": [...], "x": [...], "y": [...]}`` (and ``"std_x"``, ``"std_y"``). Every row's text back to
    back, and where each row ends: row ``i`` is ``text[ends[i - 1]:ends[i]]`` (from 0 for the first).

    With ``futures``, each agent's rows (``futures.k`` of them) are written as the end of its answer,
    ``,"trajectory":<first row>,"modes":[{"probability":<p>,"trajectory":<row>},...]``, and the ends are
    one per agent.

    ``t``, ``x``, ``y`` (and both arrays of ``std``) are ``(A, K)`` float64, written as ``np.round`` rounds
    them to ``t_decimals`` and ``xy_decimals`` (1 to 16) and orjson writes the rounded values. ``None`` when
    some value is outside the range where the text is exactly orjson's, or when the compiled writer is
    unavailable or not wanted (``compiled=False``).

    With ``heads`` (one per agent), each agent's text is its whole answer (:class:`Heads`), the answers
    separated by commas: the list of answers without its brackets.

    The text is a view of a buffer of its own, or with ``into`` of that one (the answer's buffer, which the
    service reuses: ``service.answers``).
    """
    if not (1 <= t_decimals <= 16 and 1 <= xy_decimals <= 16):
        raise ValueError("decimals must be within 1..16")
    group, probs = (futures.k, futures.probabilities) if futures is not None else (0, b"")
    if futures is not None and (group < 1 or len(t) % group or probs.count(b",") != max(len(t) - 1, 0)):
        raise ValueError("futures: the rows must be whole groups of k, with one probability each")

    def write(w: _Writer, columns: tuple[Any, ...], out: Any, ends: Any) -> int:
        k = columns[-1]
        scratch = np.empty(2 * k, np.int64)  # where the previous row wrote each timestamp, and its length
        spans = (w.ffi.from_buffer("int64_t[]", scratch[:k]), w.ffi.from_buffer("int64_t[]", scratch[k:]))
        where = (int(layout == "columns"), group, probs, len(probs), *_heads_args(w, heads))
        return int(w.json(*columns, t_decimals, xy_decimals, *where, out, ends, *spans))

    return _rows(t, x, y, std, compiled, write, futures, heads, into)


def msgpack_text(
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    compiled: bool = True,
    std: tuple[np.ndarray, np.ndarray] | None = None,
    layout: Layout = "points",
    xy_decimals: int = 0,
    probabilities: np.ndarray | None = None,
    heads: Heads | None = None,
    into: Into | None = None,
) -> Rows | None:
    """:func:`points_text` as MessagePack: each row the bytes ``msgpack.packb`` writes for the same object
    (every float as a float 64, NaN and infinities included), x, y and the deviations rounded as
    ``np.round(v, xy_decimals)`` rounds them (0: as they are; times as they are). ``None`` only when the
    compiled writer is unavailable or not wanted.

    With ``probabilities`` (agents x K), each agent's K rows are written as the values that end its answer's
    map: ``<first row>``, ``"modes"``, ``[{"probability": p, "trajectory": <row>}, ...]``, one end per agent.
    With ``heads``, each agent's bytes start with its answer's packed fields (:class:`Heads`): the list's
    answers back to back, without the array's header."""
    if not 0 <= xy_decimals <= 16:
        raise ValueError("decimals must be within 0..16")
    group = 0
    probs: np.ndarray | None = None
    if probabilities is not None:
        group = probabilities.shape[1] if probabilities.ndim == 2 else 0
        if group < 1 or probabilities.size != len(t):
            raise ValueError("probabilities: one per row, the rows whole groups of an agent's futures")
        probs = np.ascontiguousarray(probabilities, dtype=np.float64).ravel()

    def write(w: _Writer, columns: tuple[Any, ...], out: Any, ends: Any) -> int:
        p = w.ffi.NULL if probs is None else w.ffi.from_buffer("double[]", probs)
        how = (int(layout == "columns"), xy_decimals, group, p, *_heads_args(w, heads))
        return int(w.msgpack(*columns, *how, out, ends))

    futures = None if probs is None else Futures(group, b"")
    return _rows(t, x, y, std, compiled, write, futures, heads, into)


def _heads_args(w: _Writer, heads: Heads | None) -> tuple[Any, Any]:
    if heads is None:
        return w.ffi.NULL, w.ffi.NULL
    return w.ffi.from_buffer("char[]", heads.text), w.ffi.from_buffer("int64_t[]", heads.ends)


def _check(t: np.ndarray, x: np.ndarray, y: np.ndarray, std: tuple[np.ndarray, np.ndarray] | None) -> None:
    shapes = [v.shape for v in (t, x, y, *(std or ()))]
    if len(set(shapes)) != 1 or t.ndim != 2:
        raise ValueError(f"t, x, y (and std) must be (A, K) arrays of one shape, not {shapes}")


def _strided(v: np.ndarray) -> np.ndarray:
    """``v`` as float64 whose strides are whole doubles (a view as it is, for the writer's strides: the x
    and y of one (A, K, 2) array, or a leading slice of longer rows, are not copied); else a copy."""
    if v.dtype != np.float64 or any(s % 8 for s in v.strides):
        return np.ascontiguousarray(v, dtype=np.float64)
    return v


def _rows(
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    std: tuple[np.ndarray, np.ndarray] | None,
    compiled: bool,
    write: Callable[[_Writer, tuple[Any, ...], Any, Any], int],
    futures: Futures | None,
    heads: Heads | None,
    into: Into | None,
) -> Rows | None:
    """Checks the shapes and calls ``write(writer, columns, out, ends)``: ``columns`` the C functions' leading
    arguments (t, x, y, sx, sy, NULL without ``std``, their strides, then A and K: each array as it lies,
    not copied), ``out`` the output (a new buffer, or
    ``into``) and ``ends`` the row ends to fill (one per group of ``futures``); ``write``
    returns the length written, or -1 (then ``None``)."""
    _check(t, x, y, std)
    a, k = t.shape
    group = futures.k if futures is not None else 0
    if heads is not None and len(heads.ends) != (a // group if group else a):
        raise ValueError("heads: one per answer (per row, or per group of futures)")
    if a == 0:
        return memoryview(b""), []
    w = _writer() if compiled else None
    bound = text_bound(a, k, futures, heads) if w is not None else None
    if w is None or bound is None:
        return None
    values = [_strided(v) for v in (t, x, y, *(std or ()))]
    strides = np.zeros(10, np.int64)  # (row, point) per column, in doubles; a column left out: zeros
    strides[: 2 * len(values)] = [s // 8 for v in values for s in v.strides]
    if into is None:
        out = np.empty(bound, np.uint8)
    else:
        whole, at = into
        out = whole[at:]
        if len(out) < bound:
            raise ValueError(f"into: {len(out)} bytes from the offset, the writer needs up to {bound}")
    ends = np.empty(a // group if group else a, np.int64)
    buf = w.ffi.from_buffer  # typed views of contiguous arrays, checked against the C declaration
    pointers = [w.ffi.cast("const double *", v.ctypes.data) for v in values]  # ``values`` keeps them alive
    pointers += [w.ffi.NULL] * (5 - len(pointers))
    columns = (*pointers, buf("int64_t[]", strides), a, k)
    size_written = write(w, columns, buf("char[]", out), buf("int64_t[]", ends))
    if size_written < 0:
        return None
    return out.data[:size_written], ends.tolist()
