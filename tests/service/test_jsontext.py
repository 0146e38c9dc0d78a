"""The compiled writer of the points layout: orjson's bytes exactly, or ``None`` where it cannot be."""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from service import jsontext
from service.answers import _points_json_spliced
from service.jsontext import points_text


def points_rows(*args: Any, **kwargs: Any) -> list[bytes] | None:
    """Each row of :func:`points_text` as bytes (``None`` when it declines)."""
    written = points_text(*args, **kwargs)
    if written is None:
        return None
    text, ends = written
    return [bytes(text[s:e]) for s, e in itertools.pairwise([0, *ends])]


def _route_rows(
    t: np.ndarray, x: np.ndarray, y: np.ndarray, compiled: bool = True, std: Any = None
) -> list[bytes]:
    """What the answer writes: the compiled rows, or where they are declined the slower way."""
    rows = points_rows(t, x, y, 6, 4, compiled, std)
    return rows if rows is not None else [orjson.dumps(f) for f in _points_json_spliced(t, x, y, std)]


def _expected(t: np.ndarray, x: np.ndarray, y: np.ndarray) -> list[bytes]:
    """What orjson writes for each row's list of point dicts (the reference the writer must equal)."""
    return [
        orjson.dumps([{"timestamp": a, "x": b, "y": c} for a, b, c in zip(tr, xr, yr, strict=True)])
        for tr, xr, yr in zip(t.tolist(), x.tolist(), y.tolist(), strict=True)
    ]


def _batch(
    rng: np.random.Generator, agents: int, k: int, shared_t: bool, spread: float
) -> tuple[np.ndarray, ...]:
    base = np.full((agents, 1), 1.7e9 + 0.37) if shared_t else 1.7e9 + rng.random((agents, 1))
    t = np.round(base + 0.1 * np.arange(1, k + 1), 6)
    x = np.round(rng.normal(0.0, spread, (agents, k)), 4)
    y = np.round(rng.normal(0.0, spread, (agents, k)), 4)
    return t, x, y


@pytest.mark.parametrize("shared_t", [True, False])
@pytest.mark.parametrize(
    "agents,k,spread", [(1, 1, 10.0), (4, 30, 3e4), (50, 7, 300.0), (300, 30, 1e6), (5, 50, 0.01)]
)
def test_rows_are_orjsons_bytes(agents: int, k: int, spread: float, shared_t: bool):
    rng = np.random.default_rng(agents * 31 + k)
    t, x, y = _batch(rng, agents, k, shared_t, spread)
    # the corners of the number format: signed zero, integral values, the smallest fixed-notation values,
    # values with trailing zeros, a timestamp repeated within a row
    x[0, 0], y[0, 0] = -0.0, 12.0
    if k > 3:
        x[0, 1], y[0, 1], x[0, 2], y[0, 2] = 0.0001, -0.0001, 1234.5, -10.0
        t[0, 3] = t[0, 2]
    assert points_rows(t, x, y, 6, 4) == _expected(t, x, y)


@pytest.mark.parametrize("compiled", [True, False])
def test_rows_with_deviations_are_orjsons_bytes(compiled: bool):
    rng = np.random.default_rng(5)
    t, x, y = _batch(rng, 40, 30, True, 300.0)
    sx, sy = (np.round(rng.gamma(2.0, 0.5, (40, 30)), 4) for _ in range(2))
    sx[0, 0] = 0.0001
    expected = [
        orjson.dumps(
            [
                {"timestamp": a, "x": b, "y": c, "std_x": d, "std_y": e}
                for a, b, c, d, e in zip(*r, strict=True)
            ]
        )
        for r in zip(t.tolist(), x.tolist(), y.tolist(), sx.tolist(), sy.tolist(), strict=True)
    ]
    assert _route_rows(t, x, y, compiled, (sx, sy)) == expected
    if compiled:
        assert points_rows(t, x, y, 6, 4, std=(sx, sy)) == expected


@pytest.mark.parametrize("with_std", [False, True])
@pytest.mark.parametrize("agents,k,spread", [(1, 1, 10.0), (40, 30, 3e4), (3, 0, 1.0), (0, 4, 1.0)])
def test_columns_rows_are_orjsons_bytes(agents: int, k: int, spread: float, with_std: bool):
    rng = np.random.default_rng(agents + k)
    t, x, y = _batch(rng, agents, k, False, spread)
    sx, sy = (np.round(rng.gamma(2.0, 0.5, (agents, k)), 4) for _ in range(2))
    if agents and k:
        x[0, 0], y[0, 0], sx[0, 0] = -0.0, 12.0, 0.0001
    cols = {"timestamp": t, "x": x, "y": y} | ({"std_x": sx, "std_y": sy} if with_std else {})
    expected = [orjson.dumps({key: v[i].tolist() for key, v in cols.items()}) for i in range(agents)]
    assert points_rows(t, x, y, 6, 4, std=(sx, sy) if with_std else None, layout="columns") == expected
    if agents and k:
        x[-1, -1] = np.nan  # orjson writes null: left to the slow way
        assert points_text(t, x, y, 6, 4, layout="columns") is None


@pytest.mark.parametrize("spread", [1.0, 300.0, 1e6, 1e9])
def test_values_not_rounded_are_written_as_np_round_rounds_them(spread: float):
    # the writer rounds itself: its text is orjson's of np.round(v, d), halves (to even, as numpy), the
    # values that round to -0.0 and those that round up to one more integer digit included (each number
    # of integer digits has its own way in the writer)
    rng = np.random.default_rng(int(spread))
    t = 1.7e9 + rng.random((30, 20)) * 1e3
    x, y = rng.normal(0.0, spread, (30, 20)), rng.normal(0.0, spread, (30, 20))
    x[0, :6] = [0.00005, 0.00015, -0.00004, 2.50005, -1e-9, 0.123456]
    y[0, :5] = [9.99995, -99.99996, 9999.99995, 99999999.99995, 12345678.9]
    t[0, 0] = 1.7e9 + 3e-7
    rounded = np.round(t, 6), np.round(x, 4), np.round(y, 4)
    assert points_rows(t, x, y, 6, 4) == _expected(*rounded)
    assert points_rows(*rounded, 6, 4) == _expected(*rounded)
    for layout in ("columns",):
        assert points_rows(t, x, y, 6, 4, layout=layout) == points_rows(*rounded, 6, 4, layout=layout)


def test_every_four_decimal_fraction_is_orjsons_text():
    # the positions' and deviations' four decimals are written side by side in one register, their
    # trailing zeros counted from its bytes: every fraction, after integer parts of each way, both signs,
    # and values a little off the grid (rounded by the writer)
    frac = np.arange(10_000) / 1e4
    x = np.concatenate([frac, 7.0 + frac, -(1234.0 + frac), 98765.0 + frac]).reshape(-1, 40)
    y = -(x + 4.9e-5)
    t = np.full(x.shape, 1.7e9 + 0.1)
    assert points_rows(t, x, y, 6, 4) == _expected(t, np.round(x, 4), np.round(y, 4))


def test_small_timestamps_and_the_exponent_threshold():
    # orjson writes 1e-5 as 0.00001 and anything smaller in exponent notation: the writer takes the former
    t = np.array([[0.00001, 0.000015, 0.1, 3.0]])
    x = np.array([[0.5, -0.25, 100.0, 0.0]])
    assert points_rows(t, x, x, 6, 4) == _expected(t, x, x)


@pytest.mark.parametrize(
    "column,bad",
    [
        ("t", 1e-6),  # orjson: 1e-6
        ("x", float("nan")),  # orjson: null
        ("y", float("inf")),
        ("x", -float("inf")),
        ("y", 3e11),  # above 2**51 once scaled by 10**4
        ("t", 3e9),  # above 2**51 once scaled by 10**6
    ],
)
def test_values_outside_the_exact_range_are_left_to_the_slow_way(column: str, bad: float):
    t, x, y = _batch(np.random.default_rng(0), 3, 4, True, 10.0)
    {"t": t, "x": x, "y": y}[column][1, 2] = bad
    assert points_rows(t, x, y, 6, 4) is None
    # and the route's writer still answers exactly what orjson writes (null for NaN and infinities)
    assert b"[" + b",".join(_route_rows(t, x, y)) + b"]" == orjson.dumps(
        [
            [{"timestamp": a, "x": b, "y": c} for a, b, c in zip(*r, strict=True)]
            for r in zip(t.tolist(), x.tolist(), y.tolist(), strict=True)
        ]
    )


def test_empty_shapes_and_bad_decimals():
    assert points_rows(np.zeros((0, 5)), np.zeros((0, 5)), np.zeros((0, 5)), 6, 4) == []
    assert points_rows(np.zeros((2, 0)), np.zeros((2, 0)), np.zeros((2, 0)), 6, 4) == [b"[]", b"[]"]
    with pytest.raises(ValueError):
        points_rows(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), 0, 4)


@pytest.fixture
def fresh_writer():
    """``jsontext._writer`` is cached per process: clear it around a test that changes its environment."""
    jsontext._writer.cache_clear()
    yield
    jsontext._writer.cache_clear()


def test_the_compiled_writer_is_in_use_here():
    # the package's install built it: the fast path must be the one these tests exercise
    assert jsontext.available()


@pytest.mark.parametrize("how", ["not built", "not wanted"])
def test_without_the_compiled_writer_answers_are_the_same_bytes(
    how: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_writer: None,
):
    compiled = how != "not wanted"  # the service's TRAJPRED_NATIVE_KERNEL=false
    if how == "not built":  # the import fails, as in a source tree used without installing the package
        monkeypatch.setitem(sys.modules, "service._points_json_native", None)
    t, x, y = _batch(np.random.default_rng(1), 20, 30, True, 300.0)
    with caplog.at_level(logging.WARNING, logger="models.native"):
        assert points_rows(t, x, y, 6, 4, compiled) is None
        assert jsontext.available() == (how == "not wanted")  # a compiler is there; only not wanted
    assert ("using orjson" in caplog.text) == (how == "not built")
    assert _route_rows(t, x, y, compiled) == _expected(t, x, y)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        points_rows(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((3, 2)), 6, 4)


def test_futures_need_whole_groups_and_a_probability_per_row():
    t, x, y = _batch(np.random.default_rng(2), 6, 4, True, 10.0)
    probs = b",".join([b"0.5"] * 6)
    written = points_text(t, x, y, 6, 4, futures=jsontext.Futures(3, probs))
    assert written is not None and len(written[1]) == 2  # an end per agent: two agents of three futures
    text = bytes(written[0][: written[1][0]])
    assert text.startswith(b',"trajectory":[') and text.count(b'{"probability":0.5,"trajectory":[') == 3
    with pytest.raises(ValueError, match="whole groups"):
        points_text(t, x, y, 6, 4, futures=jsontext.Futures(4, b",".join([b"0.5"] * 6)))
    with pytest.raises(ValueError, match="whole groups"):
        points_text(t, x, y, 6, 4, futures=jsontext.Futures(3, b"0.5,0.5"))


def test_msgpack_futures_need_a_probability_per_row():
    t, x, y = _batch(np.random.default_rng(3), 6, 4, True, 10.0)
    written = jsontext.msgpack_text(t, x, y, probabilities=np.full((2, 3), 1 / 3))
    assert written is not None and len(written[1]) == 2  # an end per agent
    with pytest.raises(ValueError, match="one per row"):
        jsontext.msgpack_text(t, x, y, probabilities=np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="decimals"):
        jsontext.msgpack_text(t, x, y, xy_decimals=17)


def test_heads_are_one_per_answer_and_into_must_hold_the_bound():
    t, x, y = _batch(np.random.default_rng(4), 6, 4, True, 10.0)
    heads = jsontext.Heads.of([b'{"agent_id":"a"', b'{"agent_id":"b"'])
    futures = jsontext.Futures(3, b",".join([b"0.5"] * 6))
    bound = jsontext.text_bound(6, 4, futures, heads)
    assert bound is not None
    out = np.zeros(bound + 3, np.uint8)
    written = points_text(t, x, y, 6, 4, futures=futures, heads=heads, into=(out, 3))
    assert written is not None
    text = b"[" + bytes(written[0]) + b"]"  # the list of answers but its brackets, written at the offset
    assert bytes(out[3 : 3 + len(written[0])]) == text[1:-1]
    answers = orjson.loads(text)
    assert [a["agent_id"] for a in answers] == ["a", "b"] and len(answers[1]["modes"]) == 3
    with pytest.raises(ValueError, match="heads: one per answer"):
        points_text(t, x, y, 6, 4, heads=heads)  # six rows without futures are six answers
    with pytest.raises(ValueError, match="needs up to"):
        points_text(t, x, y, 6, 4, futures=futures, heads=heads, into=(out, 4))


@pytest.mark.parametrize("layout", ["points", "columns"])
def test_strided_values_are_written_as_they_lie(layout: str):
    # x and y the two components of one (A, H, 2) array, rows a leading slice of longer ones, a reversed
    # view, float32: the same text as contiguous float64 copies give
    rng = np.random.default_rng(5)
    t = np.round(1.7e9 + np.cumsum(rng.random((7, 12)), axis=1), 6)
    xy = rng.normal(0.0, 500.0, (7, 20, 2))[:, :12]
    std = rng.gamma(2.0, 0.5, (7, 12, 2)).astype(np.float32)[:, ::-1]
    views = (t, xy[..., 0], xy[..., 1], (std[..., 0], std[..., 1]))
    copies = (t, *(np.ascontiguousarray(v, np.float64) for v in (xy[..., 0], xy[..., 1])))
    sd = tuple(np.ascontiguousarray(v, np.float64) for v in (std[..., 0], std[..., 1]))
    want = points_rows(*copies, 6, 4, std=sd, layout=layout)
    assert want is not None and points_rows(*views[:3], 6, 4, std=views[3], layout=layout) == want
    packed = jsontext.msgpack_text(*views[:3], std=views[3], layout=layout, xy_decimals=4)
    assert packed is not None
    assert bytes(packed[0]) == bytes(jsontext.msgpack_text(*copies, std=sd, layout=layout, xy_decimals=4)[0])  # type: ignore[index]
