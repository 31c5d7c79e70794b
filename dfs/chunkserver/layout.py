"""On-disk format of one chunk: a data file plus a checksum sidecar.

Paths under a chunkserver's ``data_dir``::

    chunks/<2 hex>/<16 hex>        the chunk's bytes (exactly ``length`` of them count)
    chunks/<2 hex>/<16 hex>.meta   the sidecar

The directory fan-out is the low byte of the chunk id, so consecutive ids spread over 256
directories.

Sidecar layout (fixed size ``SIDECAR_SIZE``, little-endian)::

    [0, 64)      header slot 0
    [64, 128)    header slot 1
    [128, ...)   BLOCKS_PER_CHUNK checksums, u64 each; entry i covers block i

A header slot is ``magic, format, reserved, seq, chunk_id, version, length, tail_sum``
followed by an xxh64 of those fields.  Headers are updated in place, alternating between the two
slots with an increasing ``seq``: a write torn inside one slot leaves the other slot (the
previous state) intact, and the reader takes the valid slot with the highest ``seq``.

Block checksum: ``xxh3_64`` of the block's *valid* bytes, i.e. of
``data[i * BLOCK_SIZE : min((i + 1) * BLOCK_SIZE, length)]``.  Full blocks keep theirs in the
sidecar's array; the checksum of a partial last block lives in the header (``tail_sum``), so a
length change and the checksum that depends on it are one atomic header update.  Array entries
of blocks that are not full are meaningless (kept zero where convenient).  Bytes of the data file
past ``length`` are garbage left by an interrupted write and are never returned.

Crash consistency: an update writes data, then array checksums, then the header.  An interrupted
append therefore leaves the previous state readable as it was (its header still describes it,
and nothing below the old length changed).  An interrupted overwrite leaves data and checksum
disagreeing, which the next read of that block reports as corrupt; torn data never passes as good
data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import xxhash

from dfs.types import BLOCK_SIZE, BLOCKS_PER_CHUNK

MAGIC = b"DFSC"
FORMAT_VERSION = 1

# magic, format, reserved, seq, chunk_id, version, length, tail_sum
_SLOT_FIELDS = struct.Struct("<4sHHQQQQQ")
_SLOT_SUM = struct.Struct("<Q")
SLOT_SIZE = 64
HEADER_SIZE = 2 * SLOT_SIZE
CHECKSUM_SIZE = 8
SIDECAR_SIZE = HEADER_SIZE + BLOCKS_PER_CHUNK * CHECKSUM_SIZE

SIDECAR_SUFFIX = ".meta"
TMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class Header:
    """The decoded state of one chunk as recorded in its sidecar."""

    seq: int
    chunk_id: int
    version: int
    length: int
    #: Checksum of the partial last block (0 when ``length`` is a multiple of BLOCK_SIZE).
    tail_sum: int = 0


def chunk_name(chunk_id: int) -> str:
    return f"{chunk_id:016x}"


def chunk_dir(root: Path, chunk_id: int) -> Path:
    return root / f"{chunk_id & 0xFF:02x}"


def data_path(root: Path, chunk_id: int) -> Path:
    return chunk_dir(root, chunk_id) / chunk_name(chunk_id)


def sidecar_path(root: Path, chunk_id: int) -> Path:
    return chunk_dir(root, chunk_id) / (chunk_name(chunk_id) + SIDECAR_SUFFIX)


def parse_chunk_name(name: str) -> int | None:
    """The chunk id a data-file name encodes, or None for anything else."""
    if len(name) != 16:
        return None
    try:
        return int(name, 16)
    except ValueError:
        return None


def block_checksum(block: bytes | bytearray | memoryview) -> int:
    """Checksum of one block's valid bytes."""
    return int(xxhash.xxh3_64_intdigest(block))


def encode_slot(h: Header) -> bytes:
    """One header slot, padded to ``SLOT_SIZE``."""
    fields = _SLOT_FIELDS.pack(
        MAGIC, FORMAT_VERSION, 0, h.seq, h.chunk_id, h.version, h.length, h.tail_sum
    )
    raw = fields + _SLOT_SUM.pack(xxhash.xxh64_intdigest(fields))
    return raw.ljust(SLOT_SIZE, b"\0")


def slot_offset(seq: int) -> int:
    """Where the slot holding header ``seq`` lives (slots alternate)."""
    return (seq % 2) * SLOT_SIZE


def _decode_slot(raw: bytes) -> Header | None:
    n = _SLOT_FIELDS.size
    if len(raw) < n + _SLOT_SUM.size:
        return None
    fields = raw[:n]
    (stored,) = _SLOT_SUM.unpack_from(raw, n)
    if stored != xxhash.xxh64_intdigest(fields):
        return None
    magic, fmt, _reserved, seq, chunk_id, version, length, tail_sum = _SLOT_FIELDS.unpack(fields)
    if magic != MAGIC or fmt != FORMAT_VERSION:
        return None
    return Header(seq=seq, chunk_id=chunk_id, version=version, length=length, tail_sum=tail_sum)


def decode_header(raw: bytes) -> Header | None:
    """The newest valid header of the two slots in ``raw`` (the sidecar's first bytes)."""
    slots = [_decode_slot(raw[i * SLOT_SIZE : (i + 1) * SLOT_SIZE]) for i in range(2)]
    valid = [h for h in slots if h is not None]
    if not valid:
        return None
    return max(valid, key=lambda h: h.seq)


def checksum_offset(block: int) -> int:
    return HEADER_SIZE + block * CHECKSUM_SIZE


def pack_checksums(sums: list[int]) -> bytes:
    return struct.pack(f"<{len(sums)}Q", *sums)


def unpack_checksums(raw: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(raw) // CHECKSUM_SIZE}Q", raw)


def blocks_of(length: int) -> int:
    """How many blocks a chunk of ``length`` bytes has (the last may be partial)."""
    return (length + BLOCK_SIZE - 1) // BLOCK_SIZE
