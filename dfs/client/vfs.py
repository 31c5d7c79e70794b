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

import dataclasses
import logging
import os
import stat
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
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
    BadRequest,
    ChunkNotFound,
    DataLost,
    DfsError,
    Exists,
    FileTooLarge,
    InvalidArgument,
    IOFailure,
    IsADirectory,
    NameTooLong,
    NoAttribute,
    NotADirectory,
    NotFound,
    NotSupported,
    StaleHandle,
    one_dfs_error,
)
from dfs.types import CHUNK_SIZE, InodeId

log = logging.getLogger(__name__)

#: Largest piece sent to a chunkserver in one RPC; pieces of one flush go out in parallel.
WRITE_PIECE = 1024 * 1024
#: Tries of one replicated chunk update (each failure moves to a new lease without the
#: failed replica).
WRITE_ATTEMPTS = 4
#: Parallel chunk RPCs per flush or read.
PARALLEL_IO = 8
#: Small dirty extents of one chunk travel together in one ``chunk.write_extents`` call of at
#: most this many bytes and extents (random 4 KiB writes would otherwise cost one replicated
#: RPC each).
BATCH_BYTES = 1024 * 1024
BATCH_EXTENTS = 4096
MAX_NAME = 255
#: Files may not grow beyond 2**63 - 1 like on Linux; we cap lower to keep chunk indexes sane.
MAX_FILE_SIZE = 1 << 50

XATTR_CAPABILITY = b"security.capability"
#: The virtual xattr of the replication goal (like CephFS's ``ceph.dir.layout``): read and
#: written as ASCII digits, answered from the inode's ``goal``, never stored, never listed.
XATTR_GOAL = b"user.dfs.goal"
#: Extended attribute namespaces Linux file systems store (``system.`` only for ACLs);
#: any other name is EOPNOTSUPP, as on ext4.
XATTR_PREFIXES = (b"user.", b"trusted.", b"security.")
XATTR_SYSTEM_NAMES = frozenset({b"system.posix_acl_access", b"system.posix_acl_default"})


def check_xattr_name(name: bytes) -> None:
    if not (name.startswith(XATTR_PREFIXES) or name in XATTR_SYSTEM_NAMES):
        raise NotSupported(f"extended attribute namespace of {name!r} is not supported")


#: Replication goals a client may ask for (the metaserver also caps them at the number of
#: chunkservers).
MIN_GOAL = 1
MAX_GOAL = 16
#: Seconds an interrupted lock waiter may take to withdraw its request from the leader.
LOCK_CANCEL_TIMEOUT = 10.0
#: fcntl's unlock type (as FUSE passes it).
F_UNLCK = 2
#: Closed, never-fsynced files whose chunks this client remembers for a later fsync.
MAX_UNSYNCED_CLOSED = 4096
#: Seconds a closed file's hold waits before its release is sent: releases go in batches,
#: and a file opened again within it costs no metadata commit.
RELEASE_DELAY = 0.05
#: A read no replica answered, or a write lease no replica could take, is tried again at
#: once, then after waits doubling from the first to the longest (seconds), until
#: ``io_retry`` has passed since the first failure.
RETRY_FIRST = 0.1
RETRY_MAX = 2.0
#: relatime: a read also updates an access time older than this.
RELATIME_AGE_NS = 24 * 3600 * 10**9
#: Whose credentials an access-time update carries (the kernel checked the read).
ROOT_CRED = Cred(uid=0, gid=0)
#: Most inodes released by one ``fs.release``.
RELEASE_BATCH = 4096


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
    #: Write leases held, by chunk index: the chunk and the trio time to renew it.
    leases: dict[int, tuple[ChunkRef, float]] = field(default_factory=dict)
    #: A size change not yet committed to the metaserver.
    size_dirty: bool = False
    #: Data reached the chunkservers (by a background flush) but its mtime is not committed.
    written: bool = False
    #: Set when the background flush in progress ends (``None``: none in progress).
    behind: trio.Event | None = None
    #: The last background flush failed: the next full buffer is flushed by the writer, so
    #: the error reaches it (and memory stays bounded) instead of only the log.
    behind_failed: bool = False
    lock: trio.Lock = field(default_factory=trio.Lock)
    #: ``security.capability`` known absent (the kernel asks for it before every write).
    no_capability: bool = False
    #: relatime: the next read updates the access time (it is not after the last change, or
    #: a day old).
    atime_due: bool = False


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


def parse_goal(value: bytes) -> int:
    """A goal written to ``user.dfs.goal``: ASCII digits only (``InvalidArgument`` else)."""
    if not 1 <= len(value) <= 3 or not all(0x30 <= b <= 0x39 for b in value):
        raise InvalidArgument(f"a goal is a number from {MIN_GOAL} to {MAX_GOAL}, not {value!r}")
    return int(value)


def check_name(name: bytes) -> None:
    if len(name) > MAX_NAME:
        raise NameTooLong(f"name longer than {MAX_NAME} bytes")
    if not name or b"/" in name or b"\0" in name:
        raise InvalidArgument("invalid file name")


@asynccontextmanager
async def _parallel() -> AsyncIterator[trio.Nursery]:
    """A nursery for parallel chunk calls that fails with the first ``DfsError`` when only dfs
    errors went wrong: callers, retries and the FUSE boundary handle ``DfsError``, not groups."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        first = one_dfs_error(group)
        if first is group:
            raise
        raise first from None


def _unclean(st: FileState) -> bool:
    """Whether ``st`` holds writes whose data or size/mtime the metaserver has not committed."""
    return bool(st.dirty) or st.size_dirty or st.written or st.behind is not None


class _Patience:
    """The waits between tries of something the cluster cannot serve right now (every
    replica restarting or cut off, a chunk's version being settled after a leader change):
    again at once, then after waits doubling from RETRY_FIRST to RETRY_MAX, until ``limit``
    seconds have passed since the first failure (no clock is read before one)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.deadline: float | None = None
        self.delay = 0.0

    def next_wait(self) -> float | None:
        """Seconds to wait before the next try; None when it is time to give up."""
        now = trio.current_time()
        if self.deadline is None:
            self.deadline = now + self.limit
        if now + self.delay > self.deadline:
            return None
        wait = self.delay
        self.delay = min(max(self.delay * 2, RETRY_FIRST), RETRY_MAX)
        return wait


@contextmanager
def _named(ino: InodeId) -> Iterator[None]:
    """An operation on an inode the kernel found by name: if the inode is gone, the name the
    kernel cached now points at a file another client removed or renamed over, and the answer
    is ESTALE, not ENOENT.  The kernel then walks the path again (``retry_estale``, as for
    NFS), so ``stat`` of a name that always exists (``rename`` over it is atomic) never fails
    with ENOENT on another client."""
    try:
        yield
    except NotFound:
        raise StaleHandle(f"inode {ino} no longer exists") from None


class Vfs:
    """File-system operations on top of the metadata and chunk services."""

    def __init__(
        self,
        meta: MetaClient,
        chunks: ChunkClient,
        *,
        write_buffer: int,
        nursery: trio.Nursery | None = None,
        io_retry: float = 60.0,
    ) -> None:
        """``nursery`` runs background flushes (write-behind): a full write buffer is sent
        while the writer goes on filling the next one.  Without it a full buffer is flushed
        before the write that filled it returns.  ``io_retry``: seconds a read waits for a
        replica of a chunk to answer, and a write for a replica that can take it, before it
        fails (the client's ``op_timeout``)."""
        self.meta = meta
        self.chunks = chunks
        self.write_buffer = write_buffer
        self.io_retry = io_retry
        self._files: dict[InodeId, FileState] = {}
        #: Chunks written through files that are now closed but were never fsynced: a later
        #: fsync on a new descriptor of the same file must still reach the disks (Linux
        #: fsync covers every write to the inode, whichever descriptor made it).
        self._unsynced_closed: OrderedDict[InodeId, dict[int, ChunkRef]] = OrderedDict()
        #: (inode, kernel lock owner) that took fcntl / flock locks through this client:
        #: a close by that owner releases them (one RPC only where there may be something).
        self._posix_owners: set[tuple[InodeId, int]] = set()
        self._flock_owners: set[tuple[InodeId, int]] = set()
        #: File handle -> (inode, owner) that took fcntl locks through it.
        self._fh_owners: dict[int, set[tuple[InodeId, int]]] = {}
        self._handles: dict[int, FileHandle] = {}
        self._dirs: dict[int, DirHandle] = {}
        self._next_fh = 1
        self._io_limit = trio.CapacityLimiter(PARALLEL_IO)
        self._nursery = nursery
        #: Regular files this client holds open at the metaserver (``meta.open``, or a create
        #: with ``hold``): such a file outlives its last name, whoever removes it, until this
        #: client releases it.  ``_release_pending``: held files whose last descriptor here
        #: closed, released in the next batch; ``_releasing``: releases in flight (an open of
        #: one waits, so that its new hold follows the release in the log).
        #: Access times set by reads, shown until the metaserver has them.
        self._atime_pending: dict[InodeId, int] = {}
        self._held: set[InodeId] = set()
        self._release_pending: set[InodeId] = set()
        self._releasing: dict[InodeId, trio.Event] = {}
        self._release_wake = trio.Event()
        self._releaser_started = False
        # Holds end with the session: a replacement session re-holds the open files.
        if hasattr(meta, "on_new_session"):
            meta.on_new_session = self._rehold

    # ------------------------------------------------------------------ attributes
    def _overlay(self, attr: InodeAttr) -> InodeAttr:
        """Show this client's unflushed size and mtime in attributes it returns."""
        pending = self._atime_pending.get(attr.ino)
        if pending is not None:
            attr.atime_ns = max(attr.atime_ns, pending)
        st = self._files.get(attr.ino)
        if st is not None and _unclean(st):
            attr.size = st.size
            attr.mtime_ns = max(attr.mtime_ns, st.mtime_ns)
        return attr

    async def lookup(self, parent: InodeId, name: bytes) -> InodeAttr:
        check_name(name)
        return self._overlay(await self.meta.lookup(parent, name))

    async def getattr(self, ino: InodeId) -> InodeAttr:
        try:
            return self._overlay(await self.meta.getattr(ino))
        except NotFound:
            # A directory removed while open here: fstat on it still works (nlink 0).
            for handle in self._dirs.values():
                if handle.ino == ino:
                    return dataclasses.replace(handle.entries[0][1], nlink=0)
            raise StaleHandle(f"inode {ino} no longer exists") from None

    async def setattr(self, ino: InodeId, changes: SetAttr, cred: Cred) -> InodeAttr:
        with _named(ino):
            return await self._setattr(ino, changes, cred)

    async def _setattr(self, ino: InodeId, changes: SetAttr, cred: Cred) -> InodeAttr:
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
                    st.chunks.clear()
                    st.leases.clear()
                    await self._trim(ino, trims)
                    st.size = attr.size
                    st.chunks.clear()
                    st.unsynced.clear()
                    return attr
            attr, trims = await self.meta.setattr(ino, changes, cred)
            await self._trim(ino, trims)
            return attr
        if st is not None and _unclean(st) and (changes.mtime_ns is not None or changes.mtime_now):
            # An explicit mtime (utimensat, e.g. from tar or cp -p) must not be overwritten by
            # the commit of writes made before it: land those first.
            async with st.lock:
                await self._flush_locked(st, sync=False)
        attr, _ = await self.meta.setattr(ino, changes, cred)
        return self._overlay(attr)

    async def _trim(self, ino: InodeId, trims: list[ChunkRef]) -> None:
        """Cut the last chunk after a shrinking truncate, under a write lease like any write."""
        for trim in trims:
            if trim.trim_length < 0 or not trim.servers:
                continue
            length = trim.trim_length
            chunk = await self._alloc(ino, trim.index)

            async def cut(ref: ChunkRef, length: int = length) -> None:
                await self.chunks.truncate(ref, length)

            await self._on_replicas(ino, chunk, cut)

    async def _alloc(
        self,
        ino: InodeId,
        index: int,
        *,
        failed: str | None = None,
        version: int | None = None,
        code: str | None = None,
        st: FileState | None = None,
    ) -> ChunkRef:
        """``meta.alloc_chunk``: the chunk under a write lease.  When no replica can take the
        write right now (all restarting or cut off; their version still being settled after
        a leader change), ask again as a read waits for a replica: for up to ``io_retry``,
        then the error (EIO).  A full disk (NoSpace) is an answer, not waited out.  The
        failed replica is reported with the first request only: the leader acted on it then,
        and the replica may be back by the next one.

        With ``st``, the chunk holding the file's unsynced data at ``index`` is named: if
        the leader dropped it as lost (held by no server, never committed), DataLost, once
        (the loss is forgotten then, as a write-back error is reported to one fsync)."""
        pending = st.unsynced.get(index) if st is not None else None
        patience = _Patience(self.io_retry)
        while True:
            try:
                return await self.meta.alloc_chunk(
                    ino,
                    index,
                    failed=failed,
                    version=version,
                    code=code,
                    chunk_id=pending.chunk_id if pending is not None else None,
                )
            except DataLost:
                if st is not None:
                    st.unsynced.pop(index, None)
                    st.chunks.pop(index, None)
                    st.leases.pop(index, None)
                raise
            except IOFailure as exc:
                wait = patience.next_wait()
                if wait is None:
                    raise
                failed = version = code = None
                log.info(
                    "write lease of chunk %d of inode %d: %s; asking again in %.1f s",
                    index,
                    ino,
                    exc,
                    wait,
                )
            await trio.sleep(wait)

    async def _on_replicas(
        self,
        ino: InodeId,
        chunk: ChunkRef,
        action: Callable[[ChunkRef], Awaitable[None]],
        st: FileState | None = None,
    ) -> ChunkRef:
        """Run a replicated chunk update; when a replica fails, tell the metaserver (which
        drops it and moves the others to a new version) and run it again on the new replica
        set.  Returns the chunk as last used."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                await action(chunk)
                return chunk
            except (BadRequest, InvalidArgument):
                raise
            except DfsError as exc:
                if attempt + 1 == WRITE_ATTEMPTS:
                    raise
                failed = exc.details.get("failed")
                log.warning(
                    "update of chunk %x (version %d) failed on %s: %s; asking for a new lease",
                    chunk.chunk_id,
                    chunk.version,
                    failed or "?",
                    exc.code,
                )
                chunk = await self._alloc(
                    ino,
                    chunk.index,
                    failed=failed if isinstance(failed, str) else None,
                    version=chunk.version,
                    code=exc.code,
                    st=st,
                )
                if st is not None:
                    self._remember_lease(st, chunk)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ namespace
    async def mknod(
        self, parent: InodeId, name: bytes, mode: int, rdev: int, cred: Cred, umask: int = 0
    ) -> InodeAttr:
        check_name(name)
        return await self.meta.mknod(parent, name, mode, rdev, cred, umask=umask)

    async def mkdir(
        self, parent: InodeId, name: bytes, mode: int, cred: Cred, umask: int = 0
    ) -> InodeAttr:
        check_name(name)
        mode = stat.S_IFDIR | (mode & 0o7777)
        return await self.meta.mkdir(parent, name, mode, cred, umask=umask)

    async def symlink(self, parent: InodeId, name: bytes, target: bytes, cred: Cred) -> InodeAttr:
        check_name(name)
        if len(target) > 4095:
            raise NameTooLong("symlink target longer than 4095 bytes")
        return await self.meta.symlink(parent, name, target, cred)

    async def link(self, ino: InodeId, parent: InodeId, name: bytes) -> InodeAttr:
        check_name(name)
        with _named(ino):
            return self._overlay(await self.meta.link(ino, parent, name))

    async def unlink(self, parent: InodeId, name: bytes) -> None:
        check_name(name)
        self._forget_unsynced(await self.meta.unlink(parent, name))

    async def rmdir(self, parent: InodeId, name: bytes) -> None:
        check_name(name)
        await self.meta.rmdir(parent, name)

    async def rename(
        self, parent: InodeId, name: bytes, newparent: InodeId, newname: bytes, flags: int
    ) -> None:
        check_name(name)
        check_name(newname)
        self._forget_unsynced(await self.meta.rename(parent, name, newparent, newname, flags))

    def _forget_unsynced(self, gone: InodeId | None) -> None:
        """A closed file that lost its last name can never be fsynced again (no descriptor
        is open on this client, and no path reaches it): its unsynced chunks need no sync."""
        if gone is not None:
            self._unsynced_closed.pop(gone, None)

    async def readlink(self, ino: InodeId) -> bytes:
        with _named(ino):
            return await self.meta.readlink(ino)

    async def statfs(self) -> StatFs:
        return await self.meta.statfs()

    # ------------------------------------------------------------------ xattrs
    async def setxattr(
        self, ino: InodeId, name: bytes, value: bytes, flags: int, cred: Cred
    ) -> None:
        """Store an xattr; ``user.dfs.goal`` sets the replication goal instead (flags are
        ignored for it: the virtual attribute always exists)."""
        check_xattr_name(name)
        if name == XATTR_GOAL:
            await self.setgoal(ino, parse_goal(value), cred)
            return
        with _named(ino):
            await self.meta.setxattr(ino, name, value, flags, cred)
        st = self._files.get(ino)
        if st is not None and name == XATTR_CAPABILITY:
            st.no_capability = False

    async def getxattr(self, ino: InodeId, name: bytes) -> bytes:
        check_xattr_name(name)
        if name == XATTR_GOAL:
            attr = await self.getattr(ino)
            if not (stat.S_ISREG(attr.mode) or stat.S_ISDIR(attr.mode)):
                raise NoAttribute("only regular files and directories have a goal")
            return str(attr.goal).encode("ascii")
        st = self._files.get(ino)
        if name == XATTR_CAPABILITY and st is not None and st.no_capability:
            raise NoAttribute()
        try:
            with _named(ino):
                return await self.meta.getxattr(ino, name)
        except NoAttribute:
            if name == XATTR_CAPABILITY and st is not None:
                st.no_capability = True
            raise

    async def listxattr(self, ino: InodeId, *, privileged: bool = True) -> list[bytes]:
        """Stored names; ``trusted.*`` only for a ``privileged`` caller (as Linux lists them
        to CAP_SYS_ADMIN only)."""
        # The goal is not listed: copying tools (cp -a, rsync -X) would otherwise carry it
        # to other file systems, and a listing should show stored attributes only.
        with _named(ino):
            names = await self.meta.listxattr(ino)
        return [
            n for n in names if n != XATTR_GOAL and (privileged or not n.startswith(b"trusted."))
        ]

    async def removexattr(self, ino: InodeId, name: bytes, cred: Cred | None = None) -> None:
        check_xattr_name(name)
        if name == XATTR_GOAL:
            raise InvalidArgument("the replication goal can be changed but not removed")
        with _named(ino):
            await self.meta.removexattr(ino, name, cred)

    # ------------------------------------------------------------------ replication goal
    async def setgoal(self, ino: InodeId, goal: int, cred: Cred) -> InodeAttr:
        """Set the replication goal of a regular file or directory (owner or root).  New
        files and directories created in a directory inherit its goal; chunks that already
        exist keep their replicas, chunks allocated from now on get ``goal`` of them."""
        if not MIN_GOAL <= goal <= MAX_GOAL:
            raise InvalidArgument(f"goal {goal} is not between {MIN_GOAL} and {MAX_GOAL}")
        with _named(ino):
            return self._overlay(await self.meta.setgoal(ino, goal, cred))

    async def getgoal(self, ino: InodeId) -> int:
        return (await self.getattr(ino)).goal

    # ------------------------------------------------------------------ files
    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _attach(self, attr: InodeAttr, flags: int) -> FileHandle:
        st = self._files.get(attr.ino)
        if st is None:
            st = FileState(ino=attr.ino, size=attr.size)
            st.unsynced = self._unsynced_closed.pop(attr.ino, {})
            self._files[attr.ino] = st
        elif not _unclean(st):
            st.size = attr.size
        # Close-to-open: a new open re-reads the chunk map, another client may have written.
        if not st.dirty:
            st.chunks.clear()
        st.atime_due = (
            attr.atime_ns <= max(attr.mtime_ns, attr.ctime_ns)
            or time.time_ns() - attr.atime_ns >= RELATIME_AGE_NS
        )
        st.open_count += 1
        handle = FileHandle(fh=self._new_fh(), state=st, flags=flags)
        self._handles[handle.fh] = handle
        return handle

    async def open(self, ino: InodeId, flags: int) -> tuple[int, InodeAttr]:
        with _named(ino):
            attr = await self._hold(ino)
        if stat.S_ISDIR(attr.mode):
            raise IsADirectory()
        return self._attach(attr, flags).fh, attr

    # ------------------------------------------------------------------ holds
    async def _rehold(self) -> None:
        """The session ended (this client was silent too long) and a new one opened: hold
        the files still open here again before anything else happens in it.  A file that
        lost its last name meanwhile and was freed is gone (its descriptors get ESTALE)."""
        self._held.clear()
        self._release_pending.clear()
        for ino, st in list(self._files.items()):
            if st.open_count <= 0:
                continue
            try:
                await self.meta.open(ino)
            except DfsError as exc:
                log.warning("open file %d could not be held again: %s", ino, exc)
                continue
            self._held.add(ino)
        log.info("holding %d open files in the new session", len(self._held))

    async def _access(self, st: FileState) -> None:
        """A read: update the access time as Linux's relatime does (in the background: the
        read does not wait for the commit; the new time is shown here meanwhile)."""
        st.atime_due = False
        ino, now = st.ino, time.time_ns()
        self._atime_pending[ino] = now
        change = SetAttr(atime_now=True, atime_access=True)

        async def touch() -> None:
            try:
                await self.meta.setattr(ino, change, ROOT_CRED)
            except DfsError as exc:
                log.debug("could not update the access time of %d: %s", ino, exc)
            finally:
                if self._atime_pending.get(ino) == now:
                    del self._atime_pending[ino]

        if self._nursery is None:
            await touch()
        else:
            self._nursery.start_soon(touch)

    async def _hold(self, ino: InodeId) -> InodeAttr:
        """Fresh attributes of ``ino``, held open by this client (one commit for the first
        descriptor of a file here; later ones only read its attributes)."""
        releasing = self._releasing.get(ino)
        if releasing is not None:
            await releasing.wait()
        if ino in self._held:
            self._release_pending.discard(ino)
            return await self.meta.getattr(ino)
        attr = await self.meta.open(ino)
        if stat.S_ISREG(attr.mode):
            self._held.add(ino)
        return attr

    async def _unhold(self, ino: InodeId) -> None:
        """The last descriptor of ``ino`` here closed: release it soon (batched)."""
        if ino not in self._held:
            return
        self._release_pending.add(ino)
        if self._nursery is None:
            await self._send_releases()
            return
        if not self._releaser_started:
            self._releaser_started = True
            self._nursery.start_soon(self._release_loop)
        self._release_wake.set()

    async def _release_loop(self) -> None:
        while True:
            await self._release_wake.wait()
            self._release_wake = trio.Event()
            await trio.sleep(RELEASE_DELAY)
            await self._send_releases()

    async def _send_releases(self) -> None:
        while self._release_pending:
            batch = sorted(self._release_pending)[:RELEASE_BATCH]
            done = trio.Event()
            for ino in batch:
                self._release_pending.discard(ino)
                self._held.discard(ino)
                self._releasing[ino] = done
            try:
                await self.meta.release(batch)
            except DfsError as exc:
                # The holds end with the session at the latest.
                log.info("could not release %d open files: %s", len(batch), exc)
            finally:
                for ino in batch:
                    if self._releasing.get(ino) is done:
                        del self._releasing[ino]
                done.set()

    async def create(
        self, parent: InodeId, name: bytes, mode: int, flags: int, cred: Cred, umask: int = 0
    ) -> tuple[int, InodeAttr]:
        check_name(name)
        try:
            attr = await self.meta.mknod(
                parent, name, stat.S_IFREG | (mode & 0o7777), 0, cred, hold=True, umask=umask
            )
            self._held.add(attr.ino)
        except Exists:
            if flags & 0o200:  # O_EXCL
                raise
            attr = await self.meta.lookup(parent, name)
            if stat.S_ISDIR(attr.mode):
                raise IsADirectory() from None
            with _named(attr.ino):
                attr = await self._hold(attr.ino)
        return self._attach(attr, flags).fh, attr

    def _handle(self, fh: int) -> FileHandle:
        try:
            return self._handles[fh]
        except KeyError:
            raise InvalidArgument(f"unknown file handle {fh}") from None

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handle(fh)
        st = handle.state
        if handle.flags & os.O_APPEND and data:
            offset = await self._append_offset(st, len(data))
        end = offset + len(data)
        if end > MAX_FILE_SIZE:
            raise FileTooLarge("file size limit exceeded")
        st.dirty.add(offset, data)
        st.mtime_ns = time.time_ns()
        if end > st.size:
            st.size = end
            st.size_dirty = True
        if st.dirty.nbytes >= self.write_buffer:
            await self._buffer_full(st)
        return len(data)

    async def _append_offset(self, st: FileState, length: int) -> int:
        """Where an O_APPEND write goes: the metaserver reserves the range at the file's end
        (so appends of several clients never overlap), after this client's own buffered
        writes have landed (they may extend the file)."""
        if _unclean(st):
            async with st.lock:
                await self._flush_locked(st, sync=False)
        return await self.meta.append(st.ino, length)

    async def _buffer_full(self, st: FileState) -> None:
        """Start sending a full write buffer; wait only when a second one is full too."""
        if self._nursery is not None:
            # Bounded memory: at most one buffer in flight and about one more being filled.
            while st.behind is not None and st.dirty.nbytes >= 2 * self.write_buffer:
                await st.behind.wait()
            if not st.behind_failed:
                if st.behind is None and st.dirty.nbytes >= self.write_buffer:
                    st.behind = trio.Event()
                    self._nursery.start_soon(self._flush_behind, st, st.behind)
                return
        st.behind_failed = False
        async with st.lock:
            await self._flush_data_locked(st)

    async def _flush_behind(self, st: FileState, done: trio.Event) -> None:
        try:
            async with st.lock:
                await self._flush_data_locked(st)
        except DfsError as exc:
            # The data went back into the buffer: the next flush (at the latest close or
            # fsync, which report the error if it persists) sends it again.
            log.warning("background flush of inode %d failed: %s", st.ino, exc)
            st.behind_failed = True
        finally:
            st.behind = None
            done.set()

    async def flush(self, fh: int, *, sync: bool, closing: bool = False) -> None:
        """Land buffered data (``sync``: on disk).  ``closing`` (a close(2)): when it is the
        last handle of the file here, the commit also gives up this client's write leases."""
        st = self._handle(fh).state
        async with st.lock:
            await self._flush_locked(st, sync=sync, release=closing and st.open_count == 1)

    async def release(self, fh: int, *, sync: bool) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None:
            return
        st = handle.state
        st.open_count -= 1
        try:
            if _unclean(st) or (sync and st.unsynced):
                async with st.lock:
                    await self._flush_locked(st, sync=sync, release=st.open_count == 0)
            if st.open_count == 0 and st.leases:
                await self._release_leases(st)
        finally:
            if st.open_count == 0 and not _unclean(st) and self._files.get(st.ino) is st:
                del self._files[st.ino]
                if st.unsynced:
                    self._unsynced_closed[st.ino] = st.unsynced
            if st.open_count == 0:
                await self._unhold(st.ino)
        while len(self._unsynced_closed) > MAX_UNSYNCED_CLOSED:
            # Bound the memory: the oldest closed file gets its fdatasync now instead.
            ino, chunks = self._unsynced_closed.popitem(last=False)
            async with _parallel() as nursery:
                for chunk in chunks.values():
                    nursery.start_soon(self._sync_forgotten, ino, chunk)

    async def _sync_forgotten(self, ino: InodeId, chunk: ChunkRef) -> None:
        """fdatasync a chunk of a closed file before forgetting it.  Its failure is not the
        failure of the file being closed: a chunk gone with its file needs nothing, another
        failure is logged (an fsync would have tried again)."""
        try:
            await self._sync_chunk(ino, chunk)
        except DfsError as exc:
            level = (
                logging.DEBUG
                if isinstance(exc, (NotFound, StaleHandle, ChunkNotFound))
                else logging.WARNING
            )
            log.log(
                level,
                "closed file %d: sync of chunk %x before forgetting it: %s",
                ino,
                chunk.chunk_id,
                exc,
            )

    async def _release_leases(self, st: FileState) -> None:
        """Give up this client's write leases on the file (nothing left to commit); a failure
        only means the leases run out by themselves."""
        ids = [int(ref.chunk_id) for ref, _renew in st.leases.values()]
        st.leases.clear()
        try:
            await self.meta.release_leases(st.ino, ids)
        except DfsError as exc:
            log.info("could not release write leases of inode %d: %s", st.ino, exc)

    async def _chunk_for_write(self, st: FileState, index: int) -> ChunkRef:
        """The chunk under a write lease (from the cache until half its lease has passed)."""
        held = st.leases.get(index)
        if held is not None and trio.current_time() < held[1]:
            return held[0]
        chunk = await self._alloc(st.ino, index, st=st)
        self._remember_lease(st, chunk)
        return chunk

    @staticmethod
    def _remember_lease(st: FileState, chunk: ChunkRef) -> None:
        renew = trio.current_time() + chunk.lease / 2 if chunk.lease > 0 else float("inf")
        st.leases[chunk.index] = (chunk, renew)
        st.chunks[chunk.index] = chunk

    async def _flush_data_locked(self, st: FileState) -> None:
        """Send buffered data to the chunkservers (no fdatasync, no commit)."""
        extents = st.dirty.take()
        if not extents:
            return
        try:
            # Per chunk: batches of (offset in chunk, data), at most BATCH_BYTES each.
            batches: list[tuple[int, list[tuple[int, bytes | memoryview]]]] = []
            open_batch: dict[int, tuple[list[tuple[int, bytes | memoryview]], list[int]]] = {}
            for off, extent in extents:
                # Slices of the taken extents, not copies: nothing writes to them any more.
                view = memoryview(extent)
                pos = 0
                while pos < len(view):
                    abs_off = off + pos
                    index, in_chunk = divmod(abs_off, CHUNK_SIZE)
                    n = min(len(view) - pos, CHUNK_SIZE - in_chunk, WRITE_PIECE)
                    current = open_batch.get(index)
                    if (
                        current is None
                        or current[1][0] + n > BATCH_BYTES
                        or len(current[0]) >= BATCH_EXTENTS
                    ):
                        current = ([], [0])
                        open_batch[index] = current
                        batches.append((index, current[0]))
                    current[0].append((in_chunk, view[pos : pos + n]))
                    current[1][0] += n
                    pos += n
            # Resolved once here: an open() meanwhile may clear st.chunks.
            refs = {index: await self._chunk_for_write(st, index) for index in sorted(open_batch)}
            async with _parallel() as nursery:
                for index, batch in batches:
                    nursery.start_soon(self._write_batch, st, refs[index], batch)
        except BaseException:
            st.dirty.restore_under(extents)
            raise
        st.written = True

    async def _flush_locked(self, st: FileState, *, sync: bool, release: bool = False) -> None:
        """Send buffered data to the chunkservers, fdatasync when ``sync``, commit the size."""
        await self._flush_data_locked(st)
        if sync and st.unsynced:
            todo = list(st.unsynced.values())
            async with _parallel() as nursery:
                for chunk in todo:
                    nursery.start_soon(self._sync_chunk, st.ino, chunk, st)
            for chunk in todo:
                st.unsynced.pop(chunk.index, None)
        if st.size_dirty or st.written:
            committed = st.size
            st.written = False
            leased = [int(ref.chunk_id) for ref, _renew in st.leases.values()] if release else []
            try:
                attr = await self.meta.commit_write(
                    st.ino, committed, st.mtime_ns or time.time_ns(), release=leased or None
                )
            except BaseException:
                st.written = True
                raise
            if leased:
                st.leases.clear()
            # Writes may have arrived while we waited; only what we committed is clean.
            if st.size == committed:
                st.size_dirty = False
                if not st.dirty:
                    st.size = attr.size

    async def _write_batch(
        self, st: FileState, chunk: ChunkRef, batch: list[tuple[int, bytes | memoryview]]
    ) -> None:
        async def send(ref: ChunkRef) -> None:
            if len(batch) == 1:
                await self.chunks.write(ref, batch[0][0], batch[0][1], sync=False)
            else:
                await self.chunks.write_extents(ref, batch, sync=False)

        await self._io_slot()
        try:
            chunk = await self._on_replicas(st.ino, chunk, send, st)
        finally:
            self._io_limit.release()
        st.unsynced[chunk.index] = chunk

    async def _io_slot(self) -> None:
        """Take an I/O slot; a free one without ``async with``'s extra scheduler pass."""
        try:
            self._io_limit.acquire_nowait()
        except trio.WouldBlock:
            await self._io_limit.acquire()

    async def _sync_chunk(self, ino: InodeId, chunk: ChunkRef, st: FileState | None = None) -> None:
        async with self._io_limit:
            await self._on_replicas(ino, chunk, self.chunks.sync, st)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        st = self._handle(fh).state
        if st.dirty or st.lock.locked():
            async with st.lock:
                await self._flush_locked(st, sync=False)
        if st.atime_due:
            await self._access(st)
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
        spans: list[tuple[int, int, int]] = []  # (chunk index, lo, hi) in file offsets
        pos = offset
        while pos < end:
            index = pos // CHUNK_SIZE
            hi = min(end, (index + 1) * CHUNK_SIZE, pos + WRITE_PIECE)
            spans.append((index, pos, hi))
            pos = hi
        if len(spans) == 1:
            # One piece (every small read): no child task, no reassembly copy.
            data = await self._read_span(st, *spans[0])
            if len(data) == end - offset:
                return data
            return data + bytes(end - offset - len(data))  # a hole or the chunk's stored end
        out = bytearray(end - offset)

        async def read_into(index: int, lo: int, hi: int) -> None:
            data = await self._read_span(st, index, lo, hi)
            out[lo - offset : lo - offset + len(data)] = data

        async with _parallel() as nursery:
            for span in spans:
                nursery.start_soon(read_into, *span)
        return bytes(out)

    async def _read_span(self, st: FileState, index: int, lo: int, hi: int) -> bytes:
        """Bytes [lo, hi) of the file within chunk ``index``; shorter at a hole or the stored
        end (the caller zero-fills)."""
        chunk = st.chunks.get(index)
        if chunk is None:
            return b""  # a hole: zeros
        in_chunk = lo - index * CHUNK_SIZE
        patience = _Patience(self.io_retry)
        while True:
            await self._io_slot()
            try:
                return await self.chunks.read(chunk, in_chunk, hi - lo)
            except IOFailure as exc:
                # No replica answered.  The locations may be stale (a server died or was
                # replaced: ask again at once); or every replica is away for now (restarting,
                # cut off, its only current copy being re-replicated): wait for one, as long
                # as an operation may wait for the cluster, before the read fails with EIO.
                wait = patience.next_wait()
                if wait is None:
                    raise
                log.info(
                    "read of chunk %x: %s; asking for its locations again in %.1f s",
                    chunk.chunk_id,
                    exc,
                    wait,
                )
            finally:
                self._io_limit.release()
            await trio.sleep(wait)
            fresh = await self.meta.file_chunks(st.ino, index, 1)
            if not fresh:
                return b""
            chunk = st.chunks[index] = fresh[0]

    # ------------------------------------------------------------------ locks
    async def getlk(
        self, ino: InodeId, owner: int, kind: str, type_: int, start: int, end: int
    ) -> dict[str, int] | None:
        """The first lock of another owner conflicting with this one (F_GETLK), or None."""
        return await self.meta.lock_get(ino, owner, kind, type_, start, end)

    async def setlk(
        self,
        fh: int,
        ino: InodeId,
        owner: int,
        kind: str,
        type_: int,
        start: int,
        end: int,
        pid: int,
        *,
        wait: bool,
    ) -> None:
        """Take, change or drop a lock held in the metadata group (``kind``: "posix" for
        fcntl, "flock").  Dropping one first lands this file's buffered writes, taking one
        then drops cached locations and size (NFS-style: programs coordinating by locks see
        each other's writes).  A waiting request that is cancelled (the process was
        interrupted) is withdrawn from the leader's queue; if it had been granted already,
        this returns normally instead (the lock is then really held)."""
        owners = self._posix_owners if kind == "posix" else self._flock_owners
        if type_ == F_UNLCK:
            await self._land(ino)
            await self.meta.lock_set(ino, owner, kind, type_, start, end, pid, wait=False)
            if kind == "flock":
                owners.discard((ino, owner))
            return
        try:
            await self.meta.lock_set(ino, owner, kind, type_, start, end, pid, wait=wait)
        except trio.Cancelled:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + LOCK_CANCEL_TIMEOUT
                granted = await self.meta.lock_cancel(ino, owner, kind)
            if not granted:
                raise
            log.info("lock on inode %d granted as its waiter was interrupted; keeping it", ino)
            owners.add((ino, owner))
            self._note_lock(fh, ino, owner, kind)
            with trio.CancelScope(shield=True):
                await self._revalidate(ino)
            return
        owners.add((ino, owner))
        self._note_lock(fh, ino, owner, kind)
        await self._revalidate(ino)

    def _note_lock(self, fh: int, ino: InodeId, owner: int, kind: str) -> None:
        if kind == "posix":
            self._fh_owners.setdefault(fh, set()).add((ino, owner))

    async def release_handle_locks(self, fh: int) -> None:
        """The open file description is gone (RELEASE): the fcntl locks its owners took
        through it go too.  The kernel does not always send FLUSH when a killed process's
        files are closed, so this is what frees a dead process's locks."""
        for ino, owner in sorted(self._fh_owners.pop(fh, ())):
            await self.release_locks(ino, owner, "posix")

    async def release_locks(self, ino: InodeId, owner: int, kind: str) -> None:
        """A close by ``owner``: drop its fcntl locks (any close of the file by the process)
        or its flock (the last close of the open file description) on the inode."""
        owners = self._posix_owners if kind == "posix" else self._flock_owners
        if (ino, owner) not in owners:
            return
        await self._land(ino)
        try:
            # Shielded: the kernel interrupts the FLUSH of a process being killed, and its
            # locks must go all the same.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + LOCK_CANCEL_TIMEOUT
                await self.meta.lock_release(ino, owner, kind)
            if scope.cancelled_caught:
                raise IOFailure(f"releasing the locks of inode {ino} timed out")
        except DfsError as exc:
            # Kept in the set: the next close (or the release of the handle) tries again;
            # if the client dies, the session's expiry frees the locks.
            log.warning("could not release the %s locks of inode %d: %s", kind, ino, exc)
            raise
        owners.discard((ino, owner))

    async def _land(self, ino: InodeId) -> None:
        """Send the file's buffered writes and commit them (before a lock is given up)."""
        st = self._files.get(ino)
        if st is not None and _unclean(st):
            async with st.lock:
                await self._flush_locked(st, sync=False)

    async def forget_cached(self, ino: InodeId) -> None:
        """Another client changed the file: drop its cached chunk map and size."""
        try:
            await self._revalidate(ino)
        except DfsError as exc:
            log.debug("could not revalidate inode %d: %s", ino, exc)

    async def _revalidate(self, ino: InodeId) -> None:
        """Forget what this client cached about the file's data (the caller also drops the
        kernel's pages)."""
        st = self._files.get(ino)
        if st is None:
            return
        st.chunks.clear()
        attr = await self.meta.getattr(ino)
        if not _unclean(st):
            st.size = attr.size

    # ------------------------------------------------------------------ directories
    async def opendir(self, ino: InodeId) -> int:
        with _named(ino):
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
            if _unclean(st) or st.unsynced:
                try:
                    async with st.lock:
                        await self._flush_locked(st, sync=True)
                except (IOFailure, NotFound) as exc:
                    log.error("could not flush inode %d at unmount: %s", st.ino, exc)
        await self._send_releases()

    def statistics(self) -> dict[str, int]:
        return {
            "open_files": len(self._files),
            "open_handles": len(self._handles),
            "open_dirs": len(self._dirs),
            "dirty_bytes": sum(st.dirty.nbytes for st in self._files.values()),
        }

    # ---- fallocate / lseek
    #: fallocate(2) modes (``linux/falloc.h``) dfs supports; FUSE passes others (ZERO_RANGE,
    #: COLLAPSE_RANGE, INSERT_RANGE, ...) only to be refused.
    FALLOC_FL_KEEP_SIZE = 0x01
    FALLOC_FL_PUNCH_HOLE = 0x02
    #: lseek(2) whences that reach a FUSE file system (the kernel does SET/CUR/END itself).
    SEEK_DATA = 3
    SEEK_HOLE = 4

    async def fallocate(self, fh: int, offset: int, length: int, mode: int) -> None:
        """fallocate(2) on an open file.

        * mode 0: the size grows to ``offset + length`` when that is larger, committed at once
          like a write's (space is not reserved: chunks are allocated when written, the new
          range reads as zeros);
        * ``FALLOC_FL_KEEP_SIZE``: nothing to do (no reservation);
        * ``FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE``: the range reads as zeros, the size
          stays (see ``_punch_locked``);
        * anything else: ``NotSupported`` (EOPNOTSUPP).
        """
        st = self._handle(fh).state
        if offset < 0 or length <= 0:
            raise InvalidArgument(f"fallocate range offset={offset} length={length}")
        keep, punch = self.FALLOC_FL_KEEP_SIZE, self.FALLOC_FL_PUNCH_HOLE
        if mode & ~(keep | punch) or mode == punch:
            raise NotSupported(f"fallocate mode {mode:#x} is not supported")
        end = offset + length
        if mode & punch:
            async with st.lock:
                await self._punch_locked(st, offset, end)
            return
        if mode & keep or end <= st.size:
            return
        if end > MAX_FILE_SIZE:
            raise FileTooLarge("file size limit exceeded")
        async with st.lock:
            if end > st.size:
                st.size = end
                st.size_dirty = True
                st.mtime_ns = time.time_ns()
            await self._flush_locked(st, sync=False)

    async def _punch_locked(self, st: FileState, offset: int, end: int) -> None:
        """Make ``[offset, end)`` read as zeros without changing the size.

        Buffered bytes inside the range are dropped and the rest is landed first (so the
        chunk map and the committed size are what the hole is cut from).  Chunks the hole
        covers whole (up to the end of the file) leave the file by one namespace command
        (``punch_hole``; the metaserver frees them like a truncate's); in a chunk covered in
        part, a range reaching the chunk's end or the file's end is cut off by truncating the
        chunk on its replicas, any other range is overwritten with zeros through the write
        path.  Both run under write leases like any write.  The kernel drops its own pages of
        the range before it asks."""
        for off, data in st.dirty.take():
            if off < offset:
                st.dirty.add(off, bytes(data[: offset - off]))
            if off + len(data) > end:
                keep_from = max(end - off, 0)
                st.dirty.add(off + keep_from, bytes(data[keep_from:]))
        await self._flush_locked(st, sync=False)
        size = st.size
        end = min(end, size)
        if offset >= end:
            return  # wholly beyond the end of the file: nothing reads differently
        first = -(-offset // CHUNK_SIZE)  # first chunk starting inside the hole
        # One past the last chunk whose part inside the file the hole covers whole.
        stop = -(-end // CHUNK_SIZE) if end == size else end // CHUNK_SIZE
        whole = range(first, max(first, stop))
        # The partly covered pieces, each within one chunk.
        pieces: list[tuple[int, int, int]] = []
        pos = offset
        while pos < end:
            index = pos // CHUNK_SIZE
            hi = min(end, (index + 1) * CHUNK_SIZE)
            if index not in whole:
                pieces.append((index, pos, hi))
            pos = hi
        zeros = memoryview(bytes(min(WRITE_PIECE, CHUNK_SIZE)))
        for index, lo, hi in pieces:
            if not await self.meta.file_chunks(st.ino, index, 1):
                continue  # already a hole
            chunk = await self._chunk_for_write(st, index)
            base = index * CHUNK_SIZE
            if hi == base + CHUNK_SIZE or hi >= size:

                async def cut(ref: ChunkRef, length: int = lo - base) -> None:
                    await self.chunks.truncate(ref, length)

                await self._on_replicas(st.ino, chunk, cut, st)
                continue
            async with _parallel() as nursery:
                at = lo
                while at < hi:
                    n = min(hi - at, WRITE_PIECE)
                    piece: list[tuple[int, bytes | memoryview]] = [(at - base, zeros[:n])]
                    nursery.start_soon(self._write_batch, st, chunk, piece)
                    at += n
        await self.meta.punch_hole(st.ino, first, len(whole))
        for index in whole:
            st.chunks.pop(index, None)
            st.leases.pop(index, None)
            st.unsynced.pop(index, None)

    async def lseek(self, fh: int, offset: int, whence: int) -> int | None:
        """SEEK_DATA / SEEK_HOLE: the first data (resp. hole) offset at or after ``offset``;
        ``None`` when there is none (ENXIO: ``offset`` is at or beyond the end of the file,
        or no data follows it).

        Data is tracked per chunk: a chunk index without a chunk is a hole, and so is
        everything from the end of the file on (the "virtual hole" every file ends with).
        Buffered writes are landed first, so their chunks exist and the size is known."""
        st = self._handle(fh).state
        if whence not in (self.SEEK_DATA, self.SEEK_HOLE):
            raise InvalidArgument(f"lseek whence {whence} is not SEEK_DATA or SEEK_HOLE")
        if _unclean(st) or st.lock.locked():
            async with st.lock:
                await self._flush_locked(st, sync=False)
        size = st.size
        if offset < 0 or offset >= size:
            return None
        first, last = offset // CHUNK_SIZE, (size - 1) // CHUNK_SIZE
        present = {c.index for c in await self.meta.file_chunks(st.ino, first, last - first + 1)}
        if whence == self.SEEK_DATA:
            data = min((i for i in present if i <= last), default=None)
            return None if data is None else max(offset, data * CHUNK_SIZE)
        index = first
        while index in present:  # at most len(present) steps
            index += 1
        return min(max(offset, index * CHUNK_SIZE), size)
