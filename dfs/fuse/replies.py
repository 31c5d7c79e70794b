"""Encode replies and notifications for /dev/fuse (sans-I/O: values in, bytes out).

A reply is ``fuse_out_header`` (len, error, unique) followed by the body; an error reply is
the header alone with ``error = -errno``.  A notification is a reply with ``unique = 0`` whose
``error`` field carries the notify code.  Each function returns the complete message, ready to
be written with one ``write(2)``.
"""

from __future__ import annotations

import math
import stat

from dfs.fuse import abi
from dfs.fuse.model import Attr, Entry, FileLock, OpenReply, Statfs

#: Longest name the kernel accepts in a dirent or a notification (``FUSE_NAME_MAX``).
NAME_MAX = 1024
_MAX_TIMEOUT_S = 2**31  # ~68 years; keeps the kernel's signed seconds positive
_U64 = 2**64


def reply(unique: int, body: bytes = b"") -> bytes:
    """A success reply; header-only when ``body`` is empty (UNLINK, SETXATTR, RELEASE, ...)."""
    return abi.OUT_HEADER.pack(abi.OUT_HEADER.size + len(body), 0, unique) + body


def error_reply(unique: int, errno: int) -> bytes:
    """An error reply: header only, ``error = -errno``."""
    if errno <= 0:
        raise ValueError(f"errno must be positive, got {errno}")
    return abi.OUT_HEADER.pack(abi.OUT_HEADER.size, -errno, unique)


def split_timeout(seconds: float) -> tuple[int, int]:
    """A cache timeout as (seconds, nanoseconds); negative/NaN become 0, huge values are capped."""
    if math.isnan(seconds) or seconds <= 0:
        return 0, 0
    if seconds >= _MAX_TIMEOUT_S:
        return _MAX_TIMEOUT_S, 0
    sec = int(seconds)
    nsec = min(round((seconds - sec) * 1e9), 999_999_999)
    return sec, nsec


def _split_ns(ns: int) -> tuple[int, int]:
    sec, nsec = divmod(ns, 10**9)
    return sec, nsec


def encode_attr(attr: Attr) -> bytes:
    """``struct fuse_attr`` (88 bytes)."""
    atime, atimensec = _split_ns(attr.atime_ns)
    mtime, mtimensec = _split_ns(attr.mtime_ns)
    ctime, ctimensec = _split_ns(attr.ctime_ns)
    return abi.ATTR.pack(
        attr.ino,
        attr.size,
        attr.blocks,
        atime,
        mtime,
        ctime,
        atimensec,
        mtimensec,
        ctimensec,
        attr.mode,
        attr.nlink,
        attr.uid,
        attr.gid,
        attr.rdev,
        attr.blksize,
        0,  # flags: FUSE_ATTR_SUBMOUNT / FUSE_ATTR_DAX, never used here
    )


def encode_entry_out(entry: Entry) -> bytes:
    """``struct fuse_entry_out`` (128 bytes)."""
    entry_valid, entry_nsec = split_timeout(entry.entry_timeout)
    attr_valid, attr_nsec = split_timeout(entry.attr_timeout)
    head = abi.ENTRY_OUT_HEAD.pack(
        entry.attr.ino, entry.generation, entry_valid, attr_valid, entry_nsec, attr_nsec
    )
    return head + encode_attr(entry.attr)


def entry_reply(unique: int, entry: Entry) -> bytes:
    return reply(unique, encode_entry_out(entry))


def attr_reply(unique: int, attr: Attr, timeout: float) -> bytes:
    valid, nsec = split_timeout(timeout)
    return reply(unique, abi.ATTR_OUT_HEAD.pack(valid, nsec, 0) + encode_attr(attr))


def encode_open_out(opened: OpenReply) -> bytes:
    flags = 0
    if opened.direct_io:
        flags |= abi.FOPEN_DIRECT_IO
    if opened.keep_cache:
        flags |= abi.FOPEN_KEEP_CACHE
    if opened.nonseekable:
        flags |= abi.FOPEN_NONSEEKABLE
    if opened.cache_dir:
        flags |= abi.FOPEN_CACHE_DIR
    return abi.OPEN_OUT.pack(opened.fh, flags, 0)


def open_reply(unique: int, opened: OpenReply) -> bytes:
    return reply(unique, encode_open_out(opened))


def create_reply(unique: int, entry: Entry, opened: OpenReply) -> bytes:
    """CREATE answers with ``fuse_entry_out`` followed by ``fuse_open_out``."""
    return reply(unique, encode_entry_out(entry) + encode_open_out(opened))


def write_reply(unique: int, size: int) -> bytes:
    return reply(unique, abi.WRITE_OUT.pack(size, 0))


def statfs_reply(unique: int, st: Statfs) -> bytes:
    body = abi.KSTATFS.pack(
        st.blocks, st.bfree, st.bavail, st.files, st.ffree, st.bsize, st.namelen, st.frsize, 0
    )
    return reply(unique, body)


def getxattr_size_reply(unique: int, size: int) -> bytes:
    """Answer to GETXATTR/LISTXATTR with ``size == 0``: only the length of the value."""
    return reply(unique, abi.GETXATTR_OUT.pack(size, 0))


def lk_reply(unique: int, lock: FileLock) -> bytes:
    return reply(unique, abi.LK_OUT.pack(lock.start, lock.end, lock.type, lock.pid))


def lseek_reply(unique: int, offset: int) -> bytes:
    return reply(unique, abi.LSEEK_OUT.pack(offset))


def bmap_reply(unique: int, block: int) -> bytes:
    return reply(unique, abi.BMAP_OUT.pack(block))


def init_reply(
    unique: int,
    *,
    major: int,
    minor: int,
    max_readahead: int,
    flags: int,
    max_background: int,
    congestion_threshold: int,
    max_write: int,
    time_gran: int,
    max_pages: int,
) -> bytes:
    """``fuse_init_out``; ``flags`` is the 64-bit set (high half goes to ``flags2``).

    Kernels older than 7.23 expect the 24-byte compat layout, so the body is cut to that.
    """
    body = abi.INIT_OUT.pack(
        major,
        minor,
        max_readahead,
        flags & 0xFFFF_FFFF,
        max_background,
        congestion_threshold,
        max_write,
        time_gran,
        max_pages,
        0,  # map_alignment (DAX only)
        (flags >> 32) & 0xFFFF_FFFF,
    )
    if minor < abi.INIT_OUT_FULL_SINCE_MINOR:
        body = body[: abi.COMPAT_22_INIT_OUT_SIZE]
    return reply(unique, body)


# ---- notifications (unique = 0, error = notify code) ----


def _notify(code: abi.NotifyCode, body: bytes) -> bytes:
    return abi.OUT_HEADER.pack(abi.OUT_HEADER.size + len(body), int(code), 0) + body


def _check_name(name: bytes) -> None:
    if not name or len(name) > NAME_MAX or b"/" in name or b"\0" in name:
        raise ValueError(f"invalid file name {name!r}")


def notify_inval_inode(ino: int, offset: int = 0, length: int = 0) -> bytes:
    """Drop cached attributes of ``ino`` and its page cache in [offset, offset+length).

    ``length == 0`` means "to end of file"; a negative ``offset`` invalidates attributes only.
    """
    return _notify(abi.NotifyCode.INVAL_INODE, abi.NOTIFY_INVAL_INODE_OUT.pack(ino, offset, length))


def notify_inval_entry(parent: int, name: bytes, *, expire_only: bool = False) -> bytes:
    """Drop the cached dentry ``name`` in directory ``parent`` (the name is NUL-terminated on
    the wire; the kernel checks that)."""
    _check_name(name)
    flags = abi.FUSE_EXPIRE_ONLY if expire_only else 0
    body = abi.NOTIFY_INVAL_ENTRY_OUT.pack(parent, len(name), flags) + name + b"\0"
    return _notify(abi.NotifyCode.INVAL_ENTRY, body)


def notify_delete(parent: int, child: int, name: bytes) -> bytes:
    """Like ``notify_inval_entry`` but also tells the kernel that ``child`` was unlinked."""
    _check_name(name)
    body = abi.NOTIFY_DELETE_OUT.pack(parent, child, len(name), 0) + name + b"\0"
    return _notify(abi.NotifyCode.DELETE, body)


def notify_store(ino: int, offset: int, data: bytes) -> bytes:
    """Push ``data`` into the kernel's page cache of ``ino`` at ``offset``."""
    body = abi.NOTIFY_STORE_OUT.pack(ino, offset, len(data), 0) + data
    return _notify(abi.NotifyCode.STORE, body)


# ---- directory listings ----


def _dirent(ino: int, next_offset: int, name: bytes, mode: int) -> bytes:
    _check_name(name)
    if not 0 <= next_offset < _U64:
        raise ValueError(f"directory offset {next_offset} out of range")
    head = abi.DIRENT_HEAD.pack(ino, next_offset, len(name), stat.S_IFMT(mode) >> 12)
    record = head + name
    return record + b"\0" * (abi.rec_align(len(record)) - len(record))


class DirBuffer:
    """Collects READDIR entries up to the size the kernel asked for.

    ``add`` returns ``False`` (and adds nothing) once the next entry would not fit; the handler
    then stops.  Each entry's ``next_offset`` is the cookie the kernel sends back to continue
    *after* that entry, so it must be nonzero and stable for the open directory.
    """

    __slots__ = ("_chunks", "_max", "_used")

    def __init__(self, max_size: int) -> None:
        self._max = max_size
        self._used = 0
        self._chunks: list[bytes] = []

    def add(self, ino: int, name: bytes, mode_type: int, next_offset: int) -> bool:
        """Append one ``fuse_dirent``; ``mode_type`` is a ``st_mode`` (only S_IFMT is used)."""
        record = _dirent(ino, next_offset, name, mode_type)
        if self._used + len(record) > self._max:
            return False
        self._chunks.append(record)
        self._used += len(record)
        return True

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def size(self) -> int:
        return self._used

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)


class DirPlusBuffer:
    """Collects READDIRPLUS entries (``fuse_direntplus``: entry_out + dirent, 8-byte aligned).

    Lookup counting: the kernel takes one lookup reference on the inode of every entry that was
    added (``add`` returned ``True``) and has ``entry.ino != 0``, except for the names ``.`` and
    ``..``.  The file system must count exactly those, as it does for LOOKUP.
    """

    __slots__ = ("_chunks", "_max", "_used")

    def __init__(self, max_size: int) -> None:
        self._max = max_size
        self._used = 0
        self._chunks: list[bytes] = []

    def add(self, entry: Entry, name: bytes, next_offset: int) -> bool:
        record = encode_entry_out(entry) + _dirent(entry.ino, next_offset, name, entry.attr.mode)
        if self._used + len(record) > self._max:
            return False
        self._chunks.append(record)
        self._used += len(record)
        return True

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def size(self) -> int:
        return self._used

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)
