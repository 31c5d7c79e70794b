"""Unit tests of ChunkStore: round trips, partial blocks, gaps, truncation, corruption, restart."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dfs.chunkserver import layout
from dfs.chunkserver.store import ChunkStore
from dfs.errors import (
    ChunkCorrupt,
    ChunkNotFound,
    InvalidArgument,
    NoSpace,
    StaleChunkVersion,
)
from dfs.types import BLOCK_SIZE, CHUNK_SIZE

pytestmark = pytest.mark.unit

CID = 0x1234_5678_9ABC_DEF0
V = 3


def pattern(n: int, seed: int = 0) -> bytes:
    """Deterministic non-repeating-looking bytes (distinct per block, so swaps are visible)."""
    return bytes((i * 31 + seed * 7 + (i >> 8)) & 0xFF for i in range(n))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChunkStore]:
    with ChunkStore(tmp_path) as s:
        yield s


def flip_byte(tmp_path: Path, chunk_id: int, offset: int) -> None:
    path = layout.data_path(tmp_path / "chunks", chunk_id)
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def test_round_trip_aligned(store: ChunkStore) -> None:
    data = pattern(3 * BLOCK_SIZE)
    assert store.write(CID, V, 0, data) == len(data)
    assert store.read(CID, V, 0, len(data)) == data
    assert store.read(CID, V, BLOCK_SIZE, BLOCK_SIZE) == data[BLOCK_SIZE : 2 * BLOCK_SIZE]
    assert store.list_chunks() == [(CID, V, len(data))]


def test_unaligned_write_spanning_blocks(store: ChunkStore) -> None:
    base = pattern(4 * BLOCK_SIZE)
    store.write(CID, V, 0, base)
    patch = pattern(2 * BLOCK_SIZE + 100, seed=9)
    off = BLOCK_SIZE - 50
    assert store.write(CID, V, off, patch) == len(base)
    model = bytearray(base)
    model[off : off + len(patch)] = patch
    assert store.read(CID, V, 0, CHUNK_SIZE) == model
    # a small write inside one block keeps both neighbours
    store.write(CID, V, 10, b"xyz")
    model[10:13] = b"xyz"
    assert store.read(CID, V, 0, len(model)) == model
    assert store.verify(CID) == []


def test_append_in_small_pieces(store: ChunkStore) -> None:
    model = bytearray()
    for i in range(40):
        piece = pattern(5000 + i, seed=i)
        assert store.write(CID, V, len(model), piece) == len(model) + len(piece)
        model += piece
    assert store.read(CID, V, 0, len(model) + 10) == model
    assert store.read(CID, V, 70_000, 100_000) == model[70_000:170_000]


def test_write_past_end_zero_fills_gap(store: ChunkStore) -> None:
    store.write(CID, V, 0, b"a" * 100)
    off = 3 * BLOCK_SIZE + 17
    assert store.write(CID, V, off, b"tail") == off + 4
    got = store.read(CID, V, 0, off + 4)
    assert got == b"a" * 100 + bytes(off - 100) + b"tail"
    assert store.verify(CID) == []


def test_write_far_into_new_chunk(store: ChunkStore) -> None:
    off = CHUNK_SIZE - BLOCK_SIZE - 3
    assert store.write(CID, V, off, b"end") == off + 3
    assert store.read(CID, V, off - 5, 100) == bytes(5) + b"end"
    assert store.read(CID, V, 0, 10) == bytes(10)


def test_read_returns_fewer_bytes_at_end(store: ChunkStore) -> None:
    store.write(CID, V, 0, b"hello")
    assert store.read(CID, V, 2, 100) == b"llo"
    assert store.read(CID, V, 5, 100) == b""
    assert store.read(CID, V, 1000, 10) == b""
    assert store.read(CID, V, 0, 0) == b""


def test_write_beyond_chunk_size_rejected(store: ChunkStore) -> None:
    with pytest.raises(InvalidArgument):
        store.write(CID, V, CHUNK_SIZE - 2, b"abc")
    with pytest.raises(InvalidArgument):
        store.write(CID, V, -1, b"a")
    assert store.write(CID, V, CHUNK_SIZE - 3, b"abc") == CHUNK_SIZE


def test_truncate_then_extend_reads_zeros(store: ChunkStore) -> None:
    data = pattern(3 * BLOCK_SIZE)
    store.write(CID, V, 0, data)
    store.truncate(CID, V, BLOCK_SIZE + 10)
    assert store.read(CID, V, 0, CHUNK_SIZE) == data[: BLOCK_SIZE + 10]
    store.truncate(CID, V, 3 * BLOCK_SIZE)
    assert store.read(CID, V, 0, CHUNK_SIZE) == data[: BLOCK_SIZE + 10] + bytes(2 * BLOCK_SIZE - 10)
    # the same through a write past the end after a shrink
    store.truncate(CID, V, 5)
    store.write(CID, V, 2 * BLOCK_SIZE, b"z")
    assert store.read(CID, V, 0, CHUNK_SIZE) == data[:5] + bytes(2 * BLOCK_SIZE - 5) + b"z"
    store.truncate(CID, V, 0)
    assert store.read(CID, V, 0, 10) == b""
    assert store.verify(CID) == []


def test_truncate_creates_absent_chunk(store: ChunkStore) -> None:
    store.truncate(CID, V, 1000)
    assert store.read(CID, V, 0, 2000) == bytes(1000)


def test_flipped_byte_is_corrupt_and_verify_names_block(tmp_path: Path, store: ChunkStore) -> None:
    data = pattern(4 * BLOCK_SIZE + 123)
    store.write(CID, V, 0, data)
    store.close()  # drop cached fds; the flip goes through another descriptor anyway
    flip_byte(tmp_path, CID, 2 * BLOCK_SIZE + 7)
    with pytest.raises(ChunkCorrupt) as info:
        store.read(CID, V, 2 * BLOCK_SIZE, 10)
    assert info.value.details["blocks"] == [2]
    # reads that do not touch the bad block still succeed
    assert store.read(CID, V, 0, BLOCK_SIZE) == data[:BLOCK_SIZE]
    assert store.read(CID, V, 3 * BLOCK_SIZE, BLOCK_SIZE) == data[3 * BLOCK_SIZE : 4 * BLOCK_SIZE]
    assert store.verify(CID) == [2]
    # a partial write into the bad block must not launder the corruption
    with pytest.raises(ChunkCorrupt):
        store.write(CID, V, 2 * BLOCK_SIZE + 1, b"x")
    assert store.verify(CID) == [2]
    # a full-block overwrite repairs it
    store.write(CID, V, 2 * BLOCK_SIZE, data[2 * BLOCK_SIZE : 3 * BLOCK_SIZE])
    assert store.verify(CID) == []
    assert store.read(CID, V, 0, CHUNK_SIZE) == data


def test_corrupt_last_partial_block(tmp_path: Path, store: ChunkStore) -> None:
    store.write(CID, V, 0, pattern(BLOCK_SIZE + 10))
    flip_byte(tmp_path, CID, BLOCK_SIZE + 9)
    with pytest.raises(ChunkCorrupt):
        store.read(CID, V, BLOCK_SIZE, 1)
    assert store.verify(CID) == [1]


def test_truncated_data_file_is_corrupt(tmp_path: Path, store: ChunkStore) -> None:
    store.write(CID, V, 0, pattern(3 * BLOCK_SIZE))
    os.truncate(layout.data_path(tmp_path / "chunks", CID), BLOCK_SIZE + 1)
    with pytest.raises(ChunkCorrupt):
        store.read(CID, V, 0, 3 * BLOCK_SIZE)
    assert store.verify(CID) == [1, 2]


class _Crash(Exception):
    pass


def test_torn_overwrite_detected_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Data reaches the disk, the checksum update does not (a crash in between)."""
    old = pattern(2 * BLOCK_SIZE)
    with ChunkStore(tmp_path) as s:
        s.write(CID, V, 0, old)

        def crash(*args: object) -> None:
            raise _Crash

        monkeypatch.setattr(ChunkStore, "_write_checksums", crash)
        with pytest.raises(_Crash):
            s.write(CID, V, BLOCK_SIZE, pattern(BLOCK_SIZE, seed=5))
        monkeypatch.undo()
    with ChunkStore(tmp_path) as s:
        assert s.read(CID, V, 0, BLOCK_SIZE) == old[:BLOCK_SIZE]
        with pytest.raises(ChunkCorrupt):
            s.read(CID, V, BLOCK_SIZE, BLOCK_SIZE)
        assert s.verify(CID) == [1]


def test_torn_append_is_invisible_after_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append whose header update never happened leaves the old chunk intact."""
    old = pattern(2 * BLOCK_SIZE)
    with ChunkStore(tmp_path) as s:
        s.write(CID, V, 0, old)

        def crash(*args: object) -> None:
            raise _Crash

        monkeypatch.setattr(ChunkStore, "_commit", crash)
        with pytest.raises(_Crash):
            s.write(CID, V, 2 * BLOCK_SIZE, pattern(BLOCK_SIZE, seed=5))
        monkeypatch.undo()
    with ChunkStore(tmp_path) as s:
        assert s.list_chunks() == [(CID, V, 2 * BLOCK_SIZE)]
        assert s.read(CID, V, 0, CHUNK_SIZE) == old
        # appending again replaces the garbage left past the end
        s.write(CID, V, 2 * BLOCK_SIZE + 5, b"q")
        assert s.read(CID, V, 0, CHUNK_SIZE) == old + bytes(5) + b"q"


def test_torn_append_into_partial_block_keeps_old_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tail block's checksum lives in the header, so an append is all or nothing."""
    with ChunkStore(tmp_path) as s:
        s.write(CID, V, 0, b"a" * 100)

        def crash(*args: object) -> None:
            raise _Crash

        monkeypatch.setattr(ChunkStore, "_commit", crash)
        with pytest.raises(_Crash):
            s.write(CID, V, 100, b"b" * (2 * BLOCK_SIZE))
        monkeypatch.undo()
    with ChunkStore(tmp_path) as s:
        assert s.read(CID, V, 0, CHUNK_SIZE) == b"a" * 100
        assert s.verify(CID) == []


def test_torn_shrink_keeps_old_or_new(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = pattern(3 * BLOCK_SIZE)
    with ChunkStore(tmp_path) as s:
        s.write(CID, V, 0, data)

        def crash(*args: object) -> None:
            raise _Crash

        monkeypatch.setattr(os, "ftruncate", crash)
        with pytest.raises(_Crash):
            s.truncate(CID, V, BLOCK_SIZE + 3)
        monkeypatch.undo()
    with ChunkStore(tmp_path) as s:
        assert s.read(CID, V, 0, CHUNK_SIZE) == data[: BLOCK_SIZE + 3]


def test_torn_header_slot_falls_back_to_previous(tmp_path: Path) -> None:
    with ChunkStore(tmp_path) as s:
        s.write(CID, V, 0, b"a" * 10)
        s.write(CID, V, 10, b"b" * 10)  # header seq 2, slot 0
    sidecar = layout.sidecar_path(tmp_path / "chunks", CID)
    with sidecar.open("r+b") as f:
        f.seek(20)  # inside slot 0
        f.write(b"\xff\xff")
    with ChunkStore(tmp_path) as s:
        # slot 1 (seq 1, length 10) is the newest valid header
        assert s.list_chunks() == [(CID, V, 10)]
        assert s.read(CID, V, 0, 100) == b"a" * 10


def test_stale_version(store: ChunkStore) -> None:
    store.write(CID, V, 0, b"abc")
    with pytest.raises(StaleChunkVersion) as info:
        store.read(CID, V + 1, 0, 3)
    assert info.value.details["version"] == V
    with pytest.raises(StaleChunkVersion):
        store.write(CID, V - 1, 0, b"x")
    with pytest.raises(StaleChunkVersion):
        store.truncate(CID, V + 1, 0)
    assert store.read(CID, V, 0, 3) == b"abc"


def test_missing_chunk(store: ChunkStore) -> None:
    with pytest.raises(ChunkNotFound):
        store.read(CID, V, 0, 1)
    with pytest.raises(ChunkNotFound):
        store.sync(CID)
    with pytest.raises(ChunkNotFound):
        store.verify(CID)


def test_delete_frees_space(tmp_path: Path, store: ChunkStore) -> None:
    base = store.used_bytes()
    free_before = store.free_bytes()
    store.write(CID, V, 0, pattern(1 << 20))
    store.write(CID + 1, V, 0, b"x")
    assert store.used_bytes() == base + (1 << 20) + 1 + 2 * layout.SIDECAR_SIZE
    assert store.delete(CID)
    assert store.used_bytes() == base + 1 + layout.SIDECAR_SIZE
    assert not store.delete(CID)
    assert not layout.data_path(tmp_path / "chunks", CID).exists()
    assert not layout.sidecar_path(tmp_path / "chunks", CID).exists()
    assert store.list_chunks() == [(CID + 1, V, 1)]
    with pytest.raises(ChunkNotFound):
        store.read(CID, V, 0, 1)
    # the fs may change under us, so only a loose check of the free space
    assert store.free_bytes() > free_before - (1 << 20) - 4 * layout.SIDECAR_SIZE - (64 << 20)


def test_capacity_limit(tmp_path: Path) -> None:
    cap = 2 * BLOCK_SIZE + 2 * layout.SIDECAR_SIZE
    with ChunkStore(tmp_path, capacity_bytes=cap) as s:
        assert s.capacity() == cap
        s.write(CID, V, 0, bytes(BLOCK_SIZE))
        assert s.free_bytes() == cap - BLOCK_SIZE - layout.SIDECAR_SIZE
        with pytest.raises(NoSpace):
            s.write(CID, V, BLOCK_SIZE, bytes(2 * BLOCK_SIZE))
        # overwriting within the length needs no space
        s.write(CID, V, 0, b"x" * BLOCK_SIZE)
        s.delete(CID)
        assert s.free_bytes() == cap
        # a new chunk that cannot fit is not created at all
        with pytest.raises(NoSpace):
            s.write(CID, V, 0, bytes(3 * BLOCK_SIZE))
        assert s.list_chunks() == []
        assert s.used_bytes() == 0


def test_default_capacity_is_filesystem_size(tmp_path: Path, store: ChunkStore) -> None:
    st = os.statvfs(tmp_path)
    assert store.capacity() == st.f_blocks * st.f_frsize
    assert 0 <= store.free_bytes() <= st.f_bavail * st.f_frsize + (1 << 20)


def test_restart_rescans(tmp_path: Path) -> None:
    chunks = {CID + i: pattern(1000 * i + 1, seed=i) for i in range(100)}
    with ChunkStore(tmp_path) as s:
        for cid, data in chunks.items():
            s.write(cid, V + cid % 3, 0, data, sync=cid % 7 == 0)
        used = s.used_bytes()
    # leftovers of interrupted creates and foreign files
    d = layout.chunk_dir(tmp_path / "chunks", 0x80)
    d.mkdir(exist_ok=True)
    (d / (layout.chunk_name(0x80) + ".meta.tmp")).write_bytes(b"junk")
    (d / layout.chunk_name(0x80)).write_bytes(b"")
    with ChunkStore(tmp_path) as s:
        assert s.list_chunks() == [
            (cid, V + cid % 3, len(data)) for cid, data in sorted(chunks.items())
        ]
        assert s.used_bytes() == used
        for cid, data in chunks.items():
            assert s.read(cid, V + cid % 3, 0, 1 << 20) == data
    assert list(d.iterdir()) == []


def test_scan_quarantines_damaged_sidecar(tmp_path: Path) -> None:
    with ChunkStore(tmp_path) as s:
        s.write(CID, V, 0, b"abc")
    layout.sidecar_path(tmp_path / "chunks", CID).write_bytes(bytes(layout.SIDECAR_SIZE))
    with ChunkStore(tmp_path) as s:
        assert s.list_chunks() == []
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == [
        layout.chunk_name(CID),
        layout.chunk_name(CID) + ".meta",
    ]


def test_fd_cache_eviction_under_concurrency(tmp_path: Path) -> None:
    """More chunks than cache slots, used from several threads at once."""
    errors: list[BaseException] = []
    with ChunkStore(tmp_path, fd_cache_size=3) as s:

        def worker(k: int) -> None:
            try:
                for i in range(60):
                    cid = (k * 1000 + i) % 10
                    s.write(cid, 1, 0, pattern(100, seed=cid))
                    assert s.read(cid, 1, 0, 100) == pattern(100, seed=cid)
            except BaseException as exc:  # collected and re-raised in the test thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_sync_flag_and_sync(store: ChunkStore) -> None:
    store.write(CID, V, 0, b"abc", sync=True)
    store.sync(CID)
    store.truncate(CID, V, 1, sync=True)
    assert store.read(CID, V, 0, 10) == b"a"


def test_write_extents_matches_single_writes(tmp_path: Path) -> None:
    # Unordered pieces with a gap past the end, partial blocks and a piece inside another's
    # block: one write_extents call must leave what the same writes one by one leave.
    pieces = [
        (3 * BLOCK_SIZE + 5, pattern(4096, 1)),
        (10, pattern(100, 2)),
        (BLOCK_SIZE - 7, pattern(BLOCK_SIZE + 20, 3)),
        (7 * BLOCK_SIZE, pattern(2 * BLOCK_SIZE, 4)),
    ]
    with ChunkStore(tmp_path / "a") as one, ChunkStore(tmp_path / "b") as batch:
        for offset, data in sorted(pieces):
            one.write(CID, V, offset, data)
        length = batch.write_extents(CID, V, pieces)
        assert length == 9 * BLOCK_SIZE
        assert batch.read(CID, V, 0, CHUNK_SIZE) == one.read(CID, V, 0, CHUNK_SIZE)
        assert batch.verify(CID) == []
        assert batch.list_chunks() == one.list_chunks()
        with pytest.raises(InvalidArgument):
            batch.write_extents(CID, V, [(0, b"x"), (CHUNK_SIZE, b"y")])


def test_read_nowait_verifies_and_declines_what_would_block(
    tmp_path: Path, store: ChunkStore
) -> None:
    data = pattern(3 * BLOCK_SIZE + 11)
    store.write(CID, V, 0, data)
    # Cached descriptors and page cache: served inline, same bytes as read().
    assert store.read_nowait(CID, V, 5, 4096) == data[5:4101]
    assert store.read_nowait(CID, V, 3 * BLOCK_SIZE, BLOCK_SIZE) == data[3 * BLOCK_SIZE :]
    assert store.read_nowait(CID, V, len(data), 10) == b""
    # No cached descriptors: declined (opening a file may block), nothing raised.
    store.close()
    assert store.read_nowait(CID, V, 0, 10) is None
    assert store.read(CID, V, 0, 10) == data[:10]  # reopens and caches the fds
    # Corruption is detected on the inline path too (the flip went through the page cache).
    flip_byte(tmp_path, CID, BLOCK_SIZE + 3)
    with pytest.raises(ChunkCorrupt) as info:
        store.read_nowait(CID, V, BLOCK_SIZE, 10)
    assert info.value.details["blocks"] == [1]
    with pytest.raises(StaleChunkVersion):
        store.read_nowait(CID, V + 1, 0, 10)
