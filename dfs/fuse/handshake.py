"""INIT negotiation: ``FuseConfig`` and the pure function that answers the kernel's INIT."""

from __future__ import annotations

import errno
from dataclasses import dataclass

from dfs.fuse import abi, replies
from dfs.fuse.model import ConnectionInfo
from dfs.fuse.requests import Init

_PAGE_SIZE = 4096
MAX_MAX_WRITE = abi.MAX_MAX_PAGES * _PAGE_SIZE  # 1 MiB


@dataclass(frozen=True)
class FuseConfig:
    """Tunables of one FUSE session (frozen; call ``validate()`` before use).

    ``writeback_cache`` lets the kernel buffer writes (faster, but a crash of this process
    loses them and other clients see them late); ``posix_acl`` makes the kernel enforce ACLs
    stored in ``system.posix_acl_*`` xattrs.  Both stay off unless asked for.

    With ``posix_acl`` the file system applies the umask itself (``FUSE_DONT_MASK``): the
    kernel then sends the requested mode and the umask apart, because a directory's default
    ACL replaces the umask (``posix_acl_create``), which only the file system knows of.
    """

    max_write: int = MAX_MAX_WRITE
    #: Kernel-side limit of queued background requests (readahead, async direct I/O, ...).
    max_background: int = 64
    congestion_threshold: int = 48
    #: Timestamp granularity the file system keeps, in nanoseconds.
    time_gran: int = 1
    auto_inval_data: bool = True
    writeback_cache: bool = False
    posix_acl: bool = False
    readdirplus: bool = True
    #: Handler tasks allowed to run at once (blocking lock waits do not count).
    max_concurrency: int = 64

    def validate(self) -> None:
        """Raise ValueError for a combination the kernel would reject or clamp silently."""
        if not _PAGE_SIZE <= self.max_write <= MAX_MAX_WRITE:
            raise ValueError(f"max_write must be between 4096 and {MAX_MAX_WRITE}")
        if not 1 <= self.max_background <= 0xFFFF:
            raise ValueError("max_background must be between 1 and 65535")
        if not 1 <= self.congestion_threshold <= self.max_background:
            raise ValueError("congestion_threshold must be between 1 and max_background")
        if not 1 <= self.time_gran <= 10**9:
            raise ValueError("time_gran must be between 1 and 1e9 nanoseconds")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")

    @property
    def read_buffer_size(self) -> int:
        """Bytes per read of /dev/fuse: a full WRITE (header + fuse_write_in + max_write)."""
        return max(self.max_write, MAX_MAX_WRITE) + 4096


@dataclass(frozen=True)
class InitOutcome:
    """Result of ``negotiate``: the complete INIT reply, and the connection parameters (None
    when the mount cannot proceed: an error reply, or a major-version-only answer)."""

    conn: ConnectionInfo | None
    reply: bytes


def wanted_flags(config: FuseConfig, *, posix_locks: bool, flock_locks: bool) -> int:
    """The INIT capabilities we ask for (before intersecting with the kernel's offer)."""
    want = (
        abi.FUSE_ASYNC_READ
        | abi.FUSE_BIG_WRITES
        | abi.FUSE_PARALLEL_DIROPS
        | abi.FUSE_ASYNC_DIO
        | abi.FUSE_EXPORT_SUPPORT
        | abi.FUSE_MAX_PAGES
        | abi.FUSE_INIT_EXT
    )
    if config.readdirplus:
        want |= abi.FUSE_DO_READDIRPLUS | abi.FUSE_READDIRPLUS_AUTO
    if config.auto_inval_data:
        want |= abi.FUSE_AUTO_INVAL_DATA
    if config.writeback_cache:
        want |= abi.FUSE_WRITEBACK_CACHE
    if config.posix_acl:
        want |= abi.FUSE_POSIX_ACL | abi.FUSE_DONT_MASK
    if posix_locks:
        want |= abi.FUSE_POSIX_LOCKS
    if flock_locks:
        want |= abi.FUSE_FLOCK_LOCKS
    return want


def negotiate(
    req: Init, config: FuseConfig, *, posix_locks: bool, flock_locks: bool
) -> InitOutcome:
    """Decide the INIT answer.  Pure: no I/O, no state.

    * kernel major > 7: answer our version only (libfuse does the same), no connection;
    * kernel older than 7.12: EPROTO;
    * otherwise minor = min(kernel's, 38) and flags = wanted & offered.
    """
    if req.major > abi.KERNEL_VERSION:
        body = abi.INIT_OUT_COMPAT.pack(abi.KERNEL_VERSION, abi.KERNEL_MINOR_VERSION)
        return InitOutcome(conn=None, reply=replies.reply(req.unique, body))
    if req.major < abi.KERNEL_VERSION or req.minor < abi.MIN_KERNEL_MINOR_VERSION:
        return InitOutcome(conn=None, reply=replies.error_reply(req.unique, errno.EPROTO))
    minor = min(req.minor, abi.KERNEL_MINOR_VERSION)
    offered = req.flags
    if not offered & abi.FUSE_INIT_EXT:
        offered &= 0xFFFF_FFFF
    flags = wanted_flags(config, posix_locks=posix_locks, flock_locks=flock_locks) & offered
    if flags & abi.FUSE_MAX_PAGES:
        max_pages = min(abi.MAX_MAX_PAGES, -(-config.max_write // _PAGE_SIZE))
        max_write = config.max_write
    else:
        # Without FUSE_MAX_PAGES the kernel caps requests at 32 pages.
        max_pages = 0
        max_write = min(config.max_write, 32 * _PAGE_SIZE)
    conn = ConnectionInfo(
        proto_major=abi.KERNEL_VERSION,
        proto_minor=minor,
        kernel_flags=offered,
        flags=flags,
        max_readahead=req.max_readahead,
        max_write=max_write,
        max_pages=max_pages,
        max_background=config.max_background,
        congestion_threshold=config.congestion_threshold,
        time_gran=config.time_gran,
    )
    return InitOutcome(conn=conn, reply=init_reply_for(req.unique, conn))


def init_reply_for(unique: int, conn: ConnectionInfo) -> bytes:
    """Encode the INIT reply that puts ``conn`` in force."""
    return replies.init_reply(
        unique,
        major=conn.proto_major,
        minor=conn.proto_minor,
        max_readahead=conn.max_readahead,
        flags=conn.flags,
        max_background=conn.max_background,
        congestion_threshold=conn.congestion_threshold,
        max_write=conn.max_write,
        time_gran=conn.time_gran,
        max_pages=conn.max_pages,
    )
