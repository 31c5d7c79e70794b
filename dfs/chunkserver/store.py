"""ChunkStore: the chunks of one chunkserver as checksummed local files.

Synchronous and thread-safe: the service calls it through ``trio.to_thread.run_sync``.  Every
operation on a chunk holds that chunk's lock, so operations on one chunk are serialised while
different chunks proceed in parallel.  The on-disk format and its crash-consistency argument are
in ``dfs.chunkserver.layout``.

Invariants kept by this class:

* the in-memory index (chunk -> version, length, tail checksum, header seq) equals the
  newest valid sidecar header of every chunk it lists;
* ``used_bytes()`` is the sum over listed chunks of ``length + SIDECAR_SIZE``;
* no byte is returned by ``read`` unless every block it lies in matched its checksum;
* version 0 is never a real version: it marks a copy being pulled from another replica
  (``chunk.replicate``) that is not complete yet.  Such a chunk becomes real only through
  ``set_version``, and the startup scan deletes any left behind by a crash.

Clean shutdown: ``data_dir/clean-shutdown`` exists only while no chunkserver runs on the
directory after a graceful stop (``take_clean_marker`` at start, ``mark_clean_shutdown`` at
the end).  Its absence at start means a crash or kill -9 may have torn an update, so every
chunk is verified once (``dfs.chunkserver.server``).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import xxhash

from dfs.chunkserver import layout
from dfs.chunkserver.fdcache import ChunkFiles, FdCache
from dfs.errors import (
    ChunkCorrupt,
    ChunkNotFound,
    InvalidArgument,
    IOFailure,
    NoSpace,
    StaleChunkVersion,
)
from dfs.types import BLOCK_SIZE, CHUNK_SIZE, ChunkId, ChunkVersion

logger = logging.getLogger(__name__)

_ZERO_BLOCK_SUM = layout.block_checksum(bytes(BLOCK_SIZE))
#: Blocks verified per read by ``verify`` (bounds its memory and lock hold time).
_VERIFY_BATCH = 16
#: The reserved version of a copy still being pulled (see the module docstring).
COPY_VERSION = 0
#: Present in ``data_dir`` only after a graceful shutdown (see the module docstring).
CLEAN_MARKER = "clean-shutdown"
_LENGTH = struct.Struct("<Q")


@dataclass
class _Chunk:
    version: int
    length: int
    seq: int
    tail_sum: int


class _LockEntry:
    __slots__ = ("lock", "refs")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.refs = 0


def _pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes at ``offset``; shorter only at end of file."""
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class _WouldBlock(Exception):
    """A non-blocking read found something not in memory (page cache, fd cache, lock)."""


#: ``preadv`` flag: fail with EAGAIN instead of waiting for the disk (Linux 4.14+).
_RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)


def _pread_nowait(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset`` from the page cache, or ``_WouldBlock``.

    A short read (data partly cached, or the end of the file) also raises: the blocking path
    then handles it with its usual errors.
    """
    if not _RWF_NOWAIT:
        raise _WouldBlock()
    buf = bytearray(size)
    try:
        n = os.preadv(fd, [buf], offset, _RWF_NOWAIT)
    except OSError as exc:  # EAGAIN: not cached; EOPNOTSUPP: the file system cannot tell
        raise _WouldBlock() from exc
    if n != size:
        raise _WouldBlock()
    return bytes(buf)


#: The version of a newly allocated chunk (its first write lease).
FIRST_VERSION = 1


def _check_ids(chunk_id: int, version: int) -> None:
    if not 0 <= chunk_id < 2**64:
        raise InvalidArgument(f"chunk id {chunk_id} out of range")
    if not 0 <= version < 2**64:
        raise InvalidArgument(f"chunk version {version} out of range")


class ChunkStore:
    """Chunks under ``data_dir/chunks``; see the module docstring for the contract.

    ``capacity_bytes`` limits the bytes this store may use (0: the file system's size).  The
    constructor scans ``data_dir`` (blocking): run it in a worker thread from trio code.
    """

    def __init__(self, data_dir: Path, capacity_bytes: int = 0, *, fd_cache_size: int = 64) -> None:
        if capacity_bytes < 0:
            raise ValueError("capacity_bytes must be >= 0")
        self._data_dir = data_dir
        self._root = data_dir / "chunks"
        self._quarantine = data_dir / "quarantine"
        self._root.mkdir(parents=True, exist_ok=True)
        self._capacity = capacity_bytes
        self._mu = threading.Lock()  # guards _index, _locks, _used, _new_dirs and _dirty
        #: Chunks created since their directory was last fsynced.
        self._new_dirs: set[int] = set()
        #: Chunks changed since their last fdatasync (synced by ``mark_clean_shutdown``).
        self._dirty: set[int] = set()
        self._index: dict[int, _Chunk] = {}
        self._locks: dict[int, _LockEntry] = {}
        self._used = 0
        self._fds = FdCache(fd_cache_size)
        self._scan()

    # ---- lifecycle ----
    def close(self) -> None:
        """Close every cached descriptor (the store stays usable; fds reopen on demand)."""
        self._fds.close_all()

    def take_clean_marker(self) -> bool:
        """Remove the clean-shutdown marker (durably); return whether it was there.

        Called once at start: from now on until ``mark_clean_shutdown`` a crash leaves no
        marker behind.  False means the previous run did not end gracefully (or the directory
        never had one), so chunks may hold torn updates.
        """
        marker = self._data_dir / CLEAN_MARKER
        try:
            marker.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(self._data_dir)
        return True

    def mark_clean_shutdown(self) -> None:
        """Write the clean-shutdown marker, once every update is on stable storage.

        Call after the last store operation.  Every chunk changed since its last sync is
        fdatasynced first: a marker that survived a power cut while chunk data did not would
        hide the damage from the next start's check.
        """
        with self._mu:
            dirty = sorted(self._dirty)
        for chunk_id in dirty:
            with suppress(ChunkNotFound):  # deleted since
                self.sync(chunk_id)
        self.close()
        marker = self._data_dir / CLEAN_MARKER
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self._data_dir)

    def __enter__(self) -> ChunkStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- queries ----
    def list_chunks(self) -> list[tuple[ChunkId, ChunkVersion, int]]:
        """Every chunk as ``(chunk_id, version, length)``, sorted by id."""
        with self._mu:
            items = [(cid, c.version, c.length) for cid, c in self._index.items()]
        items.sort()
        return [(ChunkId(cid), ChunkVersion(v), n) for cid, v, n in items]

    def has_chunk(self, chunk_id: int) -> bool:
        with self._mu:
            return chunk_id in self._index

    def info(self, chunk_id: int) -> tuple[ChunkVersion, int, int]:
        """``(version, length, digest)`` of the chunk; ChunkNotFound when absent.

        ``digest`` is an xxh3_64 over the length and the stored checksums of every block
        (array entries of the full blocks, then the tail checksum): no data is read, and two
        replicas with equal digests hold the same bytes as long as their checksums match
        their data (which reads and the scrubber check).  Raises ChunkCorrupt when the
        sidecar is too short to hold the checksums.
        """
        _check_ids(chunk_id, 0)
        with self._chunk_lock(chunk_id), self._os_errors(chunk_id, reading=True):
            with self._mu:
                info = self._index.get(chunk_id)
            if info is None:
                raise ChunkNotFound(f"chunk {chunk_id:016x} not found", chunk_id=chunk_id)
            full = info.length // BLOCK_SIZE
            files = self._acquire(chunk_id)
            try:
                size = full * layout.CHECKSUM_SIZE
                raw = _pread_all(files.meta_fd, size, layout.checksum_offset(0))
            finally:
                self._fds.release(files)
            if len(raw) != size:
                raise ChunkCorrupt(
                    f"chunk {chunk_id:016x}: checksum sidecar is truncated",
                    chunk_id=chunk_id,
                    version=info.version,
                    blocks=[],
                )
            h = xxhash.xxh3_64(_LENGTH.pack(info.length))
            h.update(raw)
            h.update(_LENGTH.pack(info.tail_sum))
            return ChunkVersion(info.version), info.length, int(h.intdigest())

    def used_bytes(self) -> int:
        with self._mu:
            return self._used

    def capacity(self) -> int:
        if self._capacity:
            return self._capacity
        st = os.statvfs(self._root)
        return st.f_blocks * st.f_frsize

    def free_bytes(self) -> int:
        st = os.statvfs(self._root)
        fs_free = st.f_bavail * st.f_frsize
        return max(0, min(self.capacity() - self.used_bytes(), fs_free))

    # ---- data operations ----
    def write(
        self, chunk_id: int, version: int, offset: int, data: bytes, sync: bool = False
    ) -> int:
        """Store ``data`` at ``offset``; return the chunk's new length.

        Creates the chunk at ``version`` when absent; a write past the end zero-fills the gap.
        Raises StaleChunkVersion, InvalidArgument (range beyond CHUNK_SIZE), NoSpace, and
        ChunkCorrupt when a partially overwritten block was already corrupt (nothing is written
        then).  With ``sync`` the data and checksums are on stable storage before returning.
        """
        return self.write_extents(chunk_id, version, [(offset, data)], sync)

    def write_extents(
        self,
        chunk_id: int,
        version: int,
        extents: Sequence[tuple[int, bytes]],
        sync: bool = False,
    ) -> int:
        """``write`` of several ``(offset, data)`` pieces under one lock and one header commit.

        Pieces are applied in offset order (callers send non-overlapping ones; where they do
        overlap, the piece at the higher offset wins).  Same errors as ``write``; after a
        failure part-way the chunk's length is unchanged, and blocks of earlier pieces inside it
        may hold the new bytes (the caller retries the whole call).
        """
        _check_ids(chunk_id, version)
        end = 0
        for offset, data in extents:
            if offset < 0 or offset + len(data) > CHUNK_SIZE:
                raise InvalidArgument(f"write [{offset}, +{len(data)}) outside the chunk")
            end = max(end, offset + len(data))
        with self._chunk_lock(chunk_id), self._os_errors(chunk_id, reading=False):
            info = self._get_or_create(chunk_id, version, end)
            files = self._acquire(chunk_id)
            self._mark_dirty(chunk_id)
            try:
                state = dataclasses.replace(info)
                for offset, data in sorted(extents, key=lambda e: e[0]):
                    if offset > state.length:
                        self._zero_extend(files, chunk_id, state, offset)
                    if data:
                        self._write_span(files, chunk_id, state, offset, data)
                self._commit(files, chunk_id, info, state)
                if sync:
                    self._fdatasync(chunk_id, files)
            finally:
                self._fds.release(files)
            return state.length

    def read(self, chunk_id: int, version: int, offset: int, length: int) -> bytes:
        """Up to ``length`` verified bytes at ``offset`` (fewer at the chunk's end).

        Raises ChunkNotFound, StaleChunkVersion, or ChunkCorrupt (``details['blocks']`` lists
        the bad block indexes) when any touched block fails its checksum.
        """
        _check_ids(chunk_id, version)
        if offset < 0 or length < 0:
            raise InvalidArgument("read offset and length must be >= 0")
        with self._chunk_lock(chunk_id), self._os_errors(chunk_id, reading=True):
            info = self._get(chunk_id, version)
            end = min(offset + length, info.length)
            if offset >= end:
                return b""
            first, last = offset // BLOCK_SIZE, (end - 1) // BLOCK_SIZE
            files = self._acquire(chunk_id)
            try:
                buf = self._read_blocks(files, chunk_id, info, first, last)
            finally:
                self._fds.release(files)
        return _cut(buf, offset - first * BLOCK_SIZE, end - offset)

    def read_nowait(self, chunk_id: int, version: int, offset: int, length: int) -> bytes | None:
        """``read`` if it can be done without blocking, else ``None`` (nothing happened).

        For the event loop's thread: no lock waits (the chunk's lock is only tried), no file
        opens (only cached descriptors), no disk waits (``RWF_NOWAIT`` reads from the page
        cache).  Checksums are verified exactly as in ``read``; raises the same errors.
        """
        _check_ids(chunk_id, version)
        if offset < 0 or length < 0:
            raise InvalidArgument("read offset and length must be >= 0")
        with self._chunk_lock(chunk_id, blocking=False) as locked:
            if not locked:
                return None
            with self._os_errors(chunk_id, reading=True):
                info = self._get(chunk_id, version)
                end = min(offset + length, info.length)
                if offset >= end:
                    return b""
                first, last = offset // BLOCK_SIZE, (end - 1) // BLOCK_SIZE
                files = self._fds.acquire_cached(chunk_id)
                if files is None:
                    return None
                try:
                    buf = self._read_blocks(files, chunk_id, info, first, last, pread=_pread_nowait)
                except _WouldBlock:
                    return None
                finally:
                    self._fds.release(files)
        return _cut(buf, offset - first * BLOCK_SIZE, end - offset)

    def truncate(self, chunk_id: int, version: int, length: int, sync: bool = False) -> None:
        """Set the chunk's length; growing reads back zeros.  Creates the chunk when absent."""
        _check_ids(chunk_id, version)
        if not 0 <= length <= CHUNK_SIZE:
            raise InvalidArgument(f"truncate length {length} outside [0, {CHUNK_SIZE}]")
        with self._chunk_lock(chunk_id), self._os_errors(chunk_id, reading=False):
            info = self._get_or_create(chunk_id, version, length)
            old = info.length
            files = self._acquire(chunk_id)
            self._mark_dirty(chunk_id)
            try:
                state = dataclasses.replace(info)
                if length > old:
                    self._zero_extend(files, chunk_id, state, length)
                elif length < old:
                    self._shrink(files, chunk_id, info, state, length)
                self._commit(files, chunk_id, info, state)
                if sync:
                    self._fdatasync(chunk_id, files)
            finally:
                self._fds.release(files)

    def set_version(self, chunk_id: int, version: int, new_version: int) -> int:
        """Move the chunk from ``version`` to ``new_version``; return its length.

        Already at ``new_version``: nothing changes (a retried call succeeds).  At any other
        version: StaleChunkVersion (``details['version']`` is the current one); absent:
        ChunkNotFound.  ``new_version`` may be lower than ``version`` (the metaserver undoes a
        bump it never committed) but not 0 (InvalidArgument; 0 marks incomplete copies).

        One header update (same length and tail checksum, next ``seq``), not synced: a replica
        whose header reverts in a crash is merely stale, and the next ``sync`` makes it durable.

        A chunk at version 1 (new, in its first write lease) exists on a chunkserver only once
        a write reached it, exactly as a write would create it: moving an absent chunk from
        version 1 creates it empty at ``new_version``.
        """
        _check_ids(chunk_id, version)
        _check_ids(chunk_id, new_version)
        if new_version == COPY_VERSION:
            raise InvalidArgument(f"chunk {chunk_id:016x}: version 0 is reserved")
        with self._chunk_lock(chunk_id), self._os_errors(chunk_id, reading=False):
            with self._mu:
                info = self._index.get(chunk_id)
            if info is not None and info.version == new_version:
                return info.length
            if info is None and version == FIRST_VERSION:
                self._reserve(chunk_id, layout.SIDECAR_SIZE)
                self._create(chunk_id, version)
            info = self._get(chunk_id, version)
            files = self._acquire(chunk_id)
            self._mark_dirty(chunk_id)
            try:
                seq = info.seq + 1
                header = layout.Header(
                    seq=seq,
                    chunk_id=chunk_id,
                    version=new_version,
                    length=info.length,
                    tail_sum=info.tail_sum,
                )
                _pwrite_all(files.meta_fd, layout.encode_slot(header), layout.slot_offset(seq))
            finally:
                self._fds.release(files)
            with self._mu:
                info.version = new_version
                info.seq = seq
            return info.length

    def append(self, chunk_id: int, version: int, offset: int, data: bytes) -> int:
        """``write`` of ``data`` at the end of an existing chunk; return the new length.

        For pulling a copy piece by piece: the chunk must exist at ``version`` (else
        ChunkNotFound or StaleChunkVersion) and be exactly ``offset`` bytes long (else
        InvalidArgument), so a copy deleted or changed part-way is never silently continued
        (a plain ``write`` would recreate it and zero-fill the gap).
        """
        _check_ids(chunk_id, version)
        if offset < 0 or offset + len(data) > CHUNK_SIZE:
            raise InvalidArgument(f"append [{offset}, +{len(data)}) outside the chunk")
        with self._chunk_lock(chunk_id), self._os_errors(chunk_id, reading=False):
            info = self._get(chunk_id, version)
            if info.length != offset:
                raise InvalidArgument(
                    f"chunk {chunk_id:016x} is {info.length} bytes long, not {offset}"
                )
            if not data:
                return info.length
            self._reserve(chunk_id, len(data))
            files = self._acquire(chunk_id)
            self._mark_dirty(chunk_id)
            try:
                state = dataclasses.replace(info)
                self._write_span(files, chunk_id, state, offset, data)
                self._commit(files, chunk_id, info, state)
            finally:
                self._fds.release(files)
            return state.length

    def create_copy(self, chunk_id: int) -> None:
        """Start an empty copy of the chunk at version 0, replacing any local copy.

        The copy is filled with ``append(chunk_id, 0, ...)``, synced, and published with
        ``set_version(chunk_id, 0, version)``; until then it is never a valid chunk.
        """
        _check_ids(chunk_id, 0)
        self.delete(chunk_id)
        with self._chunk_lock(chunk_id), self._os_errors(chunk_id, reading=False):
            with self._mu:
                exists = chunk_id in self._index
            if exists:  # created again since the delete: leave it, let the caller fail
                raise InvalidArgument(f"chunk {chunk_id:016x} was created meanwhile")
            self._reserve(chunk_id, layout.SIDECAR_SIZE)
            self._create(chunk_id, COPY_VERSION)

    def sync(self, chunk_id: int) -> None:
        """fdatasync the chunk's data and sidecar; ChunkNotFound when absent."""
        _check_ids(chunk_id, 0)
        with self._chunk_lock(chunk_id), self._os_errors(chunk_id, reading=False):
            with self._mu:
                if chunk_id not in self._index:
                    raise ChunkNotFound(f"chunk {chunk_id:016x} not found", chunk_id=chunk_id)
            files = self._acquire(chunk_id)
            try:
                self._fdatasync(chunk_id, files)
            finally:
                self._fds.release(files)

    def delete(self, chunk_id: int, *, if_version: int | None = None) -> bool:
        """Remove the chunk; return whether it existed (deleting twice is not an error).

        With ``if_version``, only a chunk at that version is removed (others: False).
        """
        _check_ids(chunk_id, 0)
        with self._chunk_lock(chunk_id), self._os_errors(chunk_id, reading=False):
            with self._mu:
                current = self._index.get(chunk_id)
                if if_version is not None and (current is None or current.version != if_version):
                    return False
                info = self._index.pop(chunk_id, None)
                self._new_dirs.discard(chunk_id)
                self._dirty.discard(chunk_id)
                if info is not None:
                    self._used -= info.length + layout.SIDECAR_SIZE
            self._fds.discard(chunk_id)
            # The sidecar goes first: a data file without a sidecar is an orphan that the next
            # scan removes, while a sidecar without data would look like a damaged chunk.
            existed = info is not None
            for path in (
                layout.sidecar_path(self._root, chunk_id),
                layout.data_path(self._root, chunk_id),
            ):
                try:
                    path.unlink()
                    existed = True
                except FileNotFoundError:
                    pass
            return existed

    def verify(self, chunk_id: int) -> list[int]:
        """Check every block of the chunk; return the indexes of the bad ones (empty: healthy).

        Works in batches, taking the chunk lock per batch so writers are not held up for the
        whole chunk.  Raises ChunkNotFound when the chunk does not exist, ChunkCorrupt when
        one of its files is missing (even if a cached descriptor still reads it).
        """
        _check_ids(chunk_id, 0)
        bad: list[int] = []
        block = 0
        while True:
            with self._chunk_lock(chunk_id), self._os_errors(chunk_id, reading=True):
                with self._mu:
                    info = self._index.get(chunk_id)
                if info is None:
                    raise ChunkNotFound(f"chunk {chunk_id:016x} not found", chunk_id=chunk_id)
                nblocks = layout.blocks_of(info.length)
                if block >= nblocks:
                    return bad
                last = min(block + _VERIFY_BATCH, nblocks) - 1
                # A file of the chunk missing raises ChunkCorrupt: nothing of it is good.
                files = self._acquire(chunk_id)
                if block == 0 and not os.path.exists(layout.data_path(self._root, chunk_id)):
                    # Deleted behind our back while a cached descriptor kept it readable: the
                    # replica is gone as soon as that descriptor closes.
                    self._fds.release(files)
                    raise ChunkCorrupt(
                        f"chunk {chunk_id:016x}: data file missing", chunk_id=chunk_id, blocks=[]
                    )
                try:
                    bad.extend(self._bad_blocks(files, info, block, last)[1])
                except ChunkCorrupt:  # the sidecar lost the batch's checksums
                    bad.extend(range(block, last + 1))
                finally:
                    self._fds.release(files)
            block = last + 1

    # ---- internals: locking, index, errors ----
    @contextmanager
    def _chunk_lock(self, chunk_id: int, *, blocking: bool = True) -> Iterator[bool]:
        """Hold the chunk's lock; yields whether it was acquired (always, when blocking)."""
        with self._mu:
            entry = self._locks.get(chunk_id)
            if entry is None:
                entry = self._locks[chunk_id] = _LockEntry()
            entry.refs += 1
        try:
            locked = entry.lock.acquire(blocking=blocking)
            try:
                yield locked
            finally:
                if locked:
                    entry.lock.release()
        finally:
            with self._mu:
                entry.refs -= 1
                if entry.refs == 0:
                    del self._locks[chunk_id]

    @contextmanager
    def _os_errors(self, chunk_id: int, *, reading: bool) -> Iterator[None]:
        """Translate OSError: ENOSPC -> NoSpace, EIO on reads -> ChunkCorrupt, else IOFailure."""
        try:
            yield
        except OSError as exc:
            name = f"chunk {chunk_id:016x}"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"{name}: no space left on device") from exc
            if reading and exc.errno == errno.EIO:
                raise ChunkCorrupt(f"{name}: I/O error", chunk_id=chunk_id, blocks=[]) from exc
            logger.error("%s: %s", name, exc)
            raise IOFailure(f"{name}: {exc.strerror or exc}") from exc

    def _get(self, chunk_id: int, version: int) -> _Chunk:
        with self._mu:
            info = self._index.get(chunk_id)
        if info is None:
            raise ChunkNotFound(f"chunk {chunk_id:016x} not found", chunk_id=chunk_id)
        if info.version != version:
            raise StaleChunkVersion(
                f"chunk {chunk_id:016x} has version {info.version}, not {version}",
                chunk_id=chunk_id,
                version=info.version,
            )
        return info

    def _get_or_create(self, chunk_id: int, version: int, new_len: int) -> _Chunk:
        """The chunk at ``version`` (created when absent), with room to grow to ``new_len``."""
        with self._mu:
            exists = chunk_id in self._index
        if exists:
            info = self._get(chunk_id, version)
            self._reserve(chunk_id, new_len - info.length)
            return info
        self._reserve(chunk_id, new_len + layout.SIDECAR_SIZE)
        self._create(chunk_id, version)
        return self._get(chunk_id, version)

    def _reserve(self, chunk_id: int, growth: int) -> None:
        """Refuse growth beyond the configured capacity (the fs itself reports ENOSPC)."""
        if growth <= 0 or not self._capacity:
            return
        with self._mu:
            if self._used + growth > self._capacity:
                raise NoSpace(f"chunk {chunk_id:016x}: capacity of {self._capacity} bytes reached")

    def _acquire(self, chunk_id: int) -> ChunkFiles:
        def opener() -> ChunkFiles:
            try:
                data_fd = os.open(layout.data_path(self._root, chunk_id), os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                raise ChunkCorrupt(
                    f"chunk {chunk_id:016x}: data file missing", chunk_id=chunk_id, blocks=[]
                ) from None
            try:
                meta_fd = os.open(
                    layout.sidecar_path(self._root, chunk_id), os.O_RDWR | os.O_CLOEXEC
                )
            except BaseException:
                os.close(data_fd)
                raise
            return ChunkFiles(data_fd, meta_fd)

        return self._fds.acquire(chunk_id, opener)

    # ---- internals: on-disk updates (caller holds the chunk lock) ----
    #
    # The update helpers work on ``state``, a private copy of the chunk's index entry that
    # describes the on-disk data and array checksums as they change; ``_commit`` then publishes
    # it by writing the header and updating the index.

    def _create(self, chunk_id: int, version: int) -> None:
        directory = layout.chunk_dir(self._root, chunk_id)
        directory.mkdir(exist_ok=True)
        data = layout.data_path(self._root, chunk_id)
        # O_TRUNC: a leftover data file of an interrupted create holds nothing of value.
        os.close(os.open(data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644))
        sidecar = layout.sidecar_path(self._root, chunk_id)
        tmp = sidecar.with_name(sidecar.name + layout.TMP_SUFFIX)
        header = layout.Header(seq=0, chunk_id=chunk_id, version=version, length=0)
        content = layout.encode_slot(header).ljust(layout.SIDECAR_SIZE, b"\0")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _pwrite_all(fd, content, 0)
        finally:
            os.close(fd)
        # The sidecar appears atomically: a chunk either exists with a valid header or not at
        # all (an orphan data file or a torn sidecar is cleaned up by the next scan).  It is
        # made durable, with its directory entry, by the first sync of the chunk: nothing in
        # it was acknowledged as durable before that, so creating a chunk costs no fsync.
        tmp.replace(sidecar)
        with self._mu:
            self._new_dirs.add(chunk_id)
            self._dirty.add(chunk_id)
            self._index[chunk_id] = _Chunk(version=version, length=0, seq=0, tail_sum=0)
            self._used += layout.SIDECAR_SIZE

    def _commit(self, files: ChunkFiles, chunk_id: int, info: _Chunk, state: _Chunk) -> None:
        """Publish ``state`` (length and tail checksum) through the header, if it changed."""
        if state.length == info.length and state.tail_sum == info.tail_sum:
            return
        seq = info.seq + 1
        header = layout.Header(
            seq=seq,
            chunk_id=chunk_id,
            version=info.version,
            length=state.length,
            tail_sum=state.tail_sum,
        )
        _pwrite_all(files.meta_fd, layout.encode_slot(header), layout.slot_offset(seq))
        with self._mu:
            self._used += state.length - info.length
            info.length = state.length
            info.tail_sum = state.tail_sum
            info.seq = seq
        state.seq = seq

    def _mark_dirty(self, chunk_id: int) -> None:
        with self._mu:
            self._dirty.add(chunk_id)

    def _fdatasync(self, chunk_id: int, files: ChunkFiles) -> None:
        os.fdatasync(files.data_fd)
        os.fdatasync(files.meta_fd)
        with self._mu:
            self._dirty.discard(chunk_id)  # the caller holds the chunk lock: no change raced
            new = chunk_id in self._new_dirs
        if new:
            # First sync since the chunk was created: make its directory entries durable too.
            dir_fd = os.open(layout.chunk_dir(self._root, chunk_id), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            with self._mu:
                self._new_dirs.discard(chunk_id)

    def _store_sums(self, files: ChunkFiles, state: _Chunk, first: int, sums: list[int]) -> None:
        """Record the new checksums of blocks ``first, first + 1, ...`` of a chunk that is
        ``state.length`` long: full blocks go to the array, a partial last block to
        ``state.tail_sum`` (published by the next ``_commit``)."""
        full = state.length // BLOCK_SIZE
        n_full = max(0, min(len(sums), full - first))
        if n_full:
            self._write_checksums(files, first, sums[:n_full])
        if n_full < len(sums):
            # Only the last block of a chunk can be partial.
            assert n_full == len(sums) - 1 and first + n_full == full
            state.tail_sum = sums[-1]
        elif state.length % BLOCK_SIZE == 0:
            state.tail_sum = 0

    def _write_checksums(self, files: ChunkFiles, first: int, sums: list[int]) -> None:
        _pwrite_all(files.meta_fd, layout.pack_checksums(sums), layout.checksum_offset(first))

    def _expected_sums(
        self,
        files: ChunkFiles,
        state: _Chunk,
        first: int,
        last: int,
        pread: Callable[[int, int, int], bytes] = _pread_all,
    ) -> list[int]:
        full = state.length // BLOCK_SIZE
        sums: list[int] = []
        last_full = min(last, full - 1)
        if first <= last_full:
            size = (last_full - first + 1) * layout.CHECKSUM_SIZE
            raw = pread(files.meta_fd, size, layout.checksum_offset(first))
            if len(raw) != size:
                raise ChunkCorrupt(
                    "checksum sidecar is truncated", blocks=list(range(first, last + 1))
                )
            sums.extend(layout.unpack_checksums(raw))
        if last >= full:
            sums.append(state.tail_sum)
        return sums

    def _bad_blocks(
        self,
        files: ChunkFiles,
        state: _Chunk,
        first: int,
        last: int,
        pread: Callable[[int, int, int], bytes] = _pread_all,
    ) -> tuple[bytes, list[int]]:
        """Read blocks ``first..last`` (valid bytes only) and list those failing their checksum.

        A block the data file is too short to hold counts as bad.
        """
        start = first * BLOCK_SIZE
        end = min((last + 1) * BLOCK_SIZE, state.length)
        buf = pread(files.data_fd, end - start, start)
        sums = self._expected_sums(files, state, first, last, pread)
        view = memoryview(buf)
        bad: list[int] = []
        for i, expected in enumerate(sums):
            lo = i * BLOCK_SIZE
            hi = min(lo + BLOCK_SIZE, end - start)
            if len(buf) < hi or layout.block_checksum(view[lo:hi]) != expected:
                bad.append(first + i)
        return buf, bad

    def _read_blocks(
        self,
        files: ChunkFiles,
        chunk_id: int,
        state: _Chunk,
        first: int,
        last: int,
        pread: Callable[[int, int, int], bytes] = _pread_all,
    ) -> bytes:
        buf, bad = self._bad_blocks(files, state, first, last, pread)
        if bad:
            logger.warning("chunk %016x: checksum mismatch in block(s) %s", chunk_id, bad)
            raise ChunkCorrupt(
                f"chunk {chunk_id:016x}: checksum mismatch in block(s) {bad}",
                chunk_id=chunk_id,
                version=state.version,
                blocks=bad,
            )
        return buf

    def _write_span(
        self, files: ChunkFiles, chunk_id: int, state: _Chunk, offset: int, data: bytes
    ) -> None:
        """Write ``data`` at ``offset`` <= ``state.length``, read-modify-writing partial blocks
        (whose old bytes are verified first)."""
        length = state.length
        end = offset + len(data)
        new_len = max(length, end)
        first = offset // BLOCK_SIZE
        last = (end - 1) // BLOCK_SIZE
        span_start = first * BLOCK_SIZE
        span_end = min((last + 1) * BLOCK_SIZE, new_len)
        head = offset - span_start  # old bytes kept before the write, in block `first`
        tail = span_end - end  # old bytes kept after the write, in block `last`
        buf: bytes | bytearray
        if head == 0 and tail == 0:
            buf = data  # the aligned fast path: no old data read, no copy
        else:
            merged = bytearray(span_end - span_start)
            first_old = b""
            if head:
                first_old = self._read_blocks(files, chunk_id, state, first, first)
                merged[:head] = first_old[:head]
            merged[head : head + len(data)] = data
            if tail:
                last_old = (
                    first_old
                    if last == first and head
                    else self._read_blocks(files, chunk_id, state, last, last)
                )
                base = last * BLOCK_SIZE
                merged[end - span_start :] = last_old[end - base : span_end - base]
            buf = merged
        view = memoryview(buf)
        sums = [
            layout.block_checksum(view[lo : lo + BLOCK_SIZE])
            for lo in range(0, len(buf), BLOCK_SIZE)
        ]
        _pwrite_all(files.data_fd, buf, span_start)
        state.length = new_len
        self._store_sums(files, state, first, sums)

    def _zero_extend(self, files: ChunkFiles, chunk_id: int, state: _Chunk, new_len: int) -> None:
        """Grow the chunk to ``new_len`` > ``state.length`` with zeros."""
        length = state.length
        first = length // BLOCK_SIZE
        keep = length % BLOCK_SIZE
        old = self._read_blocks(files, chunk_id, state, first, first) if keep else b""
        # Cut any garbage an interrupted write left past `length`, then let the file system
        # supply the zeros (as a hole, without writing them).
        os.ftruncate(files.data_fd, length)
        os.ftruncate(files.data_fd, new_len)
        sums: list[int] = []
        for block in range(first, layout.blocks_of(new_len)):
            lo = block * BLOCK_SIZE
            size = min(lo + BLOCK_SIZE, new_len) - lo
            if block == first and keep:
                sums.append(layout.block_checksum(old + bytes(size - keep)))
            elif size == BLOCK_SIZE:
                sums.append(_ZERO_BLOCK_SUM)
            else:
                sums.append(layout.block_checksum(bytes(size)))
        state.length = new_len
        self._store_sums(files, state, first, sums)

    def _shrink(
        self, files: ChunkFiles, chunk_id: int, info: _Chunk, state: _Chunk, new_len: int
    ) -> None:
        """Cut the chunk to ``new_len`` < ``state.length``.

        The header goes first, so a crash leaves either the old chunk or the new one: bytes past
        the new length are ignored even while the data file still holds them.
        """
        last = new_len // BLOCK_SIZE
        keep = new_len % BLOCK_SIZE
        tail_sum = 0
        if keep:
            old = self._read_blocks(files, chunk_id, state, last, last)
            tail_sum = layout.block_checksum(old[:keep])
        state.length = new_len
        state.tail_sum = tail_sum
        self._commit(files, chunk_id, info, state)
        os.ftruncate(files.data_fd, new_len)

    # ---- internals: startup scan ----
    def _scan(self) -> None:
        """Load every chunk's header; remove leftovers of interrupted creates, quarantine junk."""
        for sub in sorted(self._root.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                logger.warning("ignoring unexpected entry %s", sub)
                continue
            names = {e.name for e in os.scandir(sub)}
            for name in sorted(names):
                path = sub / name
                if name.endswith(layout.TMP_SUFFIX):
                    logger.info("removing leftover of an interrupted create: %s", path)
                    path.unlink(missing_ok=True)
                    continue
                base = name.removesuffix(layout.SIDECAR_SUFFIX)
                chunk_id = layout.parse_chunk_name(base)
                if chunk_id is None or layout.chunk_dir(self._root, chunk_id) != sub:
                    logger.warning("ignoring unexpected file %s", path)
                    continue
                if name != base:  # a sidecar
                    if base not in names:
                        self._quarantine_files(chunk_id, "sidecar without data file")
                    continue
                if base + layout.SIDECAR_SUFFIX not in names:
                    # Left by an interrupted create or delete: never a readable chunk.
                    logger.info("removing orphan data file %s", path)
                    path.unlink()
                    continue
                self._load(chunk_id)
        logger.info(
            "chunk store %s: %d chunk(s), %d bytes", self._root, len(self._index), self._used
        )

    def _load(self, chunk_id: int) -> None:
        sidecar = layout.sidecar_path(self._root, chunk_id)
        with sidecar.open("rb") as f:
            header = layout.decode_header(f.read(layout.HEADER_SIZE))
        if header is None or header.chunk_id != chunk_id or header.length > CHUNK_SIZE:
            self._quarantine_files(chunk_id, "no valid header")
            return
        if header.version == COPY_VERSION:
            logger.info(
                "chunk %016x: removing an incomplete copy (version 0) left by an interrupted "
                "replication",
                chunk_id,
            )
            sidecar.unlink()  # the sidecar first, as in ``delete``
            layout.data_path(self._root, chunk_id).unlink(missing_ok=True)
            return
        self._index[chunk_id] = _Chunk(
            version=header.version, length=header.length, seq=header.seq, tail_sum=header.tail_sum
        )
        self._used += header.length + layout.SIDECAR_SIZE

    def _quarantine_files(self, chunk_id: int, reason: str) -> None:
        """Move a damaged chunk's files aside (kept for an operator, never served)."""
        logger.warning("chunk %016x: %s; moving it to %s", chunk_id, reason, self._quarantine)
        self._quarantine.mkdir(exist_ok=True)
        for path in (
            layout.data_path(self._root, chunk_id),
            layout.sidecar_path(self._root, chunk_id),
        ):
            if path.exists():
                path.replace(self._quarantine / path.name)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cut(buf: bytes, start: int, length: int) -> bytes:
    """The ``length`` bytes of whole blocks ``buf`` that start ``start`` bytes in."""
    if start == 0 and length == len(buf):
        return buf
    return buf[start : start + length]
