"""The client's file-system logic: handles, write buffering, reads and directory listings.

The VFS sits between the FUSE adapter (which only translates kernel requests and errno) and
the cluster interfaces (``MetaClient``, ``ChunkClient``).  It raises ``dfs.errors`` types.

Consistency (see README "Guarantees"): close-to-open.  ``open`` fetches fresh attributes and
drops cached chunk locations; data written through a handle is buffered per inode and reaches
the chunkservers, durably (fdatasync on every replica), on ``flush`` (each ``close``), ``fsync``
and ``release``; after that the new size is committed to the metaserver.  Reads of an inode
with buffered data first flush it, so a process always reads its own writes.
"""

from __future__ import annotations

import logging
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import trio

from dfs.client.dirty import DirtyBuffer
from dfs.client.interfaces import (
    ChunkClient,
    ChunkRef,
    Cred,
    InodeAttr,
    MetaClient,
    SetAttr,
    StatFs,
)
from dfs.errors import (
    Exists,
    FileTooLarge,
    InvalidArgument,
    IOFailure,
    IsADirectory,
    NameTooLong,
    NoAttribute,
    NotADirectory,
    NotFound,
)
from dfs.types import CHUNK_SIZE, InodeId

log = logging.getLogger(__name__)

#: Largest piece sent to a chunkserver in one RPC; pieces of one flush go out in parallel.
WRITE_PIECE = 1024 * 1024
#: Parallel chunk RPCs per flush or read.
PARALLEL_IO = 8
MAX_NAME = 255
#: Files may not grow beyond 2**63 - 1 like on Linux; we cap lower to keep chunk indexes sane.
MAX_FILE_SIZE = 1 << 50

XATTR_CAPABILITY = b"security.capability"


@dataclass
class FileState:
    """Client state of one regular file shared by all its open handles."""

    ino: InodeId
    size: int
    open_count: int = 0
    dirty: DirtyBuffer = field(default_factory=DirtyBuffer)
    #: Latest mtime of a buffered write (committed with the size).
    mtime_ns: int = 0
    #: Chunk locations known to this client, by chunk index (dropped on open and truncate).
    chunks: dict[int, ChunkRef] = field(default_factory=dict)
    #: Chunks written since their last fdatasync.
    unsynced: dict[int, ChunkRef] = field(default_factory=dict)
    #: A size change not yet committed to the metaserver.
    size_dirty: bool = False
    lock: trio.Lock = field(default_factory=trio.Lock)
    #: ``security.capability`` known absent (the kernel asks for it before every write).
    no_capability: bool = False


@dataclass
class FileHandle:
    fh: int
    state: FileState
    flags: int


@dataclass
class DirHandle:
    fh: int
    ino: InodeId
    #: Snapshot of the listing taken at opendir: (name, attr), "." and ".." first.
    entries: list[tuple[bytes, InodeAttr]]


def check_name(name: bytes) -> None:
    if len(name) > MAX_NAME:
        raise NameTooLong(f"name longer than {MAX_NAME} bytes")
    if not name or b"/" in name or b"\0" in name:
        raise InvalidArgument("invalid file name")


class Vfs:
    """File-system operations on top of the metadata and chunk services."""

    def __init__(self, meta: MetaClient, chunks: ChunkClient, *, write_buffer: int) -> None:
        self.meta = meta
        self.chunks = chunks
        self.write_buffer = write_buffer
        self._files: dict[InodeId, FileState] = {}
        self._handles: dict[int, FileHandle] = {}
        self._dirs: dict[int, DirHandle] = {}
        self._next_fh = 1
        self._io_limit = trio.CapacityLimiter(PARALLEL_IO)

    # ------------------------------------------------------------------ attributes
    def _overlay(self, attr: InodeAttr) -> InodeAttr:
        """Show this client's unflushed size and mtime in attributes it returns."""
        st = self._files.get(attr.ino)
        if st is not None and (st.dirty or st.size_dirty):
            attr.size = st.size
            attr.mtime_ns = max(attr.mtime_ns, st.mtime_ns)
        return attr

    async def lookup(self, parent: InodeId, name: bytes) -> InodeAttr:
        check_name(name)
        return self._overlay(await self.meta.lookup(parent, name))

    async def getattr(self, ino: InodeId) -> InodeAttr:
        return self._overlay(await self.meta.getattr(ino))

    async def setattr(self, ino: InodeId, changes: SetAttr, cred: Cred) -> InodeAttr:
        st = self._files.get(ino)
        if changes.size is not None:
            if changes.size > MAX_FILE_SIZE:
                raise FileTooLarge("file size limit exceeded")
            if st is not None:
                async with st.lock:
                    # Buffered bytes below the new size must land before the truncate; those
                    # beyond it are simply dropped.
                    st.dirty.truncate(changes.size)
                    await self._flush_locked(st, sync=False)
                    attr, trims = await self.meta.setattr(ino, changes, cred)
                    await self._trim(trims)
                    st.size = attr.size
                    st.chunks.clear()
                    st.unsynced.clear()
                    return attr
            attr, trims = await self.meta.setattr(ino, changes, cred)
            await self._trim(trims)
            return attr
        if st is not None and (st.dirty or st.size_dirty) and changes.mtime_ns is not None:
            # An explicit mtime (utimensat, e.g. from tar or cp -p) must not be overwritten by
            # the commit of writes made before it: land those first.
            async with st.lock:
                await self._flush_locked(st, sync=False)
        attr, _ = await self.meta.setattr(ino, changes, cred)
        return self._overlay(attr)

    async def _trim(self, trims: list[ChunkRef]) -> None:
        for chunk in trims:
            if chunk.trim_length >= 0 and chunk.servers:
                await self.chunks.truncate(chunk, chunk.trim_length)

    # ------------------------------------------------------------------ namespace
    async def mknod(
        self, parent: InodeId, name: bytes, mode: int, rdev: int, cred: Cred
    ) -> InodeAttr:
        check_name(name)
        return await self.meta.mknod(parent, name, mode, rdev, cred)

    async def mkdir(self, parent: InodeId, name: bytes, mode: int, cred: Cred) -> InodeAttr:
        check_name(name)
        return await self.meta.mkdir(parent, name, stat.S_IFDIR | (mode & 0o7777), cred)

    async def symlink(self, parent: InodeId, name: bytes, target: bytes, cred: Cred) -> InodeAttr:
        check_name(name)
        if len(target) > 4095:
            raise NameTooLong("symlink target longer than 4095 bytes")
        return await self.meta.symlink(parent, name, target, cred)

    async def link(self, ino: InodeId, parent: InodeId, name: bytes) -> InodeAttr:
        check_name(name)
        return self._overlay(await self.meta.link(ino, parent, name))

    async def unlink(self, parent: InodeId, name: bytes) -> None:
        check_name(name)
        await self.meta.unlink(parent, name)

    async def rmdir(self, parent: InodeId, name: bytes) -> None:
        check_name(name)
        await self.meta.rmdir(parent, name)

    async def rename(
        self, parent: InodeId, name: bytes, newparent: InodeId, newname: bytes, flags: int
    ) -> None:
        check_name(name)
        check_name(newname)
        await self.meta.rename(parent, name, newparent, newname, flags)

    async def readlink(self, ino: InodeId) -> bytes:
        return await self.meta.readlink(ino)

    async def statfs(self) -> StatFs:
        return await self.meta.statfs()

    # ------------------------------------------------------------------ xattrs
    async def setxattr(self, ino: InodeId, name: bytes, value: bytes, flags: int) -> None:
        await self.meta.setxattr(ino, name, value, flags)
        st = self._files.get(ino)
        if st is not None and name == XATTR_CAPABILITY:
            st.no_capability = False

    async def getxattr(self, ino: InodeId, name: bytes) -> bytes:
        st = self._files.get(ino)
        if name == XATTR_CAPABILITY and st is not None and st.no_capability:
            raise NoAttribute()
        try:
            return await self.meta.getxattr(ino, name)
        except NoAttribute:
            if name == XATTR_CAPABILITY and st is not None:
                st.no_capability = True
            raise

    async def listxattr(self, ino: InodeId) -> list[bytes]:
        return await self.meta.listxattr(ino)

    async def removexattr(self, ino: InodeId, name: bytes) -> None:
        await self.meta.removexattr(ino, name)

    # ------------------------------------------------------------------ files
    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _attach(self, attr: InodeAttr, flags: int) -> FileHandle:
        st = self._files.get(attr.ino)
        if st is None:
            st = FileState(ino=attr.ino, size=attr.size)
            self._files[attr.ino] = st
        elif not st.dirty and not st.size_dirty:
            st.size = attr.size
        # Close-to-open: a new open re-reads the chunk map, another client may have written.
        if not st.dirty:
            st.chunks.clear()
        st.open_count += 1
        handle = FileHandle(fh=self._new_fh(), state=st, flags=flags)
        self._handles[handle.fh] = handle
        return handle

    async def open(self, ino: InodeId, flags: int) -> tuple[int, InodeAttr]:
        attr = await self.meta.getattr(ino)
        if stat.S_ISDIR(attr.mode):
            raise IsADirectory()
        return self._attach(attr, flags).fh, attr

    async def create(
        self, parent: InodeId, name: bytes, mode: int, flags: int, cred: Cred
    ) -> tuple[int, InodeAttr]:
        check_name(name)
        try:
            attr = await self.meta.mknod(parent, name, stat.S_IFREG | (mode & 0o7777), 0, cred)
        except Exists:
            if flags & 0o200:  # O_EXCL
                raise
            attr = await self.meta.lookup(parent, name)
            if stat.S_ISDIR(attr.mode):
                raise IsADirectory() from None
        return self._attach(attr, flags).fh, attr

    def _handle(self, fh: int) -> FileHandle:
        try:
            return self._handles[fh]
        except KeyError:
            raise InvalidArgument(f"unknown file handle {fh}") from None

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        st = self._handle(fh).state
        end = offset + len(data)
        if end > MAX_FILE_SIZE:
            raise FileTooLarge("file size limit exceeded")
        st.dirty.add(offset, data)
        st.mtime_ns = time.time_ns()
        if end > st.size:
            st.size = end
            st.size_dirty = True
        if st.dirty.nbytes >= self.write_buffer:
            async with st.lock:
                await self._flush_locked(st, sync=False)
        return len(data)

    async def flush(self, fh: int, *, sync: bool) -> None:
        st = self._handle(fh).state
        async with st.lock:
            await self._flush_locked(st, sync=sync)

    async def release(self, fh: int, *, sync: bool) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None:
            return
        st = handle.state
        st.open_count -= 1
        try:
            if st.dirty or st.size_dirty or (sync and st.unsynced):
                async with st.lock:
                    await self._flush_locked(st, sync=sync)
        finally:
            if st.open_count == 0 and not st.dirty and self._files.get(st.ino) is st:
                del self._files[st.ino]

    async def _chunk_for_write(self, st: FileState, index: int) -> ChunkRef:
        chunk = st.chunks.get(index)
        if chunk is None:
            chunk = await self.meta.alloc_chunk(st.ino, index)
            st.chunks[index] = chunk
        return chunk

    async def _flush_locked(self, st: FileState, *, sync: bool) -> None:
        """Send buffered data to the chunkservers, fdatasync when ``sync``, commit the size."""
        extents = st.dirty.take()
        try:
            pieces: list[tuple[int, int, bytes]] = []  # (chunk index, offset in chunk, data)
            for off, extent in extents:
                view = memoryview(extent)
                pos = 0
                while pos < len(view):
                    abs_off = off + pos
                    index, in_chunk = divmod(abs_off, CHUNK_SIZE)
                    n = min(len(view) - pos, CHUNK_SIZE - in_chunk, WRITE_PIECE)
                    pieces.append((index, in_chunk, bytes(view[pos : pos + n])))
                    pos += n
            for index in sorted({p[0] for p in pieces}):
                await self._chunk_for_write(st, index)
            if pieces:
                async with trio.open_nursery() as nursery:
                    for index, in_chunk, data in pieces:
                        nursery.start_soon(self._write_piece, st, index, in_chunk, data)
        except BaseException:
            st.dirty.restore_under(extents)
            raise
        if sync and st.unsynced:
            todo = list(st.unsynced.values())
            async with trio.open_nursery() as nursery:
                for chunk in todo:
                    nursery.start_soon(self._sync_chunk, chunk)
            for chunk in todo:
                st.unsynced.pop(chunk.index, None)
        if st.size_dirty or extents:
            committed = st.size
            attr = await self.meta.commit_write(st.ino, committed, st.mtime_ns or time.time_ns())
            # Writes may have arrived while we waited; only what we committed is clean.
            if st.size == committed:
                st.size_dirty = False
                if not st.dirty:
                    st.size = attr.size

    async def _write_piece(self, st: FileState, index: int, in_chunk: int, data: bytes) -> None:
        chunk = st.chunks[index]
        async with self._io_limit:
            await self.chunks.write(chunk, in_chunk, data, sync=False)
        st.unsynced[index] = chunk

    async def _sync_chunk(self, chunk: ChunkRef) -> None:
        async with self._io_limit:
            await self.chunks.sync(chunk)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        st = self._handle(fh).state
        if st.dirty or st.lock.locked():
            async with st.lock:
                await self._flush_locked(st, sync=False)
        file_size = st.size
        if offset >= file_size or size <= 0:
            return b""
        end = min(offset + size, file_size)
        first, last = offset // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
        missing = [i for i in range(first, last + 1) if i not in st.chunks]
        if missing:
            for chunk in await self.meta.file_chunks(
                st.ino, missing[0], missing[-1] - missing[0] + 1
            ):
                st.chunks.setdefault(chunk.index, chunk)
        out = bytearray(end - offset)

        async def read_range(index: int, lo: int, hi: int) -> None:
            chunk = st.chunks.get(index)
            if chunk is None:
                return  # a hole: zeros
            in_chunk = lo - index * CHUNK_SIZE
            async with self._io_limit:
                try:
                    data = await self.chunks.read(chunk, in_chunk, hi - lo)
                except IOFailure:
                    # Locations may be stale (a server died or was replaced): ask again once.
                    fresh = await self.meta.file_chunks(st.ino, index, 1)
                    if not fresh:
                        return
                    st.chunks[index] = fresh[0]
                    data = await self.chunks.read(fresh[0], in_chunk, hi - lo)
            out[lo - offset : lo - offset + len(data)] = data

        async with trio.open_nursery() as nursery:
            pos = offset
            while pos < end:
                index = pos // CHUNK_SIZE
                hi = min(end, (index + 1) * CHUNK_SIZE, pos + WRITE_PIECE)
                nursery.start_soon(read_range, index, pos, hi)
                pos = hi
        return bytes(out)

    # ------------------------------------------------------------------ directories
    async def opendir(self, ino: InodeId) -> int:
        attr = await self.meta.getattr(ino)
        if not stat.S_ISDIR(attr.mode):
            raise NotADirectory()
        listing = await self.meta.readdir(ino)
        entries = [(b".", attr), (b"..", attr), *listing]
        fh = self._new_fh()
        self._dirs[fh] = DirHandle(
            fh=fh, ino=ino, entries=[(n, self._overlay(a)) for n, a in entries]
        )
        return fh

    def dir_entries(self, fh: int, offset: int) -> Iterable[tuple[int, bytes, InodeAttr]]:
        """Entries from cookie ``offset`` on, as (next cookie, name, attr)."""
        try:
            handle = self._dirs[fh]
        except KeyError:
            raise InvalidArgument(f"unknown directory handle {fh}") from None
        for i in range(offset, len(handle.entries)):
            name, attr = handle.entries[i]
            yield i + 1, name, attr

    def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    async def sync_all(self) -> None:
        """Flush every file with buffered data (called at unmount)."""
        for st in list(self._files.values()):
            if st.dirty or st.size_dirty or st.unsynced:
                try:
                    async with st.lock:
                        await self._flush_locked(st, sync=True)
                except (IOFailure, NotFound) as exc:
                    log.error("could not flush inode %d at unmount: %s", st.ino, exc)

    def statistics(self) -> dict[str, int]:
        return {
            "open_files": len(self._files),
            "open_handles": len(self._handles),
            "open_dirs": len(self._dirs),
            "dirty_bytes": sum(st.dirty.nbytes for st in self._files.values()),
        }
