"""fallocate(2), lseek(2) SEEK_DATA/SEEK_HOLE, O_DIRECT and shared writable mmap on a real
kernel mount, as programs use them (cp --sparse, qemu-img, databases, mmap-based editors)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dfs.types import CHUNK_SIZE
from tests.e2e.localcluster import Cluster, local_cluster, wait_for

pytestmark = pytest.mark.mount

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20
MIB = 1 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.fallocate.restype = ctypes.c_int


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) with any mode (``os.posix_fallocate`` only does mode 0)."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def chunk_files(cluster: Cluster) -> set[Path]:
    """Every chunk replica stored by the cluster's chunkservers."""
    return {
        f for d in cluster.chunk_dirs() for f in (d / "chunks").glob("*/*") if f.suffix != ".meta"
    }


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def read_at(path: Path, offset: int, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with local_cluster(tmp_path_factory.mktemp("dfs-file-ops")) as c:
        yield c


@pytest.fixture
def fd_of(cluster: Cluster) -> Iterator[dict[str, int]]:
    """Descriptors a test opens, closed whatever happens: ``fds[name] = os.open(...)``."""
    fds: dict[str, int] = {}
    try:
        yield fds
    finally:
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


def test_fallocate_mode0_grows_and_reads_zeros(cluster: Cluster, fd_of: dict[str, int]) -> None:
    path = cluster.mnt / "alloc"
    fd = fd_of["w"] = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"abc")
    os.posix_fallocate(fd, 0, MIB)
    assert os.fstat(fd).st_size == MIB
    # Inside the size: nothing changes.
    os.posix_fallocate(fd, 10, 100)
    assert os.fstat(fd).st_size == MIB
    # Across a chunk boundary, through fallocate(2) itself.
    fallocate(fd, 0, CHUNK_SIZE - 5, 10)
    assert os.fstat(fd).st_size == CHUNK_SIZE + 5
    assert os.pread(fd, 8, 0) == b"abc" + bytes(5)
    # The size is committed at once (another descriptor, the pages dropped).
    drop_caches()
    assert path.stat().st_size == CHUNK_SIZE + 5
    assert read_at(path, 0, 4) == b"abc\0"
    assert read_at(path, CHUNK_SIZE - 8, 100) == bytes(13)
    os.close(fd_of.pop("w"))
    assert path.stat().st_size == CHUNK_SIZE + 5


def test_fallocate_keep_size_changes_nothing(cluster: Cluster, fd_of: dict[str, int]) -> None:
    path = cluster.mnt / "keep"
    fd = fd_of["w"] = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"x" * 1000)
    fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 10 * MIB)
    fallocate(fd, FALLOC_FL_KEEP_SIZE, 5000, MIB)
    assert os.fstat(fd).st_size == 1000
    os.close(fd_of.pop("w"))
    assert path.read_bytes() == b"x" * 1000


def test_punch_hole_in_flushed_and_buffered_data(cluster: Cluster, fd_of: dict[str, int]) -> None:
    path = cluster.mnt / "punch"
    data = os.urandom(MIB)
    fd = fd_of["w"] = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    os.pwrite(fd, data, 0)
    os.fsync(fd)  # landed on the chunkservers
    os.pwrite(fd, data, MIB)  # still buffered in the client
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, MIB)
    expect = data[:1000] + bytes(MIB) + (data + data)[1000 + MIB :]
    assert os.fstat(fd).st_size == 2 * MIB
    assert os.pread(fd, 2 * MIB, 0) == expect
    # A hole reaching the end of the file.
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * MIB - 10, 100)
    expect = expect[:-10] + bytes(10)
    assert os.fstat(fd).st_size == 2 * MIB
    os.close(fd_of.pop("w"))
    drop_caches()
    assert path.read_bytes() == expect


def test_punch_hole_drops_whole_chunks(cluster: Cluster, fd_of: dict[str, int]) -> None:
    path = cluster.mnt / "punch-chunks"
    piece = os.urandom(MIB)
    fd = fd_of["w"] = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    # Chunks 0, 1 and 2 exist: data at 0, across the 0/1 boundary and in chunk 2.
    os.pwrite(fd, piece, 0)
    os.pwrite(fd, piece, CHUNK_SIZE - MIB // 2)
    os.pwrite(fd, piece, 2 * CHUNK_SIZE)
    os.fsync(fd)
    size = 2 * CHUNK_SIZE + MIB
    assert os.lseek(fd, CHUNK_SIZE, os.SEEK_DATA) == CHUNK_SIZE
    stored = chunk_files(cluster)
    # Chunk 1 whole, the tail of chunk 0 (cut off) and 1000 bytes of chunk 2 (zeroed).
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, 2 * CHUNK_SIZE + 1000 - 100)
    assert os.fstat(fd).st_size == size
    assert os.lseek(fd, 0, os.SEEK_HOLE) == CHUNK_SIZE
    assert os.lseek(fd, CHUNK_SIZE, os.SEEK_DATA) == 2 * CHUNK_SIZE
    # The dropped chunk's replicas are deleted from the chunkservers.
    wait_for(lambda: len(stored - chunk_files(cluster)) > 0, 15, "the punched chunk's deletion")
    os.close(fd_of.pop("w"))
    drop_caches()
    assert read_at(path, 0, MIB) == piece[:100] + bytes(MIB - 100)
    assert read_at(path, CHUNK_SIZE - MIB // 2, MIB) == bytes(MIB)
    assert read_at(path, 2 * CHUNK_SIZE, MIB) == bytes(1000) + piece[1000:]
    assert path.stat().st_size == size
    path.unlink()


def test_seek_data_and_hole_on_a_sparse_file(cluster: Cluster, fd_of: dict[str, int]) -> None:
    path = cluster.mnt / "sparse"
    fd = fd_of["w"] = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    os.pwrite(fd, b"a" * 4096, 0)
    os.pwrite(fd, b"b" * 4096, 130 * MIB)  # chunk 1 is a hole, chunk 2 holds data
    size = 130 * MIB + 4096
    # Buffered writes count (the client lands them before answering).
    assert os.lseek(fd, 0, os.SEEK_DATA) == 0
    assert os.lseek(fd, 0, os.SEEK_HOLE) == CHUNK_SIZE
    assert os.lseek(fd, 100, os.SEEK_HOLE) == CHUNK_SIZE
    assert os.lseek(fd, CHUNK_SIZE + 5, os.SEEK_HOLE) == CHUNK_SIZE + 5
    assert os.lseek(fd, 5000, os.SEEK_DATA) == 5000
    assert os.lseek(fd, CHUNK_SIZE, os.SEEK_DATA) == 2 * CHUNK_SIZE
    assert os.lseek(fd, CHUNK_SIZE + 7, os.SEEK_DATA) == 2 * CHUNK_SIZE
    assert os.lseek(fd, 2 * CHUNK_SIZE, os.SEEK_HOLE) == size  # the hole at the end
    assert os.lseek(fd, size - 1, os.SEEK_DATA) == size - 1
    for whence in (os.SEEK_DATA, os.SEEK_HOLE):
        with pytest.raises(OSError) as exc:
            os.lseek(fd, size, whence)
        assert exc.value.errno == errno.ENXIO
        with pytest.raises(OSError) as exc:
            os.lseek(fd, size + CHUNK_SIZE, whence)
        assert exc.value.errno == errno.ENXIO
    os.close(fd_of.pop("w"))
    # A reader on a fresh descriptor sees the same map.
    rd = fd_of["r"] = os.open(path, os.O_RDONLY)
    assert os.lseek(rd, 0, os.SEEK_HOLE) == CHUNK_SIZE
    assert os.lseek(rd, CHUNK_SIZE, os.SEEK_DATA) == 2 * CHUNK_SIZE
    assert os.pread(rd, 4096, 130 * MIB) == b"b" * 4096
    # An empty file is all hole: no data anywhere.
    empty = fd_of["e"] = os.open(cluster.mnt / "empty", os.O_CREAT | os.O_RDWR, 0o644)
    with pytest.raises(OSError) as exc:
        os.lseek(empty, 0, os.SEEK_DATA)
    assert exc.value.errno == errno.ENXIO
    path.unlink()


def test_o_direct_round_trip(cluster: Cluster, fd_of: dict[str, int]) -> None:
    path = cluster.mnt / "direct"
    size = 2 * MIB
    data = os.urandom(size)
    wbuf = mmap.mmap(-1, size)  # page-aligned, as O_DIRECT wants
    rbuf = mmap.mmap(-1, size)
    try:
        wbuf[:] = data
        fd = fd_of["w"] = os.open(path, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
        assert os.pwritev(fd, [wbuf], 0) == size
        assert os.preadv(fd, [rbuf], 0) == size
        assert bytes(rbuf) == data
        # Unaligned offsets and lengths work too (dfs answers FOPEN_DIRECT_IO).
        assert os.pwrite(fd, b"hello", 3) == 5
        assert os.pread(fd, 10, 0) == data[:3] + b"hello" + data[8:10]
        os.close(fd_of.pop("w"))
        drop_caches()
        rd = fd_of["r"] = os.open(path, os.O_RDONLY | os.O_DIRECT)
        assert os.preadv(rd, [rbuf], 0) == size
        assert bytes(rbuf) == data[:3] + b"hello" + data[8:]
    finally:
        wbuf.close()
        rbuf.close()


def test_shared_writable_mmap(cluster: Cluster, fd_of: dict[str, int]) -> None:
    path = cluster.mnt / "mapped"
    size = 3 * MIB + 123
    data = os.urandom(size)
    fd = fd_of["w"] = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    os.ftruncate(fd, size)
    mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        mm[:] = data
        mm.flush()  # msync(MS_SYNC): the kernel sends the dirty pages as FUSE_WRITEs
    finally:
        mm.close()
    assert read_at(path, 0, size) == data
    os.close(fd_of.pop("w"))
    drop_caches()
    assert read_at(path, 0, size) == data
    # Modify a few bytes through a mapping again, closing the descriptor first.
    fd = fd_of["w"] = os.open(path, os.O_RDWR)
    mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(fd_of.pop("w"))
    try:
        mm[MIB : MIB + 5] = b"HELLO"
        mm.flush()
    finally:
        mm.close()
    drop_caches()
    assert read_at(path, MIB - 1, 7) == data[MIB - 1 : MIB] + b"HELLO" + data[MIB + 5 : MIB + 6]


def test_errors(cluster: Cluster, fd_of: dict[str, int]) -> None:
    path = cluster.mnt / "errors"
    fd = fd_of["w"] = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"z" * 10000)

    def fails(errnum: int, mode: int, offset: int, length: int, on: int = fd) -> None:
        with pytest.raises(OSError) as exc:
            fallocate(on, mode, offset, length)
        assert exc.value.errno == errnum, (mode, offset, length, exc.value)

    for mode in (
        FALLOC_FL_ZERO_RANGE,
        FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
        FALLOC_FL_COLLAPSE_RANGE,
        FALLOC_FL_INSERT_RANGE,
        FALLOC_FL_PUNCH_HOLE,  # punching needs KEEP_SIZE
    ):
        fails(errno.EOPNOTSUPP, mode, 0, 4096)
    fails(errno.EINVAL, 0, 0, 0)
    fails(errno.EINVAL, 0, -1, 10)
    fails(errno.EINVAL, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, -5)
    rd = fd_of["r"] = os.open(path, os.O_RDONLY)
    fails(errno.EBADF, 0, 0, 100, on=rd)
    fails(errno.EBADF, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 100, on=rd)
    # Still usable after the refusals; the size never moved.
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 10)
    assert os.pread(fd, 12, 0) == bytes(10) + b"zz"
    assert os.fstat(fd).st_size == 10000
    with pytest.raises(OSError) as exc:
        os.lseek(rd, 20000, os.SEEK_DATA)
    assert exc.value.errno == errno.ENXIO
    with pytest.raises(OSError) as exc:
        os.lseek(rd, -1, os.SEEK_DATA)
    assert exc.value.errno in (errno.ENXIO, errno.EINVAL)
