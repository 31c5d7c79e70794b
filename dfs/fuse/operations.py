"""The interface a file system implements to be served over FUSE.

Subclass ``Operations`` and override the methods you support; every default raises
``FuseError(ENOSYS)`` (the kernel then stops sending some of those requests, e.g. ACCESS,
FLUSH, OPENDIR, ...).  Handlers signal errors by raising ``FuseError(errno)``; any other
exception is a bug: it is logged with its traceback and the request is answered ``EIO``.

Contracts shared by all handlers:

* ``ino``/``parent`` are the kernel's node ids, which are the inode numbers this file system
  returned in ``Entry.attr.ino`` (the root is ``abi.ROOT_ID`` = 1).
* Every ``Entry`` returned by ``lookup``, ``mknod``, ``mkdir``, ``symlink``, ``link``,
  ``create`` and every entry added to a ``DirPlusBuffer`` (see there) is one *lookup* of that
  inode; ``forget`` releases them.  An inode must stay resolvable while its count is > 0.
* Handlers run concurrently, one trio task per request.  A handler may be cancelled when the
  calling process is interrupted (FUSE_INTERRUPT): it then sees ``trio.Cancelled`` and the
  request is answered ``EINTR``.  Shield work that must not stop half-way.
* Handlers must never perform file-system calls on the mount they serve from the trio thread
  (that would wait for a reply only this thread can send).
"""

from __future__ import annotations

import errno

from dfs.fuse.errors import FuseError
from dfs.fuse.model import (
    Attr,
    ConnectionInfo,
    DirEntry,
    Entry,
    FileLock,
    OpenReply,
    RequestContext,
    SetattrChanges,
    Statfs,
)
from dfs.fuse.replies import DirBuffer, DirPlusBuffer


def _nosys() -> FuseError:
    return FuseError(errno.ENOSYS)


class Operations:
    """Base class: every request answers ENOSYS until overridden (``init``/``destroy`` and
    ``forget`` are no-ops)."""

    # ---- lifecycle ----
    async def init(self, conn: ConnectionInfo) -> None:
        """Called once after INIT negotiation, before the INIT reply is sent.  Raising makes
        the mount fail."""

    async def destroy(self) -> None:
        """Called once when the session ends (DESTROY or unmount), whatever the reason."""

    # ---- names and inodes ----
    async def lookup(self, ctx: RequestContext, parent: int, name: bytes) -> Entry:
        raise _nosys()

    async def forget(self, items: list[tuple[int, int]]) -> None:
        """Drop ``nlookup`` lookups of each ``(ino, nlookup)``.  Never answered; errors are
        logged and otherwise ignored."""

    async def getattr(self, ctx: RequestContext, ino: int, fh: int | None) -> tuple[Attr, float]:
        """Return the attributes and how long (seconds) the kernel may cache them."""
        raise _nosys()

    async def setattr(
        self, ctx: RequestContext, ino: int, changes: SetattrChanges
    ) -> tuple[Attr, float]:
        raise _nosys()

    async def readlink(self, ctx: RequestContext, ino: int) -> bytes:
        raise _nosys()

    async def symlink(self, ctx: RequestContext, parent: int, name: bytes, target: bytes) -> Entry:
        raise _nosys()

    async def mknod(
        self, ctx: RequestContext, parent: int, name: bytes, mode: int, rdev: int, umask: int
    ) -> Entry:
        raise _nosys()

    async def mkdir(
        self, ctx: RequestContext, parent: int, name: bytes, mode: int, umask: int
    ) -> Entry:
        raise _nosys()

    async def unlink(self, ctx: RequestContext, parent: int, name: bytes) -> None:
        raise _nosys()

    async def rmdir(self, ctx: RequestContext, parent: int, name: bytes) -> None:
        raise _nosys()

    async def rename(
        self,
        ctx: RequestContext,
        parent: int,
        name: bytes,
        newparent: int,
        newname: bytes,
        flags: int,
    ) -> None:
        """``flags``: 0 or ``abi.RENAME_NOREPLACE`` / ``RENAME_EXCHANGE`` / ``RENAME_WHITEOUT``
        (answer EINVAL for flags you do not support)."""
        raise _nosys()

    async def link(self, ctx: RequestContext, ino: int, newparent: int, newname: bytes) -> Entry:
        raise _nosys()

    # ---- files ----
    async def open(self, ctx: RequestContext, ino: int, flags: int) -> OpenReply:
        raise _nosys()

    async def read(self, ctx: RequestContext, ino: int, fh: int, offset: int, size: int) -> bytes:
        """Return at most ``size`` bytes; fewer means end of file (unless direct_io)."""
        raise _nosys()

    async def write(
        self,
        ctx: RequestContext,
        ino: int,
        fh: int,
        offset: int,
        data: bytes,
        write_flags: int,
    ) -> int:
        """Return the number of bytes written (``len(data)`` unless an error occurred)."""
        raise _nosys()

    async def statfs(self, ctx: RequestContext, ino: int) -> Statfs:
        raise _nosys()

    async def flush(self, ctx: RequestContext, ino: int, fh: int, lock_owner: int) -> None:
        """Called on every close(2) of a descriptor; a file system with POSIX locks must drop
        the locks of ``lock_owner`` here."""
        raise _nosys()

    async def release(
        self,
        ctx: RequestContext,
        ino: int,
        fh: int,
        flags: int,
        lock_owner: int | None,
        flush: bool,
    ) -> None:
        """The last reference to an open file is gone; errors are not seen by anybody.

        ``lock_owner`` is not None exactly when the kernel asks to release the flock(2) locks
        held by that owner (FUSE_RELEASE_FLOCK_UNLOCK); ``flush`` asks to flush first.
        """
        raise _nosys()

    async def fsync(self, ctx: RequestContext, ino: int, fh: int, datasync: bool) -> None:
        raise _nosys()

    async def fallocate(
        self, ctx: RequestContext, ino: int, fh: int, offset: int, length: int, mode: int
    ) -> None:
        raise _nosys()

    async def lseek(self, ctx: RequestContext, ino: int, fh: int, offset: int, whence: int) -> int:
        """SEEK_DATA / SEEK_HOLE (the kernel handles SEEK_SET/CUR/END itself)."""
        raise _nosys()

    async def copy_file_range(
        self,
        ctx: RequestContext,
        ino_in: int,
        fh_in: int,
        off_in: int,
        ino_out: int,
        fh_out: int,
        off_out: int,
        length: int,
        flags: int,
    ) -> int:
        """Return the number of bytes copied."""
        raise _nosys()

    async def create(
        self, ctx: RequestContext, parent: int, name: bytes, mode: int, flags: int, umask: int
    ) -> tuple[Entry, OpenReply]:
        """Atomic create-and-open.  With ENOSYS the kernel falls back to MKNOD + OPEN."""
        raise _nosys()

    # ---- extended attributes ----
    async def setxattr(
        self, ctx: RequestContext, ino: int, name: bytes, value: bytes, flags: int
    ) -> None:
        raise _nosys()

    async def getxattr(self, ctx: RequestContext, ino: int, name: bytes) -> bytes:
        """Return the whole value; the layer answers size queries and ERANGE itself."""
        raise _nosys()

    async def listxattr(self, ctx: RequestContext, ino: int) -> list[bytes]:
        """Return the names (without NULs); the layer handles the size protocol."""
        raise _nosys()

    async def removexattr(self, ctx: RequestContext, ino: int, name: bytes) -> None:
        raise _nosys()

    # ---- directories ----
    async def opendir(self, ctx: RequestContext, ino: int, flags: int) -> OpenReply:
        raise _nosys()

    async def readdir(
        self, ctx: RequestContext, ino: int, fh: int, offset: int, buf: DirBuffer
    ) -> None:
        """Add entries after cookie ``offset`` (0 = from the start) until ``buf.add`` returns
        False or the directory ends; adding nothing means end of directory."""
        raise _nosys()

    async def readdirplus(
        self, ctx: RequestContext, ino: int, fh: int, offset: int, buf: DirPlusBuffer
    ) -> None:
        """Like ``readdir`` with attributes; see ``DirPlusBuffer`` for lookup counting."""
        raise _nosys()

    async def releasedir(self, ctx: RequestContext, ino: int, fh: int) -> None:
        raise _nosys()

    async def fsyncdir(self, ctx: RequestContext, ino: int, fh: int, datasync: bool) -> None:
        raise _nosys()

    # ---- permissions and locks ----
    async def access(self, ctx: RequestContext, ino: int, mask: int) -> None:
        raise _nosys()

    async def getlk(
        self, ctx: RequestContext, ino: int, fh: int, owner: int, lock: FileLock
    ) -> FileLock:
        """Return a lock that conflicts with ``lock``, or ``lock`` with type F_UNLCK."""
        raise _nosys()

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
        """Acquire/release; with ``sleep`` wait for the lock (cancellation = EINTR), else answer
        EAGAIN on conflict.  ``is_flock``: a whole-file flock(2) lock, owned by ``owner``.

        Overriding ``setlk`` (and ``getlk`` for POSIX locks) is what makes the session ask the
        kernel to forward locks at all; otherwise the kernel keeps them local.
        """
        raise _nosys()

    async def bmap(self, ctx: RequestContext, ino: int, blocksize: int, block: int) -> int:
        raise _nosys()


def overrides(ops: Operations, name: str) -> bool:
    """True when ``ops``'s class overrides ``Operations.<name>``."""
    return getattr(type(ops), name, None) is not getattr(Operations, name)


__all__ = [
    "Attr",
    "ConnectionInfo",
    "DirBuffer",
    "DirEntry",
    "DirPlusBuffer",
    "Entry",
    "FileLock",
    "FuseError",
    "OpenReply",
    "Operations",
    "RequestContext",
    "SetattrChanges",
    "Statfs",
    "overrides",
]
