"""The points layout of an answer, written as JSON text by one compiled loop (``points_json.c``).

A 1,000-agent frame answers 30,000 points (3 s at 10 Hz). Written through Python objects (a bytes object
per number, or a dict per point) that cost about 10 ms per frame, a third of the request; numpy cannot do
better (a fixed-slot writer by table lookups was no faster: many passes over short columns).
Here one C pass writes every row's text into one buffer. It replaced a numba loop of the same algorithm that
took more than twice as long, timed side by side at 100 agents x 50 points.

The text is byte for byte what ``orjson.dumps`` gives for the list of ``{"timestamp", "x", "y"}`` dicts
(``tests/service/test_jsontext.py`` checks it), because the numbers arrive rounded to a fixed number of
decimals: ``np.round(v, d)`` is the float nearest to an integer over ``10**d``, and that decimal, trailing
zeros dropped (one kept after the point), is the shortest text that reads back as the same float, which
is what orjson writes. Where that does not hold (a value not finite, above about 2e15 once scaled, or
small enough for orjson's exponent notation), or not rounded as promised, :func:`points_rows` returns
``None`` and the caller writes the batch the slow way; so does it when the writer could not be built (no C
compiler: one warning at start-up) or is not wanted (``compiled=False``: the service's
``TRAJPRED_NATIVE_KERNEL=false``).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np

from models.native import BASE_FLAGS, CSource, load_library

# no -ffast-math: the exactness checks in points_json.c need IEEE division and rint
WRITER = CSource(Path(__file__).with_name("points_json.c"), BASE_FLAGS, needs_x86_64_v3=False)


class _Writer:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self.rows = lib.points_json_rows
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self.rows.argtypes = [
            ptr,
            ptr,
            ptr,
            ptr,
            ptr,
            i64,
            i64,
            ctypes.c_int,
            ctypes.c_int,
            ptr,
            ptr,
            ptr,
            ptr,
        ]
        self.rows.restype = i64
        lib.points_json_max_point.restype = i64
        self.max_point = int(lib.points_json_max_point())


@functools.cache
def _writer() -> _Writer | None:
    lib = load_library(WRITER, "the compiled answer writer", "orjson (slower answers)")
    return None if lib is None else _Writer(lib)


def available() -> bool:
    """Whether the compiled writer is in use (else every answer takes the slow way). The first call builds it
    (or loads its cached build): the service calls this at start-up, so that no request pays for it."""
    return _writer() is not None


def points_rows(
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    t_decimals: int,
    xy_decimals: int,
    compiled: bool = True,
    std: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[bytes] | None:
    """Row ``i`` as the JSON of the list ``[{"timestamp": t[i, k], "x": x[i, k], "y": y[i, k]}, ...]``, each
    point also with ``"std_x"``, ``"std_y"`` when ``std`` gives them.

    ``t``, ``x``, ``y`` (and both arrays of ``std``) are ``(A, K)`` float64, rounded to ``t_decimals`` and
    ``xy_decimals`` (1 to 16). ``None`` when some value is outside the range where the text is exactly
    orjson's, or when the compiled writer is unavailable or not wanted (``compiled=False``).
    """
    if not (1 <= t_decimals <= 16 and 1 <= xy_decimals <= 16):
        raise ValueError("decimals must be within 1..16")
    shapes = [v.shape for v in (t, x, y, *(std or ()))]
    if len(set(shapes)) != 1 or t.ndim != 2:
        raise ValueError(f"t, x, y (and std) must be (A, K) arrays of one shape, not {shapes}")
    a, k = t.shape
    if a == 0:
        return []
    if k == 0:
        return [b"[]"] * a
    w = _writer() if compiled else None
    if w is None:
        return None
    t, x, y = (np.ascontiguousarray(v, dtype=np.float64) for v in (t, x, y))
    sx, sy = (np.ascontiguousarray(v, dtype=np.float64) for v in std) if std is not None else (None, None)
    out = np.empty(a * (k * w.max_point + 2), np.uint8)
    ends = np.empty(a, np.int64)
    scratch = np.empty(2 * k, np.int64)  # where the previous row wrote each timestamp, and its length
    size = w.rows(
        t.ctypes.data,
        x.ctypes.data,
        y.ctypes.data,
        None if sx is None else sx.ctypes.data,
        None if sy is None else sy.ctypes.data,
        a,
        k,
        t_decimals,
        xy_decimals,
        out.ctypes.data,
        ends.ctypes.data,
        scratch.ctypes.data,
        scratch.ctypes.data + 8 * k,
    )
    if size < 0:
        return None
    text = out[:size].tobytes()
    starts = [0, *ends[:-1].tolist()]
    return [text[s:e] for s, e in zip(starts, ends.tolist(), strict=True)]
