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
``None`` and the caller writes the batch the slow way; so does it when the writer is not built (a source
tree used without installing the package: one warning at start-up) or is not wanted (``compiled=False``: the service's
``TRAJPRED_NATIVE_KERNEL=false``).
"""

from __future__ import annotations

import functools

import numpy as np

from models.native import Extension, load_extension


class _Writer:
    def __init__(self, ext: Extension) -> None:
        self.ffi = ext.ffi
        self.rows = ext.lib.points_json_rows
        self.max_point = int(ext.lib.points_json_max_point())


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
    buf = w.ffi.from_buffer  # typed views of the (contiguous) arrays, checked against the C declaration
    size = w.rows(
        buf("double[]", t),
        buf("double[]", x),
        buf("double[]", y),
        w.ffi.NULL if sx is None else buf("double[]", sx),
        w.ffi.NULL if sy is None else buf("double[]", sy),
        a,
        k,
        t_decimals,
        xy_decimals,
        buf("char[]", out),
        buf("int64_t[]", ends),
        buf("int64_t[]", scratch[:k]),
        buf("int64_t[]", scratch[k:]),
    )
    if size < 0:
        return None
    text = out[:size].tobytes()
    starts = [0, *ends[:-1].tolist()]
    return [text[s:e] for s, e in zip(starts, ends.tolist(), strict=True)]
