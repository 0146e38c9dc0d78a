"""The points layout of an answer, written as JSON text by a compiled loop (numba).

A 1,000-agent frame answers 30,000 points. Written through Python objects (a bytes object per number, or
a dict per point) that cost about 10 ms per frame, a third of the request; numpy cannot do better (a
fixed-slot writer by table lookups was no faster: many passes over short columns; numbers in issue 5).
Here one compiled pass writes every row's text into one buffer.

The text is byte for byte what ``orjson.dumps`` gives for the list of ``{"timestamp", "x", "y"}`` dicts
(``tests/service/test_jsontext.py`` checks it), because the numbers arrive rounded to a fixed number of
decimals: ``np.round(v, d)`` is the float nearest to an integer over ``10**d``, and that decimal, trailing
zeros dropped (one kept after the point), is the shortest text that reads back as the same float, which
is what orjson writes. Where that does not hold (a value not finite, above about 2e15 once scaled, or
small enough for orjson's exponent notation), or not rounded as promised, :func:`points_rows` returns
``None`` and the caller writes the batch the slow way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import numpy as np
from numba import njit

_HEAD = np.frombuffer(b'{"timestamp":', np.uint8)
_X_KEY = np.frombuffer(b',"x":', np.uint8)
_Y_KEY = np.frombuffer(b',"y":', np.uint8)
_MAX_NUMBER = 1 + 16 + 1 + 16  # sign, integer digits, point, decimals: bytes of one number at most
_MAX_SCALED = 2.0**51  # below this, rint(v * 10**d) recovers the integer np.round divided (error < 0.5)


_PAIRS = np.frombuffer(b"".join(b"%02d" % i for i in range(100)), np.uint8)  # "00" .. "99"
_POWERS = np.array([10**i for i in range(19)], np.int64)


@njit(cache=True, nogil=True, inline="always")
def _digits(n: int, width: int, out: np.ndarray, pos: int) -> None:  # pragma: no cover
    """``n`` as exactly ``width`` decimal digits (zero-padded) at ``out[pos:]``, two at a time."""
    end = pos + width
    while width >= 2:
        q = n // 100
        r = (n - q * 100) * 2
        out[end - 2] = _PAIRS[r]
        out[end - 1] = _PAIRS[r + 1]
        n = q
        end -= 2
        width -= 2
    if width:
        out[end - 1] = 48 + n % 10


@njit(cache=True, nogil=True, inline="always")
def _number(v: float, decimals: int, scale: float, out: np.ndarray, pos: int) -> int:  # pragma: no cover
    """Write ``v`` at ``out[pos:]`` as orjson would; the position after it, or -1 outside the exact range."""
    a = abs(v) * scale
    if not a < _MAX_SCALED:  # also NaN
        return -1
    af = np.rint(a)
    q = af / scale
    if q != abs(v):  # not rounded to these decimals: orjson's shortest text would be longer
        return -1
    if 0.0 < af < scale * 1e-5:  # orjson writes below 1e-5 in exponent notation
        return -1
    if math.copysign(1.0, v) < 0.0:  # -0.0 too: orjson writes "-0.0"
        out[pos] = 45  # "-"
        pos += 1
    # float floor division is exact here: af < 2**51 and the remainder is at least 1/scale from the next
    # integer, far above the quotient's rounding error (an integer division would cost several times more)
    wf = math.floor(q)
    whole = int(wf)
    frac = int(af - wf * scale)
    width = 1
    while width < 19 and whole >= _POWERS[width]:
        width += 1
    _digits(whole, width, out, pos)
    pos += width
    out[pos] = 46  # "."
    pos += 1
    # decimals without trailing zeros, at least one
    keep = decimals
    while keep > 1 and frac % 10 == 0:
        frac //= 10
        keep -= 1
    _digits(frac, keep, out, pos)
    return pos + keep


@njit(cache=True, nogil=True, inline="always")
def _put(text: np.ndarray, out: np.ndarray, pos: int) -> int:  # pragma: no cover
    for i in range(text.size):
        out[pos + i] = text[i]
    return pos + text.size


@njit(cache=True, nogil=True)
def _rows(
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    t_decimals: int,
    xy_decimals: int,
    head: np.ndarray,
    x_key: np.ndarray,
    y_key: np.ndarray,
    out: np.ndarray,
    ends: np.ndarray,
) -> int:  # pragma: no cover
    """Every row's text back to back in ``out``, row ``i`` ending at ``ends[i]``; the length, or -1.

    A frame's agents mostly share their timestamps: a timestamp equal to the one above it in the previous
    row is copied from that row's text rather than written again.
    """
    t_scale = 10.0**t_decimals
    xy_scale = 10.0**xy_decimals
    n_k = t.shape[1]
    t_at = np.zeros(n_k, np.int64)  # where the previous row wrote each timestamp, and its length
    t_len = np.zeros(n_k, np.int64)
    pos = 0
    for i in range(t.shape[0]):
        out[pos] = 91  # "["
        pos += 1
        for k in range(n_k):
            if k:
                out[pos] = 44  # ","
                pos += 1
            pos = _put(head, out, pos)
            if i and t[i, k] == t[i - 1, k] and t_len[k]:
                start = t_at[k]
                for j in range(t_len[k]):
                    out[pos + j] = out[start + j]
                t_at[k] = pos
                pos += t_len[k]
            else:
                end = _number(t[i, k], t_decimals, t_scale, out, pos)
                if end < 0:
                    return -1
                t_at[k] = pos
                t_len[k] = end - pos
                pos = end
            pos = _put(x_key, out, pos)
            pos = _number(x[i, k], xy_decimals, xy_scale, out, pos)
            if pos < 0:
                return -1
            pos = _put(y_key, out, pos)
            pos = _number(y[i, k], xy_decimals, xy_scale, out, pos)
            if pos < 0:
                return -1
            out[pos] = 125  # "}"
            pos += 1
        out[pos] = 93  # "]"
        pos += 1
        ends[i] = pos
    return pos


_ROWS = cast(Callable[..., int], _rows)  # numba's dispatcher, typed for callers


def points_rows(
    t: np.ndarray, x: np.ndarray, y: np.ndarray, t_decimals: int, xy_decimals: int
) -> list[bytes] | None:
    """Row ``i`` as the JSON of the list ``[{"timestamp": t[i, k], "x": x[i, k], "y": y[i, k]}, ...]``.

    ``t``, ``x`` and ``y`` are ``(A, K)`` float64, rounded to ``t_decimals`` and ``xy_decimals``
    (1 to 16). ``None`` when some value is outside the range where the text is exactly orjson's.
    """
    if not (1 <= t_decimals <= 16 and 1 <= xy_decimals <= 16):
        raise ValueError("decimals must be within 1..16")
    a, k = t.shape
    if a == 0:
        return []
    if k == 0:
        return [b"[]"] * a
    prepared = [np.ascontiguousarray(v, dtype=np.float64) for v in (t, x, y)]
    per_point = len(_HEAD) + len(_X_KEY) + len(_Y_KEY) + 3 * _MAX_NUMBER + 2
    out = np.empty(a * (k * per_point + 2), np.uint8)
    ends = np.empty(a, np.int64)
    size = _ROWS(*prepared, t_decimals, xy_decimals, _HEAD, _X_KEY, _Y_KEY, out, ends)
    if size < 0:
        return None
    text = out[:size].tobytes()
    starts = [0, *ends[:-1].tolist()]
    return [text[s:e] for s, e in zip(starts, ends.tolist(), strict=True)]


def warm_up() -> None:
    """Compile (or load the cached compilation of) the writer, so that no request pays for it."""
    one = np.zeros((1, 1))
    points_rows(one, one, one, 6, 4)
