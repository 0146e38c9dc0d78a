"""The compiled reader of request bodies (``service/frame_reader.c``) against the general way (orjson, or the
stdlib where orjson refuses, or msgpack; then the schema): the same observations, bit for bit, for every body
it takes, JSON or MessagePack; every other body left to the schema, which answers it as before."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import numpy as np
import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service import frame_reader
from service.frame_reader import read_frame
from service.frames import Observations
from service.schemas import PredictRequest
from tests.service.conftest import MakeClient
from tests.support import Replay


def test_the_compiled_reader_is_in_use_here() -> None:
    # the package's install built it: the reader must be the one these tests exercise
    assert frame_reader.available()


def _general(body: bytes) -> Observations:
    """What the routes did before the reader: orjson (the stdlib where orjson refuses), then the schema."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = json.loads(body)
    return Observations.of(PredictRequest.model_validate(data))


def _general_msgpack(body: bytes) -> Observations:
    """What the routes did with a MessagePack body before the reader."""
    return Observations.of(
        PredictRequest.model_validate(msgpack.unpackb(body, raw=False, strict_map_key=True))
    )


def _packed_map(items: list[tuple[str, Any]]) -> bytes:
    """A MessagePack map of these entries as they are (a key may come twice: msgpack keeps the last)."""
    head = bytes([0x80 | len(items)]) if len(items) < 16 else b"\xde" + len(items).to_bytes(2, "big")
    return head + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in items)


def _bits(a: np.ndarray) -> list[int]:
    return np.ascontiguousarray(a, dtype=np.float64).view(np.int64).ravel().tolist()  # -0.0 is not 0.0


def _assert_same(read: Observations | None, general: Observations) -> None:
    assert read is not None, "the reader refused a body the schema accepts as it is"
    assert read.ids == general.ids
    assert _bits(read.t) == _bits(general.t)
    assert _bits(read.xy) == _bits(general.xy)
    assert read.agent_type.tolist() == general.agent_type.tolist()
    assert read.agent_type.dtype == general.agent_type.dtype == np.int64


def test_real_frames_read_as_the_schema_reads_them(replay: Replay) -> None:
    for i in range(0, len(replay.times), max(1, len(replay.times) // 20)):
        body = orjson.dumps(replay.body(i))
        _assert_same(read_frame(body), _general(body))
    # the stdlib's spacing (", " and ": ") and an indented body
    body = json.dumps(replay.body(0), indent=2).encode()
    _assert_same(read_frame(body), _general(body))


def _number_texts(v: float) -> list[str]:
    """The ways a client may write the number ``v``."""
    texts = [repr(v), f"{v:.3f}", f"{v:.1f}", f"{v:.6e}", f"{v:.17g}", f"{v:E}", f"{v:.12f}"]
    if abs(v) < 1e18:
        texts.append(str(int(v)))
    # (a number of 64 characters or more is left to the schema: a test below)
    return [t for t in texts if "n" not in t.lower() and len(t) < 64]


finite = st.floats(allow_nan=False, allow_infinity=False)
coordinates = st.one_of(
    finite,
    st.floats(-1e6, 1e6),
    st.integers(-(10**25), 10**25).map(float),
    st.sampled_from([0.0, -0.0, 5e-324, 2.2250738585072014e-308, 9007199254740993.0, 1718000000.1, 0.1]),
)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.tuples(coordinates, coordinates, coordinates), min_size=1, max_size=6),
    form=st.integers(0, 7),
    kinds=st.lists(
        st.sampled_from([None, "null", "vehicle", "pedestrian", "cyclist", "unknown"]), min_size=6
    ),
    spacing=st.sampled_from(["", " ", "\n\t ", "\r\n"]),
    order=st.permutations(["agent_id", "timestamp", "x", "y", "agent_type"]),
)
def test_numbers_in_every_form_read_as_the_schema_reads_them(
    values: list[tuple[float, float, float]],
    form: int,
    kinds: list[str | None],
    spacing: str,
    order: list[str],
) -> None:
    obs = []
    for i, (t, x, y) in enumerate(values):
        # one of the ways to write each number, the same for the whole body (the texts differ per number)
        fields: dict[str, str] = {
            "agent_id": json.dumps(f"a-{i}/~ !{i}"),
            "timestamp": _pick(_number_texts(abs(t)), form),
            "x": _pick(_number_texts(x), form),
            "y": _pick(_number_texts(y), form),
        }
        kind = kinds[i]
        if kind is not None:
            fields["agent_type"] = "null" if kind == "null" else json.dumps(kind)
        members = [f'"{k}"{spacing}:{spacing}{fields[k]}' for k in order if k in fields]
        obs.append("{" + spacing + f",{spacing}".join(members) + spacing + "}")
    body = ("{" + spacing + '"observations":' + spacing + "[" + ",".join(obs) + "]" + spacing + "}").encode()
    try:
        general = _general(body)
    except ValidationError:  # a number beyond the float range: the schema's error, the reader must refuse
        assert read_frame(body) is None
        return
    _assert_same(read_frame(body), general)


def _pick(texts: list[str], form: int) -> str:
    return texts[form % len(texts)]


@pytest.mark.parametrize(
    "text",
    [
        "0", "-0", "-0.0", "0.0", "1e0", "1E+2", "1e-2", "-1.5e-7", "123456789012345678", "1234567890123456789",
        "12345678901234567890123", "9007199254740993", "9007199254740992.5", "0.30000000000000004",
        "1.7976931348623157e308", "4.9e-324", "2e-400", "1718000000.123456789", "0.000000000000000000001",
        "100000000000000000000000.0", "1e22", "1e23", "123456789e-22", "0.1e1", "3.141592653589793238462643383",
    ],
)  # fmt: skip
def test_each_number_form_reads_as_the_reference_parser(text: str) -> None:
    negative = text[1:] if text.startswith("-") else "-" + text
    body = f'{{"observations": [{{"agent_id": "a", "timestamp": 1.5, "x": {text}, "y": {negative}}}]}}'
    _assert_same(read_frame(body.encode()), _general(body.encode()))
    body = (
        f'{{"observations": [{{"agent_id": "a", "timestamp": {text.lstrip("-")}, "x": 0, "y": 0}}]}}'.encode()
    )
    _assert_same(read_frame(body), _general(body))


REFUSED = [
    # errors: the schema names them
    b'{"observations": []}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": 1}]}',
    b'{"observations": [{"agent_id": "", "timestamp": 1, "x": 1, "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": -1, "x": 1, "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": NaN, "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": Infinity, "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": 1e999, "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": "1", "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": true, "y": 2}]}',
    b'{"observations": [{"agent_id": 7, "timestamp": 1, "x": 1, "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": 1, "y": 2, "speed": 3}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": 1, "y": 2, "agent_type": "bus"}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": 1, "y": 2}], "more": 1}',
    b'{"observations": [{"agent_id": "a\x01", "timestamp": 1, "x": 1, "y": 2}]}',
    b'{"observations": [{"agent_id": "' + b"a" * 129 + b'", "timestamp": 1, "x": 1, "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 01, "x": 1, "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1., "x": 1, "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": .5, "x": 1, "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": +1, "x": 1, "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1e, "x": 1, "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": 1, "y": 2},]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": 1, "y": 2}]} x',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": 1, "y": 2}]',
    b'[{"agent_id": "a", "timestamp": 1, "x": 1, "y": 2}]',
    b"",
    # valid, but not the reader's to read: escapes, non-ASCII, duplicate keys, a number of 64 characters
    b'{"observations": [{"agent_id": "a\\u0062", "timestamp": 1, "x": 1, "y": 2}]}',
    '{"observations": [{"agent_id": "véh", "timestamp": 1, "x": 1, "y": 2}]}'.encode(),
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": 1, "x": 3, "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": 1.' + b"0" * 62 + b', "y": 2}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": 1, "y": 2, "agent_type": "v\\u0065hicle"}]}',
    b'{"observations": [{"agent_id": "a", "timestamp": 1, "x": 1, "y": 2}], "observations": []}',
]


@pytest.mark.parametrize("body", REFUSED)
def test_bodies_outside_the_readers_subset_are_left_to_the_schema(body: bytes) -> None:
    assert read_frame(body) is None


def test_without_the_reader_wanted_every_body_takes_the_general_way(replay: Replay) -> None:
    body = orjson.dumps(replay.body(0))
    assert read_frame(body) is not None and read_frame(body, compiled=False) is None


@pytest.fixture
def fresh_reader() -> Iterator[None]:
    """``frame_reader._reader`` is cached per process: clear it around a test that changes its environment."""
    frame_reader._reader.cache_clear()
    yield
    frame_reader._reader.cache_clear()


def test_without_the_reader_built_the_service_validates_every_body(
    make_client: MakeClient,
    replay: Replay,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_reader: None,
) -> None:
    # the import fails, as in a source tree used without installing the package: one warning, then the schema
    monkeypatch.setitem(sys.modules, "service._frame_reader_native", None)
    with caplog.at_level(logging.WARNING, logger="models.native"):
        client = make_client()
    assert not frame_reader.available() and "using the schema's validation" in caplog.text
    body = orjson.dumps(replay.body(0))
    assert read_frame(body) is None
    r = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["predictions"]) == len(replay.body(0)["observations"])


def _same_answers(
    make_client: MakeClient, frames: Callable[[int], tuple[bytes, bytes]], encoding: str
) -> None:
    """Two services fed the same frames, one each frame as ``frames(i)[0]`` (a body the reader takes), the other
    as ``frames(i)[1]`` (the same observations to the schema, in a body the reader refuses): the same answers,
    byte for byte, over HTTP (frames 0-5) and then over the stream (6-9)."""
    read, general = make_client(), make_client()
    headers = {"content-type": "application/msgpack" if encoding == "msgpack" else "application/json"}
    for i in range(6):
        raw, other = frames(i)
        a = read.post("/v1/ab/predict", content=raw, headers=headers)
        b = general.post("/v1/ab/predict", content=other, headers=headers)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.content == b.content
    with (
        read.websocket_connect("/v1/stream?route=ab") as ws_read,
        general.websocket_connect("/v1/stream?route=ab") as ws_general,
    ):
        for i in range(6, 10):
            raw, other = frames(i)
            if encoding == "msgpack":
                ws_read.send_bytes(raw)
                ws_general.send_bytes(other)
                a_reply, b_reply = ws_read.receive_bytes(), ws_general.receive_bytes()
            else:
                ws_read.send_text(raw.decode())
                ws_general.send_text(other.decode())
                a_reply, b_reply = ws_read.receive_text().encode(), ws_general.receive_text().encode()
            assert b"error" not in a_reply[:9] and a_reply == b_reply


def test_a_frame_answers_the_same_read_either_way(make_client: MakeClient, replay: Replay) -> None:
    """The other body escapes the first character of the first agent id."""

    def both_ways(i: int) -> tuple[bytes, bytes]:
        body = replay.body(i)
        first_id = body["observations"][0]["agent_id"]
        raw = orjson.dumps(body)
        other = raw.replace(
            b'"agent_id":"' + first_id.encode(),
            b'"agent_id":"\\u%04x' % ord(first_id[0]) + first_id[1:].encode(),
            1,
        )
        assert other != raw and read_frame(other) is None and read_frame(raw) is not None
        assert _general(other).ids == _general(raw).ids
        return raw, other

    _same_answers(make_client, both_ways, "json")


# --- MessagePack --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("single_float", [False, True])
def test_real_frames_in_messagepack_read_as_the_schema_reads_them(replay: Replay, single_float: bool) -> None:
    for i in range(0, len(replay.times), max(1, len(replay.times) // 20)):
        body = msgpack.packb(replay.body(i), use_single_float=single_float)
        _assert_same(read_frame(body, "msgpack"), _general_msgpack(body))


msgpack_numbers = st.one_of(
    finite,
    st.integers(-(2**63), 2**64 - 1),
    st.integers(-40, 300),
    st.sampled_from([0.0, -0.0, 5e-324, 2**53 + 1, 2**64 - 1, -(2**63), 1718000000.1]),
)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.tuples(msgpack_numbers, msgpack_numbers, msgpack_numbers), min_size=1, max_size=20),
    single_float=st.booleans(),
    kinds=st.lists(
        st.sampled_from([None, "nil", "vehicle", "pedestrian", "cyclist", "unknown"]), min_size=20
    ),
    order=st.permutations(["agent_id", "timestamp", "x", "y", "agent_type"]),
    id_length=st.sampled_from([1, 31, 32, 128]),
)
def test_messagepack_in_every_form_reads_as_the_schema_reads_it(
    values: list[tuple[float, float, float]],
    single_float: bool,
    kinds: list[str | None],
    order: list[str],
    id_length: int,
) -> None:
    observations = []
    for i, (t, x, y) in enumerate(values):
        # ids as fixstr or str8 (32 characters and more), with the characters JSON would escape
        fields: dict[str, Any] = {
            "agent_id": (f'"\\{i}-' * 40)[:id_length],
            "timestamp": abs(t),
            "x": x,
            "y": y,
        }
        if kinds[i] is not None:
            fields["agent_type"] = None if kinds[i] == "nil" else kinds[i]
        observations.append(_packed_map([(k, fields[k]) for k in order if k in fields]))
    n = len(observations)
    head = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
    body = b"\x81" + msgpack.packb("observations") + head + b"".join(observations)
    if single_float:  # the same body with its float64 numbers as the float32 nearest them
        try:
            body = msgpack.packb(msgpack.unpackb(body), use_single_float=True)
        except OverflowError:  # beyond float32's range: msgpack does not pack it
            assume(False)
    try:
        general = _general_msgpack(body)
    except ValidationError:  # (every number here is finite: the schema takes each body)
        assert read_frame(body, "msgpack") is None
        return
    _assert_same(read_frame(body, "msgpack"), general)


def _one(**fields: Any) -> dict[str, Any]:
    return {"observations": [{"agent_id": "a", "timestamp": 1.0, "x": 1.0, "y": 2.0, **fields}]}


MSGPACK_REFUSED = [
    # errors: the schema names them
    msgpack.packb({"observations": []}),
    msgpack.packb(_one(x=True)),
    msgpack.packb(_one(x="1")),
    msgpack.packb(_one(x=float("nan"))),
    msgpack.packb(_one(y=float("inf"))),
    msgpack.packb(_one(timestamp=-1.0)),
    msgpack.packb(_one(agent_id="")),
    msgpack.packb(_one(agent_id="a" * 129)),
    msgpack.packb(_one(agent_id=b"a")),  # bin, not str
    msgpack.packb(_one(agent_id="a\x01")),
    msgpack.packb(_one(agent_type="bus")),
    msgpack.packb(_one(speed=3.0)),
    msgpack.packb({**_one(), "more": 1}),
    msgpack.packb(_one()) + b"\x00",  # a second object after the body
    msgpack.packb(_one())[:-1],  # cut short
    msgpack.packb([_one()]),
    msgpack.packb(_one(x=msgpack.ExtType(1, b"x"))),
    # valid, but not the reader's to read: a non-ASCII id, a duplicate key
    msgpack.packb(_one(agent_id="véh")),
    b"\x81" + msgpack.packb("observations") + b"\x91"
    + _packed_map([("agent_id", "a"), ("timestamp", 1.0), ("x", 5.0), ("x", 1.0), ("y", 2.0)]),
]  # fmt: skip


@pytest.mark.parametrize("body", MSGPACK_REFUSED)
def test_messagepack_bodies_outside_the_readers_subset_are_left_to_the_schema(body: bytes) -> None:
    assert read_frame(body, "msgpack") is None
    assert read_frame(msgpack.packb(_one()), "msgpack") is not None  # the same body without the fault


def test_a_messagepack_frame_answers_the_same_read_either_way(
    make_client: MakeClient, replay: Replay
) -> None:
    """The other body repeats a key in the first observation (msgpack keeps the last, the real one)."""

    def both_ways(i: int) -> tuple[bytes, bytes]:
        body = replay.body(i)
        first, *rest = body["observations"]
        items = [("x", first["x"] + 100.0), *first.items()]  # the real x comes last and counts
        raw = msgpack.packb(body)
        n = len(body["observations"])
        head = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
        other = (
            b"\x81" + msgpack.packb("observations") + head + _packed_map(items)
            + b"".join(msgpack.packb(o) for o in rest)
        )  # fmt: skip
        assert read_frame(raw, "msgpack") is not None and read_frame(other, "msgpack") is None
        assert _bits(_general_msgpack(other).xy) == _bits(_general_msgpack(raw).xy)
        return raw, other

    _same_answers(make_client, both_ways, "msgpack")


@settings(max_examples=400, deadline=None)
@given(
    encoding=st.sampled_from(["json", "msgpack"]),
    cuts=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    truncate=st.integers(0, 10**6),
)
def test_damaged_bodies_are_refused_or_read_as_the_schema_reads_them(
    encoding: str, cuts: list[tuple[int, int]], truncate: int
) -> None:
    """A valid two-observation body with bytes overwritten and its end cut: the reader either refuses it, or
    reads what the general way reads (never something else, never out of the body)."""
    body = _one(agent_type="cyclist")
    body["observations"].append(
        {"agent_id": "b-2", "timestamp": 2.5, "x": -3.25, "y": 1e-3, "agent_type": None}
    )
    raw = bytearray(orjson.dumps(body) if encoding == "json" else msgpack.packb(body))
    for at, value in cuts:
        raw[at % len(raw)] = value
    damaged = bytes(raw[: len(raw) - truncate % 8])
    read = read_frame(damaged, "json" if encoding == "json" else "msgpack")
    if read is None:
        return
    general = _general(damaged) if encoding == "json" else _general_msgpack(damaged)
    _assert_same(read, general)
