"""The state of one agent for one model, as plain data, and its compact binary form.

The same bytes live in the memory store, in the snapshot file and in Redis: no pickle, no schema drift.
Layout (little endian)::

    magic  4s   b"TPS1"
    ver    u64  random per write: the optimistic-concurrency version the stores compare (a counter
                could repeat after a delete and re-create; 64 random bits do not)
    wall   f64  server wall-clock time of the last update (age, TTL after a restore)
    last_t f64  timestamp of the newest observation applied
    start  f64  timestamp of the track's first observation
    tag    u32  crc32 of the model version: a state written by other weights is not reused
    type   u8   index into models.data.AGENT_TYPES, then 3 pad bytes
    m      u32  memory length
    kin    7 f64  models.kinematics.KinState.to_array() of this agent
    memory m f32  neuron temperatures (IPNet) or recurrent hidden state
"""

from __future__ import annotations

import functools
import os
import random
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

MAGIC = b"TPS1"
_HEADER = struct.Struct("<4sQdddIB3xI")
HEADER_SIZE = _HEADER.size
#: byte range of ``version`` inside a record: what the Redis commit script compares
VERSION_OFFSET = 4
VERSION_SIZE = 8
_KIN_FLOATS = 7


class StateDecodeError(ValueError):
    """Bytes that are not a state record of this format."""


# Versions only need to be unique among writers of one key: a 64-bit PRNG seeded from the OS per process
# (and again in a forked child, so replicas forked from one parent never share a sequence) is enough, and
# avoids a getrandom syscall per agent and model on the hot path.
_versions = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _versions.seed(os.urandom(16)))


def new_version() -> int:
    """A fresh non-zero write version."""
    return _versions.getrandbits(64) | 1


def new_versions(n: int) -> np.ndarray:
    """``n`` fresh non-zero write versions (uint64), from the same generator as :func:`new_version`."""
    raw = _versions.getrandbits(64 * n).to_bytes(8 * n, "little") if n else b""
    return np.frombuffer(raw, dtype="<u8") | np.uint64(1)


def model_tag(version: str) -> int:
    """A 32-bit fingerprint of a model version, stored with each state."""
    return zlib.crc32(version.encode())


@dataclass
class AgentState:
    """One agent's state for one model: kinematic buffer, learned memory and timestamps."""

    kin: np.ndarray  # (7,) float64
    memory: np.ndarray  # (M,) float32
    last_t: float
    track_start_t: float
    agent_type: int
    tag: int
    version: int = 0
    updated_wall: float = 0.0

    @property
    def steps(self) -> int:
        """Observations in the current track."""
        return int(self.kin[6])

    def to_bytes(self) -> bytes:
        mem = np.ascontiguousarray(self.memory, dtype="<f4")
        head = _HEADER.pack(
            MAGIC,
            self.version,
            self.updated_wall,
            self.last_t,
            self.track_start_t,
            self.tag,
            self.agent_type,
            mem.size,
        )
        return head + np.ascontiguousarray(self.kin, dtype="<f8").tobytes() + mem.tobytes()

    @staticmethod
    def from_bytes(data: bytes) -> AgentState:
        if len(data) < HEADER_SIZE + 8 * _KIN_FLOATS:
            raise StateDecodeError(f"state record too short ({len(data)} bytes)")
        magic, version, wall, last_t, start, tag, agent_type, m = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise StateDecodeError(f"bad magic {magic!r}")
        expected = HEADER_SIZE + 8 * _KIN_FLOATS + 4 * m
        if len(data) != expected:
            raise StateDecodeError(f"state record of {len(data)} bytes, expected {expected}")
        kin = np.frombuffer(data, dtype="<f8", count=_KIN_FLOATS, offset=HEADER_SIZE).astype(np.float64)
        mem = np.frombuffer(data, dtype="<f4", count=m, offset=HEADER_SIZE + 8 * _KIN_FLOATS).astype(
            np.float32
        )
        return AgentState(kin, mem, last_t, start, agent_type, tag, version, wall)


def version_of(data: bytes | None) -> int:
    """The write version of a record, 0 for an absent one."""
    if data is None:
        return 0
    return int.from_bytes(data[VERSION_OFFSET : VERSION_OFFSET + VERSION_SIZE], "little")


@functools.cache  # built once per memory size: every load and commit of a frame asks for it
def record_dtype(memory_size: int) -> np.dtype:
    """The numpy view of one state record with ``memory_size`` floats of memory (the layout above)."""
    return np.dtype(
        {
            "names": ["magic", "version", "wall", "last_t", "start", "tag", "type", "m", "kin", "memory"],
            "formats": [
                "S4",
                "<u8",
                "<f8",
                "<f8",
                "<f8",
                "<u4",
                "u1",
                "<u4",
                ("<f8", (7,)),
                ("<f4", (memory_size,)),
            ],
            "offsets": [0, 4, 12, 20, 28, 36, 40, 44, HEADER_SIZE, HEADER_SIZE + 8 * _KIN_FLOATS],
            "itemsize": HEADER_SIZE + 8 * _KIN_FLOATS + 4 * memory_size,
        }
    )


@dataclass
class StateBatch:
    """The states of A agents for one model, columnar (row ``i`` is the i-th key asked for).

    A frame has hundreds of agents: decoding, stepping and encoding them as arrays, rather than an object
    per agent, is what keeps the store round trip cheap. Rows where ``present`` is False hold no state (a
    new agent, a record of other weights, or an unreadable one) and carry the initial values.
    """

    present: np.ndarray  # (A,) bool
    kin: np.ndarray  # (A, 7) float64
    memory: np.ndarray  # (A, M) float32
    last_t: np.ndarray  # (A,) float64, -inf where absent
    start_t: np.ndarray  # (A,) float64
    agent_type: np.ndarray  # (A,) int64
    version: np.ndarray  # (A,) uint64 of the loaded record (0 where the key was empty): the commit condition

    def __len__(self) -> int:
        return len(self.present)


def decode_batch(
    raws: Sequence[bytes | None],
    tag: int,
    initial_kin: np.ndarray,
    initial_memory: np.ndarray,
    unknown_type: int,
    on_unreadable: Callable[[int, str], None] | None = None,
) -> StateBatch:
    """Decode the records of one model at once; only those written with ``tag`` and this memory size count.

    ``initial_kin`` (7,) and ``initial_memory`` (M,) fill the rows without a usable state.
    ``on_unreadable(i, reason)`` is told of records that are not state records of this format at all.
    """
    n, m = len(raws), initial_memory.shape[0]
    dt = record_dtype(m)
    size = dt.itemsize
    if n and all(r is not None and len(r) == size for r in raws):
        # the steady state of a stream: every agent has a record of this model; the columns come straight
        # from the records unless one is unreadable or of other weights (then the general path below)
        recs = np.frombuffer(b"".join(cast("Sequence[bytes]", raws)), dtype=dt)
        if ((recs["magic"] == MAGIC) & (recs["m"] == m) & (recs["tag"] == tag)).all():
            return StateBatch(
                np.ones(n, dtype=bool),
                recs["kin"].copy(),
                recs["memory"].copy(),
                recs["last_t"].copy(),
                recs["start"].copy(),
                recs["type"].astype(np.int64),
                recs["version"].copy(),
            )
    present = np.zeros(n, dtype=bool)
    kin = np.broadcast_to(initial_kin, (n, 7)).copy()
    memory = np.broadcast_to(initial_memory, (n, m)).copy()
    last_t = np.full(n, -np.inf)
    start_t = np.zeros(n)
    agent_type = np.full(n, unknown_type, dtype=np.int64)
    version = np.zeros(n, dtype=np.uint64)
    rows = [i for i, r in enumerate(raws) if r is not None and len(r) == size]
    odd = (i for i, r in enumerate(raws) if r is not None and len(r) != size) if len(rows) < n else ()
    for i in odd:
        r = raws[i]
        assert r is not None
        version[i] = version_of(r)  # the commit must still match what is there
        try:
            AgentState.from_bytes(r)
        except StateDecodeError as e:
            if on_unreadable is not None:
                on_unreadable(i, str(e))
        # else: a readable record of another memory size, i.e. other weights: not reused
    if rows:
        every = len(rows) == n  # the common case: every key holds a record of this model
        chunks = cast("Sequence[bytes]", raws) if every else [cast(bytes, raws[i]) for i in rows]
        recs = np.frombuffer(b"".join(chunks), dtype=dt)
        idx = np.arange(n) if every else np.asarray(rows, dtype=np.int64)
        version[idx] = recs["version"]
        magic_ok = recs["magic"] == MAGIC
        if on_unreadable is not None:
            for j in np.flatnonzero(~magic_ok):
                on_unreadable(int(idx[j]), f"bad magic {bytes(recs['magic'][j])!r}")
        ok = magic_ok & (recs["m"] == m) & (recs["tag"] == tag)
        sel, good = (idx, recs) if ok.all() else (idx[ok], recs[ok])
        present[sel] = True
        kin[sel] = good["kin"]
        memory[sel] = good["memory"]
        last_t[sel] = good["last_t"]
        start_t[sel] = good["start"]
        agent_type[sel] = good["type"]
    return StateBatch(present, kin, memory, last_t, start_t, agent_type, version)


def encode_batch(
    kin: np.ndarray,
    memory: np.ndarray,
    last_t: np.ndarray,
    start_t: np.ndarray,
    agent_type: np.ndarray,
    tag: int,
    wall: float,
) -> list[bytes]:
    """One record per row (each with a fresh version): the batch form of :meth:`AgentState.to_bytes`."""
    n, m = memory.shape
    recs = np.zeros(n, dtype=record_dtype(m))
    recs["magic"] = MAGIC
    recs["version"] = new_versions(n)
    recs["wall"] = wall
    recs["last_t"] = last_t
    recs["start"] = start_t
    recs["tag"] = tag
    recs["type"] = agent_type
    recs["m"] = m
    recs["kin"] = kin
    recs["memory"] = memory
    buf, size = recs.tobytes(), recs.dtype.itemsize
    return [buf[i * size : (i + 1) * size] for i in range(n)]
