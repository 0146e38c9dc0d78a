"""The batch codec of state records equals the per-record one, and sorts out what it cannot reuse."""

from __future__ import annotations

import numpy as np

from service.state import AgentState, decode_batch, encode_batch, new_versions, version_of

M = 64
INITIAL_KIN = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
INITIAL_MEMORY = np.full(M, 300.0, dtype=np.float32)
UNKNOWN = 3


def _state(i: int, tag: int = 7, m: int = M) -> AgentState:
    rng = np.random.default_rng(i)
    return AgentState(
        rng.normal(size=7),
        rng.normal(300.0, 5.0, m).astype(np.float32),
        1000.0 + i,
        900.0 + i,
        i % 4,
        tag,
        int(new_versions(1)[0]),
        1.7e9 + i,
    )


def test_encode_batch_writes_what_agent_state_reads() -> None:
    states = [_state(i) for i in range(5)]
    records = encode_batch(
        np.stack([s.kin for s in states]),
        np.stack([s.memory for s in states]),
        np.array([s.last_t for s in states]),
        np.array([s.track_start_t for s in states]),
        np.array([s.agent_type for s in states]),
        tag=7,
        wall=1.7e9,
    )
    versions = set()
    for s, r in zip(states, records, strict=True):
        back = AgentState.from_bytes(r)
        assert np.array_equal(back.kin, s.kin) and np.array_equal(back.memory, s.memory)
        assert (back.last_t, back.track_start_t, back.agent_type, back.tag) == (
            s.last_t,
            s.track_start_t,
            s.agent_type,
            7,
        )
        assert back.updated_wall == 1.7e9 and back.version % 2 == 1  # non-zero versions
        versions.add(back.version)
        # byte for byte the per-record encoding of the same state
        assert (
            r
            == AgentState(
                s.kin, s.memory, s.last_t, s.track_start_t, s.agent_type, 7, back.version, 1.7e9
            ).to_bytes()
        )
    assert len(versions) == 5


def test_decode_batch_reads_records_and_treats_the_unusable_as_absent() -> None:
    good = [_state(i) for i in range(3)]
    other_weights = _state(10, tag=8)
    other_size = _state(11, m=32)
    raws: list[bytes | None] = [
        good[0].to_bytes(),
        None,
        other_weights.to_bytes(),
        good[1].to_bytes(),
        b"not a record",
        b"XXXX" + good[2].to_bytes()[4:],  # right length, bad magic
        other_size.to_bytes(),
        good[2].to_bytes(),
    ]
    told: list[int] = []
    b = decode_batch(raws, 7, INITIAL_KIN, INITIAL_MEMORY, UNKNOWN, lambda i, why: told.append(i))
    assert b.present.tolist() == [True, False, False, True, False, False, False, True]
    assert told == [4, 5]  # the unreadable ones, not those of other weights
    for row, s in ((0, good[0]), (3, good[1]), (7, good[2])):
        assert np.array_equal(b.kin[row], s.kin) and np.array_equal(b.memory[row], s.memory)
        assert (b.last_t[row], b.start_t[row], b.agent_type[row]) == (s.last_t, s.track_start_t, s.agent_type)
    for row in (1, 2, 4, 5, 6):
        assert np.array_equal(b.kin[row], INITIAL_KIN) and np.array_equal(b.memory[row], INITIAL_MEMORY)
        assert b.last_t[row] == -np.inf and b.agent_type[row] == UNKNOWN
    # the commit condition is the version of whatever the key holds, usable or not
    assert b.version.tolist() == [version_of(r) for r in raws]


def test_decode_batch_of_a_steady_stream_equals_the_records() -> None:
    # every key holds a record of this model (a stream's steady state: the columns come straight from them)
    states = [_state(i) for i in range(6)]
    raws = [s.to_bytes() for s in states]
    b = decode_batch(raws, 7, INITIAL_KIN, INITIAL_MEMORY, UNKNOWN)
    assert b.present.all()
    assert np.array_equal(b.kin, np.stack([s.kin for s in states]))
    assert np.array_equal(b.memory, np.stack([s.memory for s in states]))
    assert b.last_t.tolist() == [s.last_t for s in states]
    assert b.start_t.tolist() == [s.track_start_t for s in states]
    assert b.agent_type.tolist() == [s.agent_type for s in states]
    assert b.version.tolist() == [s.version for s in states]
    # the same dtypes and layout as the general path (the model step takes them as they are)
    assert (b.kin.dtype, b.memory.dtype, b.agent_type.dtype, b.version.dtype) == (
        np.float64,
        np.float32,
        np.int64,
        np.uint64,
    )
    assert b.kin.flags.c_contiguous and b.memory.flags.c_contiguous
    # all of the right size, but one of other weights and one unreadable: those rows are absent
    mixed = [raws[0], _state(10, tag=8).to_bytes(), b"XXXX" + raws[2][4:], raws[3]]
    told: list[int] = []
    b = decode_batch(mixed, 7, INITIAL_KIN, INITIAL_MEMORY, UNKNOWN, lambda i, why: told.append(i))
    assert b.present.tolist() == [True, False, False, True] and told == [2]
    assert np.array_equal(b.memory[1], INITIAL_MEMORY) and b.last_t[2] == -np.inf
    assert b.version.tolist() == [version_of(r) for r in mixed]
