"""Snapshot file of the memory store: atomic write (tmp + fsync + rename) and a sha256 checksum.

Layout (little endian)::

    magic    8s   b"TPSNAP1\\n"
    count    u32
    count x  [u16 model length, model utf-8, u16 agent length, agent utf-8, u32 record length, record]
    sha256   32s  of everything before it

A torn or corrupt file fails the checksum and is never half-loaded.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

MAGIC = b"TPSNAP1\n"
_DIGEST = 32

Entry = tuple[str, str, bytes]  # (model, agent_id, state record bytes)


class SnapshotError(ValueError):
    """A snapshot that cannot be trusted (truncated, corrupt, wrong format)."""


def encode(entries: Iterable[Entry]) -> bytes:
    """Serialise ``(model, agent_id, record)`` entries with a trailing checksum."""
    parts: list[bytes] = []
    count = 0
    for model, agent, record in entries:
        m, a = model.encode(), agent.encode()
        parts.append(struct.pack("<H", len(m)) + m + struct.pack("<H", len(a)) + a)
        parts.append(struct.pack("<I", len(record)) + record)
        count += 1
    body = MAGIC + struct.pack("<I", count) + b"".join(parts)
    return body + hashlib.sha256(body).digest()


def decode(data: bytes) -> list[Entry]:
    """Parse and verify a snapshot; raises :class:`SnapshotError` on any damage."""
    if len(data) < len(MAGIC) + 4 + _DIGEST or not data.startswith(MAGIC):
        raise SnapshotError("not a snapshot file (bad magic or too short)")
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotError("checksum mismatch (torn or corrupt file)")
    (count,) = struct.unpack_from("<I", body, len(MAGIC))
    pos = len(MAGIC) + 4
    out: list[Entry] = []
    try:
        for _ in range(count):
            (lm,) = struct.unpack_from("<H", body, pos)
            model = body[pos + 2 : pos + 2 + lm].decode()
            pos += 2 + lm
            (la,) = struct.unpack_from("<H", body, pos)
            agent = body[pos + 2 : pos + 2 + la].decode()
            pos += 2 + la
            (lr,) = struct.unpack_from("<I", body, pos)
            record = body[pos + 4 : pos + 4 + lr]
            if len(record) != lr:
                raise SnapshotError("truncated entry")
            pos += 4 + lr
            out.append((model, agent, record))
    except (struct.error, UnicodeDecodeError) as e:
        raise SnapshotError(f"malformed entry: {e}") from e
    if pos != len(body):
        raise SnapshotError("trailing bytes after the last entry")
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either the old or the new file, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name created exclusively, never following a link (mkstemp: O_CREAT | O_EXCL | O_NOFOLLOW, mode
    # 0600): a file or symlink planted under a predictable temporary name cannot redirect the write
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # the rename itself must reach the disk, or a crash could bring the old name back
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read(path: Path) -> list[Entry] | None:
    """Entries of the snapshot at ``path``; ``None`` when there is no file."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    return decode(data)
