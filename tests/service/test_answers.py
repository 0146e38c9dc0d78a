"""Whole answers of the predict routes (``service.answers``): every layout and encoding, with and without the
modes, is byte for byte what orjson or msgpack writes for the plain objects of the response schema."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
import orjson
import pytest

from service.answers import _Bodies, _predictions, encode
from service.frames import Predictions
from service.schemas import PredictResponse


def _predictions_of(agents: int, k: int, show_modes: bool, seed: int = 0) -> Predictions:
    rng = np.random.default_rng(seed)
    horizon = 30
    stamps = np.round(1.7e9 + rng.random(agents), 6)
    probs = rng.dirichlet(np.ones(k), agents)
    probs = -np.sort(-probs, axis=1)
    dt = rng.choice([0.1, 0.2, np.nan], agents)
    return Predictions(
        # ids JSON must escape, or that look like the list's separators once written
        agent_ids=[
            ['a"b', "c\\", 'd","e', "é-ü", 'f\\","'][i] if i < 5 else f"agent-{i}" for i in range(agents)
        ],
        timestamps=stamps,
        steps=rng.integers(1, 50, agents),
        new_track=rng.random(agents) < 0.2,
        dt_s=dt,
        agent_types=[["vehicle", "pedestrian", "unknown"][i % 3] for i in range(agents)],
        trajectory_t=np.round(stamps[:, None] + 0.1 * np.arange(1, horizon + 1), 6),
        modes_xy=rng.normal(0.0, 3e3, (agents, k, horizon, 2)),
        modes_std=rng.gamma(2.0, 0.5, (agents, k, horizon, 2)),
        probs=probs,
        show_modes=show_modes,
    )


def _plain(p: Predictions, layout: str) -> list[dict[str, Any]]:
    """The answers as plain Python objects, point by point (the reference)."""
    out = []
    k = p.probs.shape[1]
    for i, agent in enumerate(p.agent_ids):

        def trajectory(j: int, i: int = i) -> Any:
            t = p.trajectory_t[i].tolist()
            xy = np.round(p.modes_xy[i, j], 4)
            sd = np.round(p.modes_std[i, j], 4)  # type: ignore[index]
            cols = {"timestamp": t, "x": xy[:, 0].tolist(), "y": xy[:, 1].tolist()}
            cols |= {"std_x": sd[:, 0].tolist(), "std_y": sd[:, 1].tolist()}
            if layout == "columns":
                return cols
            return [dict(zip(cols, v, strict=True)) for v in zip(*cols.values(), strict=True)]

        d = {
            "agent_id": agent,
            "timestamp": float(p.timestamps[i]),
            "steps": int(p.steps[i]),
            "new_track": bool(p.new_track[i]),
            "dt_s": None if math.isnan(p.dt_s[i]) else float(p.dt_s[i]),
            "agent_type": p.agent_types[i],
            "trajectory": trajectory(0),
        }
        if p.show_modes:
            d["modes"] = [
                {"probability": float(p.probs[i, j]), "trajectory": trajectory(j)} for j in range(k)
            ]
        out.append(d)
    return out


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("encoding", ["json", "msgpack"])
@pytest.mark.parametrize("layout", ["points", "columns"])
@pytest.mark.parametrize(
    ("agents", "k", "show_modes"), [(40, 6, True), (40, 6, False), (3, 1, True), (0, 6, True)]
)
def test_answers_are_the_plain_objects_bytes(
    layout: str, encoding: str, compiled: bool, agents: int, k: int, show_modes: bool
):
    p = _predictions_of(agents, k, show_modes, seed=agents + k)
    payload = {
        "model": "ipnet",
        "model_version": "v",
        "predictions": _predictions(p, layout, encoding, compiled),
    }  # type: ignore[arg-type]
    body = bytes(encode(payload, encoding))  # type: ignore[arg-type]
    plain = {**payload, "predictions": _plain(p, layout)}
    if encoding == "json":
        assert body == orjson.dumps(plain)
        PredictResponse.model_validate_json(body)  # and it is the schema's answer
    else:
        assert body == msgpack.packb(plain, use_bin_type=True)
        PredictResponse.model_validate(msgpack.unpackb(body))


def test_values_the_compiled_writer_declines_are_written_the_slow_way():
    p = _predictions_of(5, 6, True)
    p.modes_xy[2, 3, 7, 0] = np.nan  # orjson: null
    p.modes_std[1, 0, 0, 1] = 1e-7  # type: ignore[index]  # rounds to 0.0
    for layout in ("points", "columns"):
        body = encode({"predictions": _predictions(p, layout)}, "json")  # type: ignore[arg-type]
        assert body == orjson.dumps({"predictions": _plain(p, layout)})
        assert orjson.loads(body)["predictions"][2]["modes"][3]["trajectory"] is not None


def test_an_answer_declined_by_one_model_of_two_is_written_the_slow_way_whole():
    # the A/B answer: the first model's list is written, the second's declined: the whole answer is then
    # written again the slow way, nothing of the first attempt left in it
    good, bad = _predictions_of(4, 6, True, seed=1), _predictions_of(4, 6, True, seed=2)
    bad.modes_xy[1, 0, 0, 1] = np.inf
    payload = {
        "predictions": {"ipnet": _predictions(good, "points"), "baseline": _predictions(bad, "points")}
    }
    plain = {"predictions": {"ipnet": _plain(good, "points"), "baseline": _plain(bad, "points")}}
    assert encode(payload, "json") == orjson.dumps(plain)  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
def test_an_answer_is_not_overwritten_while_it_is_held(encoding: str):
    # answers are written into reused buffers: one still held (not yet sent) must keep its bytes while the
    # next answers are written
    answers = [_predictions_of(30, 6, True, seed=s) for s in range(3)]
    bodies = [encode({"predictions": _predictions(p, "points", encoding)}, encoding) for p in answers]  # type: ignore[arg-type]
    for p, body in zip(answers, bodies, strict=True):
        plain = {"predictions": _plain(p, "points")}
        assert body == (
            orjson.dumps(plain) if encoding == "json" else msgpack.packb(plain, use_bin_type=True)
        )


def test_answer_buffers_are_taken_again_once_released():
    bodies = _Bodies()
    first = bodies.take(1000)
    held = memoryview(first)[:10]
    second = bodies.take(1000)
    assert second is not first  # the first is still viewed
    del held
    assert bodies.take(1000) is first  # released: taken again
    grown = bodies.take(50_000)  # too small: replaced by a larger one, every byte of it writable
    assert grown is not first and len(grown) >= 50_000 and bodies.take(10) is grown
    np.frombuffer(grown, np.uint8)[:] = 1
    views = [memoryview(bodies.take(10)) for _ in range(_Bodies.KEEP + 2)]  # more in flight than kept
    assert len({id(v.obj) for v in views}) == len(views) and len(bodies.bufs) == _Bodies.KEEP
