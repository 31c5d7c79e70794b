"""Small durable-file helpers (blocking; call from a worker thread in trio code).

``atomic_write`` gives all-or-nothing replacement of a small file: write a temporary file in
the same directory, fsync it, rename it over the target, fsync the directory so the rename
itself survives a crash.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import xxhash

#: Header of a checksummed blob: magic, payload length, xxh3-64 of the payload.
_BLOB = struct.Struct(">4sQQ")


class CorruptFile(Exception):
    """A durable file failed its checksum or is malformed; the message names the file."""


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (a regular file may accept fewer)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def seal(magic: bytes, payload: bytes) -> bytes:
    """Frame ``payload`` with a 4-byte ``magic``, its length and checksum."""
    return _BLOB.pack(magic, len(payload), xxhash.xxh3_64_intdigest(payload)) + payload


def unseal(magic: bytes, blob: bytes, what: Path) -> bytes:
    """Inverse of ``seal``; raise CorruptFile naming ``what`` on any mismatch."""
    if len(blob) < _BLOB.size:
        raise CorruptFile(f"{what}: truncated header ({len(blob)} bytes)")
    got_magic, length, digest = _BLOB.unpack_from(blob)
    if got_magic != magic:
        raise CorruptFile(f"{what}: bad magic {got_magic!r}")
    payload = blob[_BLOB.size :]
    if len(payload) != length:
        raise CorruptFile(f"{what}: expected {length} payload bytes, found {len(payload)}")
    if xxhash.xxh3_64_intdigest(payload) != digest:
        raise CorruptFile(f"{what}: checksum mismatch")
    return payload
