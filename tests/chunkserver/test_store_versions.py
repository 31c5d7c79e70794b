"""ChunkStore: version changes (set_version), replica digests (info), incomplete copies, and
the clean-shutdown marker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dfs.chunkserver import layout
from dfs.chunkserver.store import CLEAN_MARKER, COPY_VERSION, ChunkStore
from dfs.errors import ChunkNotFound, InvalidArgument, StaleChunkVersion
from dfs.types import BLOCK_SIZE

pytestmark = pytest.mark.unit

CID = 0x77
V = 4


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed * 7 + (i >> 8)) & 0xFF for i in range(n))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChunkStore]:
    with ChunkStore(tmp_path) as s:
        yield s


def test_set_version_bumps_and_old_version_is_stale(store: ChunkStore) -> None:
    data = pattern(2 * BLOCK_SIZE + 123)
    store.write(CID, V, 0, data)
    assert store.set_version(CID, V, V + 1) == len(data)
    assert store.list_chunks() == [(CID, V + 1, len(data))]
    assert store.read(CID, V + 1, 0, len(data)) == data
    with pytest.raises(StaleChunkVersion) as info:
        store.read(CID, V, 0, 10)
    assert info.value.details["version"] == V + 1
    with pytest.raises(StaleChunkVersion):
        store.write(CID, V, 0, b"x")
    # writes at the new version keep working, and extend the same chunk
    assert store.write(CID, V + 1, len(data), b"tail") == len(data) + 4


def test_set_version_is_idempotent(store: ChunkStore) -> None:
    store.write(CID, V, 0, b"abc")
    assert store.set_version(CID, V, V + 1) == 3
    assert store.set_version(CID, V, V + 1) == 3  # a retry: already there
    assert store.list_chunks() == [(CID, V + 1, 3)]


def test_set_version_refuses_stale_missing_and_zero(store: ChunkStore) -> None:
    store.write(CID, V, 0, b"abc")
    with pytest.raises(StaleChunkVersion) as info:
        store.set_version(CID, V - 1, V + 5)
    assert info.value.details["version"] == V
    with pytest.raises(ChunkNotFound):
        store.set_version(CID + 1, V, V + 1)
    with pytest.raises(InvalidArgument):
        store.set_version(CID, V, 0)
    assert store.list_chunks() == [(CID, V, 3)]


def test_set_version_may_go_down(store: ChunkStore) -> None:
    store.write(CID, V, 0, b"abc")
    store.set_version(CID, V, V + 1)
    assert store.set_version(CID, V + 1, V) == 3  # the metaserver undoes a bump
    assert store.read(CID, V, 0, 3) == b"abc"


def test_set_version_survives_reopen_many_times(tmp_path: Path) -> None:
    data = pattern(BLOCK_SIZE + 7)
    with ChunkStore(tmp_path) as s:
        s.write(CID, 1, 0, data)
        # several bumps exercise both header slots
        for v in range(1, 6):
            s.set_version(CID, v, v + 1)
    with ChunkStore(tmp_path) as s:
        assert s.list_chunks() == [(CID, 6, len(data))]
        assert s.read(CID, 6, 0, len(data)) == data
        s.write(CID, 6, 0, b"Z")  # the header seq continues correctly after a reopen
    with ChunkStore(tmp_path) as s:
        assert s.read(CID, 6, 0, 2) == b"Z" + data[1:2]


def test_info_digest_equal_for_equal_content(tmp_path: Path) -> None:
    data = pattern(3 * BLOCK_SIZE + 500)
    with ChunkStore(tmp_path / "a") as a, ChunkStore(tmp_path / "b") as b:
        a.write(CID, V, 0, data)
        # the same bytes written in another order give the same checksums
        b.write(CID, V, 2 * BLOCK_SIZE, data[2 * BLOCK_SIZE :])
        b.write(CID, V, 0, data[: 2 * BLOCK_SIZE])
        va, la, da = a.info(CID)
        assert (va, la) == (V, len(data))
        assert b.info(CID) == (va, la, da)
        b.write(CID, V, 10, b"!")
        assert b.info(CID)[2] != da
        b.write(CID, V, 10, data[10:11])
        assert b.info(CID)[2] == da


def test_info_digest_sees_length_and_tail(store: ChunkStore) -> None:
    store.write(CID, V, 0, pattern(BLOCK_SIZE))
    full = store.info(CID)[2]
    store.write(CID, V, BLOCK_SIZE, b"x")
    with_tail = store.info(CID)[2]
    store.truncate(CID, V, BLOCK_SIZE)
    assert store.info(CID)[2] == full != with_tail
    store.truncate(CID, V, 0)
    assert store.info(CID)[:2] == (V, 0)  # empty chunks work too
    with pytest.raises(ChunkNotFound):
        store.info(CID + 1)


def test_copy_protocol(store: ChunkStore) -> None:
    store.write(CID, V, 0, b"old contents")
    store.create_copy(CID)  # replaces the old copy
    assert store.list_chunks() == [(CID, COPY_VERSION, 0)]
    data = pattern(BLOCK_SIZE + 99)
    assert store.append(CID, COPY_VERSION, 0, data[:1000]) == 1000
    with pytest.raises(InvalidArgument):  # not at the end
        store.append(CID, COPY_VERSION, 2000, data[1000:])
    assert store.append(CID, COPY_VERSION, 1000, data[1000:]) == len(data)
    with pytest.raises(StaleChunkVersion):
        store.read(CID, V, 0, 1)
    store.sync(CID)
    assert store.set_version(CID, COPY_VERSION, V) == len(data)
    assert store.read(CID, V, 0, len(data)) == data
    # a copy deleted part-way is not continued
    store.create_copy(CID + 1)
    store.delete(CID + 1)
    with pytest.raises(ChunkNotFound):
        store.append(CID + 1, COPY_VERSION, 0, b"x")
    # conditional delete only removes that version
    assert not store.delete(CID, if_version=COPY_VERSION)
    assert store.has_chunk(CID)


def test_scan_removes_incomplete_copies(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with ChunkStore(tmp_path) as s:
        s.write(CID, V, 0, b"keep me")
        s.create_copy(CID + 1)
        s.append(CID + 1, COPY_VERSION, 0, pattern(BLOCK_SIZE * 2))
    caplog.set_level("INFO")
    with ChunkStore(tmp_path) as s:
        assert s.list_chunks() == [(CID, V, 7)]
        assert s.used_bytes() == 7 + layout.SIDECAR_SIZE
    assert not layout.data_path(tmp_path / "chunks", CID + 1).exists()
    assert not layout.sidecar_path(tmp_path / "chunks", CID + 1).exists()
    assert "incomplete copy" in caplog.text


def test_clean_marker(tmp_path: Path) -> None:
    with ChunkStore(tmp_path) as s:
        assert not s.take_clean_marker()  # a new directory has none
        s.write(CID, V, 0, b"abc")
        s.mark_clean_shutdown()
        assert (tmp_path / CLEAN_MARKER).exists()
    with ChunkStore(tmp_path) as s:
        assert s.take_clean_marker()
        assert not (tmp_path / CLEAN_MARKER).exists()
        assert not s.take_clean_marker()  # taken: a crash from now on leaves none


def test_clean_marker_syncs_only_unsynced_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        synced.append(fd)
        real(fd)

    with ChunkStore(tmp_path) as s:
        s.write(1, V, 0, b"synced", sync=True)
        s.write(2, V, 0, b"not synced")
        s.create_copy(3)
        s.set_version(3, COPY_VERSION, V)
        s.write(4, V, 0, b"deleted")
        s.delete(4)
        monkeypatch.setattr(os, "fdatasync", counting)
        s.mark_clean_shutdown()
    assert len(synced) == 4  # data and sidecar of chunks 2 and 3


def test_an_unwritten_first_version_chunk_is_bumped_as_empty(store: ChunkStore) -> None:
    # A new chunk exists on a replica only once a write reached it; a lease bump from
    # version 1 treats the absent chunk as the empty chunk a write would have created.
    assert store.set_version(CID, 1, 9) == 0
    assert store.list_chunks() == [(CID, 9, 0)]
    assert store.read(CID, 9, 0, 10) == b""
    with pytest.raises(ChunkNotFound):  # any later version: absent means lost
        store.set_version(CID + 1, 2, 9)
