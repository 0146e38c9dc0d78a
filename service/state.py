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

import os
import random
import struct
import zlib
from dataclasses import dataclass

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
