"""Value types that ``Operations`` handlers receive and return.

All are frozen dataclasses with plain ints (nanoseconds for times, seconds as ``float`` for
cache timeouts).  They know nothing about the wire: ``replies.py`` encodes them.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who asked: the caller's credentials as the kernel reports them, and the request id."""

    uid: int
    gid: int
    pid: int
    unique: int


@dataclass(frozen=True, slots=True)
class Attr:
    """``struct stat`` as FUSE carries it.  ``mode`` includes the file type bits (S_IFMT)."""

    ino: int
    size: int
    blocks: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int = 0
    blksize: int = 65536


@dataclass(frozen=True, slots=True)
class Entry:
    """A name resolved to an inode (LOOKUP, MKDIR, CREATE, ... and each READDIRPLUS entry).

    Every Entry returned to the kernel with a nonzero ``attr.ino`` counts as one lookup of that
    inode, which the kernel later releases with FORGET.  ``attr.ino == 0`` in a LOOKUP reply is a
    negative entry: the kernel caches "no such name" for ``entry_timeout`` seconds.
    """

    attr: Attr
    generation: int = 0
    entry_timeout: float = 1.0
    attr_timeout: float = 1.0

    @property
    def ino(self) -> int:
        return self.attr.ino


@dataclass(frozen=True, slots=True)
class OpenReply:
    """Answer to OPEN / OPENDIR / CREATE: the file handle the kernel echoes in later requests."""

    fh: int
    direct_io: bool = False
    keep_cache: bool = False
    nonseekable: bool = False
    #: Directories only: let the kernel cache the directory's contents (FOPEN_CACHE_DIR).
    cache_dir: bool = False


@dataclass(frozen=True, slots=True)
class Statfs:
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    bsize: int = 65536
    namelen: int = 255
    frsize: int = 65536


@dataclass(frozen=True, slots=True)
class SetattrChanges:
    """What a SETATTR asks to change; ``None`` means "leave as is".

    ``atime_now``/``mtime_now`` ask for the current time (the file system's clock);
    ``atime_ns``/``mtime_ns`` are then ``None``.  ``fh`` is set when the change comes through an
    open file (ftruncate, futimens).
    """

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    atime_now: bool = False
    mtime_now: bool = False
    fh: int | None = None
    ctime_ns: int | None = None
    #: The kernel asks to clear setuid/setgid (only with FUSE_HANDLE_KILLPRIV_V2).
    kill_suidgid: bool = False


@dataclass(frozen=True, slots=True)
class FileLock:
    """A byte-range (or whole-file flock) lock.  ``end`` is inclusive; ``abi.OFFSET_MAX`` = EOF.

    ``type`` is ``fcntl.F_RDLCK``/``F_WRLCK``/``F_UNLCK`` (``abi.F_*``); ``pid`` is the owner's
    process id (GETLK answers report the conflicting holder's pid, 0 when remote).
    """

    start: int
    end: int
    type: int
    pid: int


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One READDIR entry: ``mode`` needs only the S_IFMT bits; ``offset`` is the cookie of the
    *next* entry (the kernel passes it back as the offset to continue from)."""

    ino: int
    name: bytes
    mode: int
    offset: int

    @property
    def dtype(self) -> int:
        return stat.S_IFMT(self.mode) >> 12


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """The parameters negotiated at INIT, handed to ``Operations.init``.

    ``kernel_flags`` are the (64-bit) capabilities the kernel offered; ``flags`` the subset that
    is in force.  Test a capability with ``info.flags & abi.FUSE_POSIX_LOCKS``.
    """

    proto_major: int
    proto_minor: int
    kernel_flags: int
    flags: int
    max_readahead: int
    max_write: int
    max_pages: int
    max_background: int
    congestion_threshold: int
    time_gran: int
