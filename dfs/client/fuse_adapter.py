"""The FUSE boundary: kernel requests -> VFS calls, dfs errors -> errno.

This is the only module of the client that knows errno numbers.  Each handler is a few lines:
translate arguments, call the VFS, translate the result.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from dfs import errors as E
from dfs.client.interfaces import Cred, InodeAttr, SetAttr
from dfs.client.vfs import Vfs
from dfs.fuse.errors import FuseError
from dfs.fuse.model import (
    Attr,
    Entry,
    FileLock,
    OpenReply,
    RequestContext,
    SetattrChanges,
    Statfs,
)
from dfs.fuse.operations import Operations
from dfs.fuse.replies import DirBuffer, DirPlusBuffer
from dfs.types import ROOT_INODE, InodeId

log = logging.getLogger(__name__)

#: The one place where typed dfs errors become errno numbers.
ERRNO: dict[type[E.DfsError], int] = {
    E.NotFound: errno.ENOENT,
    E.Exists: errno.EEXIST,
    E.NotADirectory: errno.ENOTDIR,
    E.IsADirectory: errno.EISDIR,
    E.DirectoryNotEmpty: errno.ENOTEMPTY,
    E.PermissionDenied: errno.EACCES,
    E.NotPermitted: errno.EPERM,
    E.InvalidArgument: errno.EINVAL,
    E.NameTooLong: errno.ENAMETOOLONG,
    E.NoSpace: errno.ENOSPC,
    E.NoAttribute: errno.ENODATA,
    E.TooManyLinks: errno.EMLINK,
    E.FileTooLarge: errno.EFBIG,
    E.NotSupported: errno.EOPNOTSUPP,
    E.RangeError: errno.ERANGE,
    E.CrossDevice: errno.EXDEV,
    E.Busy: errno.EBUSY,
    E.StaleHandle: errno.ESTALE,
    E.LockConflict: errno.EAGAIN,
    E.Deadlock: errno.EDEADLK,
    E.Interrupted: errno.EINTR,
    E.IOFailure: errno.EIO,
    E.DataLost: errno.EIO,
    E.SessionExpired: errno.EIO,
    E.StaleRequest: errno.EIO,
}

#: fcntl's unlock type, as FUSE lock requests and replies carry it.
F_UNLCK = 2

#: Errors that are expected answers, not faults worth a log line.
_QUIET = (E.FsError,)

P = ParamSpec("P")
T = TypeVar("T")


def to_errno(exc: E.DfsError) -> int:
    for cls in type(exc).__mro__:
        if cls in ERRNO:
            return ERRNO[cls]
    return errno.EIO


def _boundary(
    fn: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    name = fn.__name__

    # A plain try/except rather than an async context manager: this runs on every request,
    # and creating a context manager per call showed in profiles of small I/O.
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except E.DfsError as exc:
            if not isinstance(exc, _QUIET):
                log.warning("%s failed: %s: %s", name, exc.code, exc.message)
            raise FuseError(to_errno(exc)) from None

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _blocks(size: int) -> int:
    return (size + 511) // 512


def to_fuse_attr(a: InodeAttr) -> Attr:
    return Attr(
        ino=a.ino,
        size=a.size,
        blocks=_blocks(a.size),
        atime_ns=a.atime_ns,
        mtime_ns=a.mtime_ns,
        ctime_ns=a.ctime_ns,
        mode=a.mode,
        nlink=a.nlink,
        uid=a.uid,
        gid=a.gid,
        rdev=a.rdev,
    )


_NO_ATTR = Attr(
    ino=0, size=0, blocks=0, atime_ns=0, mtime_ns=0, ctime_ns=0, mode=0, nlink=0, uid=0, gid=0
)


#: Times are kept as signed 64-bit nanoseconds since 1970: 1677-09-21 to 2262-04-11.  Like
#: ext4 at its own limits, times outside are clamped rather than refused.
_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1


def _clamp_ns(ns: int | None) -> int | None:
    return None if ns is None else min(max(ns, _NS_MIN), _NS_MAX)


#: Open flags whose descriptors bypass the kernel's page cache (FOPEN_DIRECT_IO): O_DIRECT,
#: and O_APPEND, whose writes land where the metaserver reserves room at the file's end,
#: which the kernel cannot know (a page it cached would sit at the offset it guessed).
_UNCACHED = os.O_DIRECT | os.O_APPEND


def _cred(ctx: RequestContext) -> Cred:
    return Cred(uid=ctx.uid, gid=ctx.gid)


class DfsOperations(Operations):
    """dfs's FUSE file system: every method delegates to :class:`Vfs`."""

    def __init__(
        self, vfs: Vfs, *, attr_timeout: float, entry_timeout: float, fsync_on_close: bool = False
    ) -> None:
        self.vfs = vfs
        self.attr_timeout = attr_timeout
        self.entry_timeout = entry_timeout
        self.fsync_on_close = fsync_on_close
        #: ``notify_inval_inode(ino, offset, length)`` of the FUSE session, once mounted.
        self.invalidate: Callable[[int, int, int], Awaitable[bool]] | None = None
        #: Inodes the kernel knows (its lookup count of each, from the entries this adapter
        #: returned minus FORGETs): only these can be in its caches.
        self.known: dict[int, int] = {ROOT_INODE: 1}
        #: Size and mtime last given to the kernel per inode it knows.
        self._shown: dict[int, tuple[int, int]] = {}
        #: Bytes returned by READ and accepted by WRITE (for ``/metrics``).
        self.bytes_read = 0
        self.bytes_written = 0

    def _show(self, a: InodeAttr) -> Attr:
        """``a`` for the kernel, noting the size and mtime it will cache."""
        self._shown[a.ino] = (a.size, a.mtime_ns)
        return to_fuse_attr(a)

    def _remember(self, ino: int) -> None:
        self.known[ino] = self.known.get(ino, 0) + 1

    async def forget(self, items: list[tuple[int, int]]) -> None:
        for ino, nlookup in items:
            left = self.known.get(ino, 0) - nlookup
            if left > 0 or ino == ROOT_INODE:
                self.known[ino] = max(left, 1)
            else:
                self.known.pop(ino, None)
                self._shown.pop(ino, None)

    def _entry(self, a: InodeAttr, *, remember: bool = True) -> Entry:
        if remember:
            self._remember(a.ino)
        return Entry(
            attr=self._show(a),
            generation=a.generation,
            entry_timeout=self.entry_timeout,
            attr_timeout=self.attr_timeout,
        )

    async def destroy(self) -> None:
        await self.vfs.sync_all()

    @_boundary
    async def lookup(self, ctx: RequestContext, parent: int, name: bytes) -> Entry:
        try:
            return self._entry(await self.vfs.lookup(InodeId(parent), name))
        except E.NotFound:
            # A negative entry: the kernel remembers "no such name" for entry_timeout, which
            # saves a round trip per create (tar, cp, git all look a name up before creating
            # it).  Creates through this mount replace it at once.
            return Entry(attr=_NO_ATTR, entry_timeout=self.entry_timeout)

    @_boundary
    async def getattr(self, ctx: RequestContext, ino: int, fh: int | None) -> tuple[Attr, float]:
        return self._show(await self.vfs.getattr(InodeId(ino))), self.attr_timeout

    @_boundary
    async def setattr(
        self, ctx: RequestContext, ino: int, changes: SetattrChanges
    ) -> tuple[Attr, float]:
        ch = SetAttr(
            mode=changes.mode,
            uid=changes.uid,
            gid=changes.gid,
            size=changes.size,
            atime_ns=_clamp_ns(changes.atime_ns),
            mtime_ns=_clamp_ns(changes.mtime_ns),
            atime_now=changes.atime_now,
            mtime_now=changes.mtime_now,
        )
        attr = await self.vfs.setattr(InodeId(ino), ch, _cred(ctx))
        return self._show(attr), self.attr_timeout

    @_boundary
    async def readlink(self, ctx: RequestContext, ino: int) -> bytes:
        return await self.vfs.readlink(InodeId(ino))

    @_boundary
    async def symlink(self, ctx: RequestContext, parent: int, name: bytes, target: bytes) -> Entry:
        return self._entry(await self.vfs.symlink(InodeId(parent), name, target, _cred(ctx)))

    @_boundary
    async def mknod(
        self, ctx: RequestContext, parent: int, name: bytes, mode: int, rdev: int, umask: int
    ) -> Entry:
        attr = await self.vfs.mknod(InodeId(parent), name, mode, rdev, _cred(ctx), umask)
        return self._entry(attr)

    @_boundary
    async def mkdir(
        self, ctx: RequestContext, parent: int, name: bytes, mode: int, umask: int
    ) -> Entry:
        return self._entry(await self.vfs.mkdir(InodeId(parent), name, mode, _cred(ctx), umask))

    @_boundary
    async def unlink(self, ctx: RequestContext, parent: int, name: bytes) -> None:
        await self.vfs.unlink(InodeId(parent), name)

    @_boundary
    async def rmdir(self, ctx: RequestContext, parent: int, name: bytes) -> None:
        await self.vfs.rmdir(InodeId(parent), name)

    @_boundary
    async def rename(
        self,
        ctx: RequestContext,
        parent: int,
        name: bytes,
        newparent: int,
        newname: bytes,
        flags: int,
    ) -> None:
        await self.vfs.rename(InodeId(parent), name, InodeId(newparent), newname, flags)

    @_boundary
    async def link(self, ctx: RequestContext, ino: int, newparent: int, newname: bytes) -> Entry:
        return self._entry(await self.vfs.link(InodeId(ino), InodeId(newparent), newname))

    @_boundary
    async def open(self, ctx: RequestContext, ino: int, flags: int) -> OpenReply:
        fh, attr = await self.vfs.open(InodeId(ino), flags)
        if self._shown.get(ino) != (attr.size, attr.mtime_ns) and self.invalidate is not None:
            # Close-to-open: the kernel may still hold attributes from before another
            # client's change (the change feed is asynchronous); drop them so that the size
            # it reads up to is the committed one.
            await self.invalidate(ino, -1, 0)
            self._shown[ino] = (attr.size, attr.mtime_ns)
        return OpenReply(fh=fh, direct_io=bool(flags & _UNCACHED))

    @_boundary
    async def create(
        self, ctx: RequestContext, parent: int, name: bytes, mode: int, flags: int, umask: int
    ) -> tuple[Entry, OpenReply]:
        fh, attr = await self.vfs.create(InodeId(parent), name, mode, flags, _cred(ctx), umask)
        return self._entry(attr), OpenReply(fh=fh, direct_io=bool(flags & _UNCACHED))

    @_boundary
    async def read(self, ctx: RequestContext, ino: int, fh: int, offset: int, size: int) -> bytes:
        data = await self.vfs.read(fh, offset, size)
        self.bytes_read += len(data)
        return data

    @_boundary
    async def write(
        self, ctx: RequestContext, ino: int, fh: int, offset: int, data: bytes, write_flags: int
    ) -> int:
        n = await self.vfs.write(fh, offset, data)
        self.bytes_written += n
        return n

    @_boundary
    async def flush(self, ctx: RequestContext, ino: int, fh: int, lock_owner: int) -> None:
        # close(2) returns after this: what the process wrote is on every replica and its size
        # is committed (close-to-open), and on disk too with fsync_on_close.
        await self.vfs.flush(fh, sync=self.fsync_on_close, closing=True)
        # Any close of the file by a process releases that process's fcntl locks on it.
        await self.vfs.release_locks(InodeId(ino), lock_owner, "posix")

    @_boundary
    async def release(
        self,
        ctx: RequestContext,
        ino: int,
        fh: int,
        flags: int,
        lock_owner: int | None,
        flush: bool,
    ) -> None:
        try:
            await self.vfs.release(fh, sync=self.fsync_on_close)
        finally:
            await self.vfs.release_handle_locks(fh)
            if lock_owner is not None:  # FUSE_RELEASE_FLOCK_UNLOCK: the description's flock
                await self.vfs.release_locks(InodeId(ino), lock_owner, "flock")

    @_boundary
    async def getlk(
        self, ctx: RequestContext, ino: int, fh: int, owner: int, lock: FileLock
    ) -> FileLock:
        held = await self.vfs.getlk(InodeId(ino), owner, "posix", lock.type, lock.start, lock.end)
        if held is None:
            return FileLock(start=lock.start, end=lock.end, type=F_UNLCK, pid=0)
        return FileLock(start=held["start"], end=held["end"], type=held["type"], pid=held["pid"])

    @_boundary
    async def setlk(
        self,
        ctx: RequestContext,
        ino: int,
        fh: int,
        owner: int,
        lock: FileLock,
        sleep: bool,
        is_flock: bool,
    ) -> None:
        kind = "flock" if is_flock else "posix"
        await self.vfs.setlk(
            fh,
            InodeId(ino),
            owner,
            kind,
            lock.type,
            lock.start,
            lock.end,
            lock.pid,
            wait=sleep,
        )
        if lock.type != F_UNLCK and self.invalidate is not None:
            # Pages cached before the lock may predate another client's writes.
            await self.invalidate(ino, 0, 0)

    @_boundary
    async def fsync(self, ctx: RequestContext, ino: int, fh: int, datasync: bool) -> None:
        await self.vfs.flush(fh, sync=True)

    @_boundary
    async def fallocate(
        self, ctx: RequestContext, ino: int, fh: int, offset: int, length: int, mode: int
    ) -> None:
        await self.vfs.fallocate(fh, offset, length, mode)

    @_boundary
    async def lseek(self, ctx: RequestContext, ino: int, fh: int, offset: int, whence: int) -> int:
        pos = await self.vfs.lseek(fh, offset, whence)
        if pos is None:
            raise FuseError(errno.ENXIO)
        return pos

    @_boundary
    async def statfs(self, ctx: RequestContext, ino: int) -> Statfs:
        s = await self.vfs.statfs()
        bsize = 65536
        blocks = s.total_bytes // bsize
        free = min(s.free_bytes // bsize, blocks)
        # Files: no fixed inode table; report a large pool so tools do not think it is full.
        total_files = max(s.files * 2, 1 << 32)
        return Statfs(
            blocks=blocks,
            bfree=free,
            bavail=free,
            files=total_files,
            ffree=total_files - s.files,
            bsize=bsize,
            frsize=bsize,
        )

    @_boundary
    async def setxattr(
        self, ctx: RequestContext, ino: int, name: bytes, value: bytes, flags: int
    ) -> None:
        await self.vfs.setxattr(InodeId(ino), name, value, flags, _cred(ctx))

    @_boundary
    async def getxattr(self, ctx: RequestContext, ino: int, name: bytes) -> bytes:
        return await self.vfs.getxattr(InodeId(ino), name)

    @_boundary
    async def listxattr(self, ctx: RequestContext, ino: int) -> list[bytes]:
        return await self.vfs.listxattr(InodeId(ino), privileged=ctx.uid == 0)

    @_boundary
    async def removexattr(self, ctx: RequestContext, ino: int, name: bytes) -> None:
        await self.vfs.removexattr(InodeId(ino), name, _cred(ctx))

    @_boundary
    async def opendir(self, ctx: RequestContext, ino: int, flags: int) -> OpenReply:
        return OpenReply(fh=await self.vfs.opendir(InodeId(ino)))

    @_boundary
    async def readdir(
        self, ctx: RequestContext, ino: int, fh: int, offset: int, buf: DirBuffer
    ) -> None:
        for next_offset, name, attr in self.vfs.dir_entries(fh, offset):
            if not buf.add(attr.ino, name, stat.S_IFMT(attr.mode), next_offset):
                break

    @_boundary
    async def readdirplus(
        self, ctx: RequestContext, ino: int, fh: int, offset: int, buf: DirPlusBuffer
    ) -> None:
        for next_offset, name, attr in self.vfs.dir_entries(fh, offset):
            if not buf.add(self._entry(attr, remember=False), name, next_offset):
                break
            if name not in (b".", b".."):  # the kernel takes no reference for these
                self._remember(attr.ino)

    async def releasedir(self, ctx: RequestContext, ino: int, fh: int) -> None:
        self.vfs.releasedir(fh)

    async def fsyncdir(self, ctx: RequestContext, ino: int, fh: int, datasync: bool) -> None:
        # Every metadata change is durable (fsynced in the metaserver's log) before it is
        # acknowledged, so there is nothing left to sync.
        return None
