"""Parse one raw FUSE request (the bytes of one read of /dev/fuse) into a typed request.

Sans-I/O: ``parse_request(data)`` is a pure function.  Every request dataclass carries the
header fields (``opcode``, ``unique``, ``nodeid``, ``uid``, ``gid``, ``pid``) plus the fields of
its opcode; names are ``bytes`` without their terminating NUL.

Contract: for *any* input, ``parse_request`` either returns a request or raises
``MalformedRequest`` (never ``struct.error``/``IndexError``).  A request whose opcode we do not
know is not malformed: it parses to ``UnknownRequest`` and is answered ``ENOSYS``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TypedDict

from dfs.fuse import abi
from dfs.fuse.errors import MalformedRequest
from dfs.fuse.model import FileLock, SetattrChanges


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Lookup(Request):
    name: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Forget(Request):
    nlookup: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchForget(Request):
    #: ``(nodeid, nlookup)`` pairs.
    items: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Getattr(Request):
    getattr_flags: int
    #: Set only when the kernel marked it valid (FUSE_GETATTR_FH: fstat on an open file).
    fh: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Setattr(Request):
    valid: int
    changes: SetattrChanges
    #: Set only with FATTR_LOCKOWNER.
    lock_owner: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Readlink(Request):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Symlink(Request):
    name: bytes
    target: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Mknod(Request):
    mode: int
    rdev: int
    umask: int
    name: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Mkdir(Request):
    mode: int
    umask: int
    name: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Unlink(Request):
    name: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Rmdir(Request):
    name: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Rename(Request):
    """RENAME (``flags`` = 0) and RENAME2 (``flags`` = RENAME_NOREPLACE/EXCHANGE/WHITEOUT)."""

    newdir: int
    flags: int
    name: bytes
    newname: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Link(Request):
    """Hard link: ``oldnodeid`` is the existing inode, ``nodeid`` the new parent."""

    oldnodeid: int
    newname: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Open(Request):
    """OPEN and OPENDIR."""

    flags: int
    open_flags: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Read(Request):
    """READ, READDIR and READDIRPLUS."""

    fh: int
    offset: int
    size: int
    read_flags: int
    lock_owner: int
    flags: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Write(Request):
    fh: int
    offset: int
    write_flags: int
    lock_owner: int
    flags: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class StatfsRequest(Request):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Release(Request):
    """RELEASE and RELEASEDIR."""

    fh: int
    flags: int
    release_flags: int
    lock_owner: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Fsync(Request):
    """FSYNC and FSYNCDIR."""

    fh: int
    fsync_flags: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Setxattr(Request):
    flags: int
    setxattr_flags: int
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Getxattr(Request):
    size: int
    name: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Listxattr(Request):
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Removexattr(Request):
    name: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Flush(Request):
    fh: int
    lock_owner: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Init(Request):
    major: int
    minor: int
    max_readahead: int
    #: 64-bit capability set: ``flags | flags2 << 32`` when FUSE_INIT_EXT is offered.
    flags: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Lk(Request):
    """GETLK, SETLK and SETLKW (``sleep``)."""

    fh: int
    owner: int
    lock: FileLock
    lk_flags: int

    @property
    def is_flock(self) -> bool:
        return bool(self.lk_flags & abi.FUSE_LK_FLOCK)

    @property
    def sleep(self) -> bool:
        return self.opcode == abi.Opcode.SETLKW


@dataclass(frozen=True, slots=True, kw_only=True)
class Access(Request):
    mask: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Create(Request):
    """CREATE and TMPFILE."""

    flags: int
    mode: int
    umask: int
    open_flags: int
    name: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Interrupt(Request):
    #: ``unique`` of the request to interrupt.
    target: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Bmap(Request):
    block: int
    blocksize: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Destroy(Request):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Ioctl(Request):
    fh: int
    flags: int
    cmd: int
    arg: int
    in_size: int
    out_size: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Poll(Request):
    fh: int
    kh: int
    flags: int
    events: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyReply(Request):
    """The kernel's answer to a NOTIFY_RETRIEVE (never replied to)."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Fallocate(Request):
    fh: int
    offset: int
    length: int
    mode: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Lseek(Request):
    fh: int
    offset: int
    whence: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyFileRange(Request):
    fh_in: int
    off_in: int
    nodeid_out: int
    fh_out: int
    off_out: int
    length: int
    flags: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Syncfs(Request):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownRequest(Request):
    """An opcode this layer does not implement (answered ENOSYS)."""

    body: bytes


# ---------------------------------------------------------------------------------------------


class _Reader:
    """Cursor over a request body; every shortfall raises MalformedRequest."""

    __slots__ = ("_data", "_opcode", "_pos", "_unique")

    def __init__(self, data: bytes, unique: int, opcode: int) -> None:
        self._data = data
        self._pos = 0
        self._unique = unique
        self._opcode = opcode

    def fail(self, reason: str) -> MalformedRequest:
        name = abi.opcode_name(self._opcode)
        return MalformedRequest(f"{name}: {reason}", unique=self._unique, opcode=self._opcode)

    def struct(self, s: struct.Struct) -> tuple[int, ...]:
        end = self._pos + s.size
        if end > len(self._data):
            raise self.fail(f"body too short: need {s.size} bytes at offset {self._pos}")
        values = s.unpack_from(self._data, self._pos)
        self._pos = end
        return values

    def cstr(self) -> bytes:
        end = self._data.find(b"\0", self._pos)
        if end < 0:
            raise self.fail("name is not NUL-terminated")
        value = self._data[self._pos : end]
        self._pos = end + 1
        return value

    def name(self) -> bytes:
        value = self.cstr()
        if not value:
            raise self.fail("empty name")
        return value

    def take(self, n: int) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise self.fail(f"body too short: need {n} data bytes at offset {self._pos}")
        value = self._data[self._pos : end]
        self._pos = end
        return value

    def remaining(self) -> int:
        return len(self._data) - self._pos


def parse_request(data: bytes, *, setxattr_ext: bool = False) -> Request:
    """Parse one request.  ``setxattr_ext``: FUSE_SETXATTR_EXT was negotiated (16-byte
    ``fuse_setxattr_in`` instead of the 8-byte compat layout)."""
    if len(data) < abi.IN_HEADER.size:
        raise MalformedRequest(f"request of {len(data)} bytes is shorter than fuse_in_header")
    length, opcode, unique, nodeid, uid, gid, pid, total_extlen, _pad = abi.IN_HEADER.unpack_from(
        data
    )
    if length != len(data):
        raise MalformedRequest(
            f"header says {length} bytes but {len(data)} were read", unique=unique, opcode=opcode
        )
    # Extensions (security context, supplementary groups) sit at the end of the request; we do
    # not negotiate any, but strip them so the body parses the same either way.
    body_end = length - total_extlen * 8
    if body_end < abi.IN_HEADER.size:
        raise MalformedRequest(
            f"extension length {total_extlen * 8} exceeds the request",
            unique=unique,
            opcode=opcode,
        )
    r = _Reader(data[abi.IN_HEADER.size : body_end], unique, opcode)
    h = _Header(opcode=opcode, unique=unique, nodeid=nodeid, uid=uid, gid=gid, pid=pid)
    parser = _PARSERS.get(opcode)
    if parser is None:
        return UnknownRequest(**h, body=data[abi.IN_HEADER.size : body_end])
    return parser(r, h, setxattr_ext)


class _Header(TypedDict):
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int


def _lookup(r: _Reader, h: _Header, _x: bool) -> Request:
    return Lookup(**h, name=r.name())


def _forget(r: _Reader, h: _Header, _x: bool) -> Request:
    (nlookup,) = r.struct(abi.FORGET_IN)
    return Forget(**h, nlookup=nlookup)


def _batch_forget(r: _Reader, h: _Header, _x: bool) -> Request:
    count, _dummy = r.struct(abi.BATCH_FORGET_IN)
    if count * abi.FORGET_ONE.size > r.remaining():
        raise r.fail(f"count {count} exceeds the body")
    items = tuple((nodeid, n) for nodeid, n in (r.struct(abi.FORGET_ONE) for _ in range(count)))
    return BatchForget(**h, items=items)


def _getattr(r: _Reader, h: _Header, _x: bool) -> Request:
    flags, _dummy, fh = r.struct(abi.GETATTR_IN)
    return Getattr(**h, getattr_flags=flags, fh=fh if flags & abi.FUSE_GETATTR_FH else None)


def _setattr(r: _Reader, h: _Header, _x: bool) -> Request:
    (
        valid,
        _pad,
        fh,
        size,
        lock_owner,
        atime,
        mtime,
        ctime,
        atimensec,
        mtimensec,
        ctimensec,
        mode,
        _unused4,
        uid,
        gid,
        _unused5,
    ) = r.struct(abi.SETATTR_IN)
    atime_now = bool(valid & abi.FATTR_ATIME_NOW)
    mtime_now = bool(valid & abi.FATTR_MTIME_NOW)
    changes = SetattrChanges(
        mode=mode if valid & abi.FATTR_MODE else None,
        uid=uid if valid & abi.FATTR_UID else None,
        gid=gid if valid & abi.FATTR_GID else None,
        size=size if valid & abi.FATTR_SIZE else None,
        atime_ns=atime * 10**9 + atimensec if valid & abi.FATTR_ATIME and not atime_now else None,
        mtime_ns=mtime * 10**9 + mtimensec if valid & abi.FATTR_MTIME and not mtime_now else None,
        atime_now=atime_now,
        mtime_now=mtime_now,
        fh=fh if valid & abi.FATTR_FH else None,
        ctime_ns=ctime * 10**9 + ctimensec if valid & abi.FATTR_CTIME else None,
        kill_suidgid=bool(valid & abi.FATTR_KILL_SUIDGID),
    )
    owner = lock_owner if valid & abi.FATTR_LOCKOWNER else None
    return Setattr(**h, valid=valid, changes=changes, lock_owner=owner)


def _readlink(r: _Reader, h: _Header, _x: bool) -> Request:
    return Readlink(**h)


def _symlink(r: _Reader, h: _Header, _x: bool) -> Request:
    name = r.name()
    return Symlink(**h, name=name, target=r.name())


def _mknod(r: _Reader, h: _Header, _x: bool) -> Request:
    mode, rdev, umask, _pad = r.struct(abi.MKNOD_IN)
    return Mknod(**h, mode=mode, rdev=rdev, umask=umask, name=r.name())


def _mkdir(r: _Reader, h: _Header, _x: bool) -> Request:
    mode, umask = r.struct(abi.MKDIR_IN)
    return Mkdir(**h, mode=mode, umask=umask, name=r.name())


def _unlink(r: _Reader, h: _Header, _x: bool) -> Request:
    return Unlink(**h, name=r.name())


def _rmdir(r: _Reader, h: _Header, _x: bool) -> Request:
    return Rmdir(**h, name=r.name())


def _rename(r: _Reader, h: _Header, _x: bool) -> Request:
    (newdir,) = r.struct(abi.RENAME_IN)
    name = r.name()
    return Rename(**h, newdir=newdir, flags=0, name=name, newname=r.name())


def _rename2(r: _Reader, h: _Header, _x: bool) -> Request:
    newdir, flags, _pad = r.struct(abi.RENAME2_IN)
    name = r.name()
    return Rename(**h, newdir=newdir, flags=flags, name=name, newname=r.name())


def _link(r: _Reader, h: _Header, _x: bool) -> Request:
    (oldnodeid,) = r.struct(abi.LINK_IN)
    return Link(**h, oldnodeid=oldnodeid, newname=r.name())


def _open(r: _Reader, h: _Header, _x: bool) -> Request:
    flags, open_flags = r.struct(abi.OPEN_IN)
    return Open(**h, flags=flags, open_flags=open_flags)


def _read(r: _Reader, h: _Header, _x: bool) -> Request:
    fh, offset, size, read_flags, lock_owner, flags, _pad = r.struct(abi.READ_IN)
    return Read(
        **h,
        fh=fh,
        offset=offset,
        size=size,
        read_flags=read_flags,
        lock_owner=lock_owner,
        flags=flags,
    )


def _write(r: _Reader, h: _Header, _x: bool) -> Request:
    fh, offset, size, write_flags, lock_owner, flags, _pad = r.struct(abi.WRITE_IN)
    if size != r.remaining():
        raise r.fail(f"write size {size} but {r.remaining()} data bytes follow")
    return Write(
        **h,
        fh=fh,
        offset=offset,
        write_flags=write_flags,
        lock_owner=lock_owner,
        flags=flags,
        data=r.take(size),
    )


def _statfs(r: _Reader, h: _Header, _x: bool) -> Request:
    return StatfsRequest(**h)


def _release(r: _Reader, h: _Header, _x: bool) -> Request:
    fh, flags, release_flags, lock_owner = r.struct(abi.RELEASE_IN)
    return Release(**h, fh=fh, flags=flags, release_flags=release_flags, lock_owner=lock_owner)


def _fsync(r: _Reader, h: _Header, _x: bool) -> Request:
    fh, fsync_flags, _pad = r.struct(abi.FSYNC_IN)
    return Fsync(**h, fh=fh, fsync_flags=fsync_flags)


def _setxattr(r: _Reader, h: _Header, setxattr_ext: bool) -> Request:
    if setxattr_ext:
        size, flags, setxattr_flags, _pad = r.struct(abi.SETXATTR_IN)
    else:
        size, flags = r.struct(abi.SETXATTR_IN_COMPAT)
        setxattr_flags = 0
    name = r.name()
    if size != r.remaining():
        raise r.fail(f"value size {size} but {r.remaining()} bytes follow")
    return Setxattr(**h, flags=flags, setxattr_flags=setxattr_flags, name=name, value=r.take(size))


def _getxattr(r: _Reader, h: _Header, _x: bool) -> Request:
    size, _pad = r.struct(abi.GETXATTR_IN)
    return Getxattr(**h, size=size, name=r.name())


def _listxattr(r: _Reader, h: _Header, _x: bool) -> Request:
    size, _pad = r.struct(abi.GETXATTR_IN)
    return Listxattr(**h, size=size)


def _removexattr(r: _Reader, h: _Header, _x: bool) -> Request:
    return Removexattr(**h, name=r.name())


def _flush(r: _Reader, h: _Header, _x: bool) -> Request:
    fh, _unused, _pad, lock_owner = r.struct(abi.FLUSH_IN)
    return Flush(**h, fh=fh, lock_owner=lock_owner)


def _init(r: _Reader, h: _Header, _x: bool) -> Request:
    if r.remaining() >= abi.INIT_IN.size:
        major, minor, max_readahead, flags, flags2 = r.struct(abi.INIT_IN)
    else:
        # Kernels before 7.36 send only the first four fields.
        major, minor, max_readahead, flags = r.struct(abi.INIT_IN_COMPAT)
        flags2 = 0
    if flags & abi.FUSE_INIT_EXT:
        flags |= flags2 << 32
    return Init(**h, major=major, minor=minor, max_readahead=max_readahead, flags=flags)


def _lk(r: _Reader, h: _Header, _x: bool) -> Request:
    fh, owner, start, end, typ, pid, lk_flags, _pad = r.struct(abi.LK_IN)
    lock = FileLock(start=start, end=end, type=typ, pid=pid)
    return Lk(**h, fh=fh, owner=owner, lock=lock, lk_flags=lk_flags)


def _access(r: _Reader, h: _Header, _x: bool) -> Request:
    mask, _pad = r.struct(abi.ACCESS_IN)
    return Access(**h, mask=mask)


def _create(r: _Reader, h: _Header, _x: bool) -> Request:
    flags, mode, umask, open_flags = r.struct(abi.CREATE_IN)
    return Create(**h, flags=flags, mode=mode, umask=umask, open_flags=open_flags, name=r.name())


def _interrupt(r: _Reader, h: _Header, _x: bool) -> Request:
    (target,) = r.struct(abi.INTERRUPT_IN)
    return Interrupt(**h, target=target)


def _bmap(r: _Reader, h: _Header, _x: bool) -> Request:
    block, blocksize, _pad = r.struct(abi.BMAP_IN)
    return Bmap(**h, block=block, blocksize=blocksize)


def _destroy(r: _Reader, h: _Header, _x: bool) -> Request:
    return Destroy(**h)


def _ioctl(r: _Reader, h: _Header, _x: bool) -> Request:
    fh, flags, cmd, arg, in_size, out_size = r.struct(abi.IOCTL_IN)
    data = r.take(r.remaining())
    return Ioctl(
        **h,
        fh=fh,
        flags=flags,
        cmd=cmd,
        arg=arg,
        in_size=in_size,
        out_size=out_size,
        data=data,
    )


def _poll(r: _Reader, h: _Header, _x: bool) -> Request:
    fh, kh, flags, events = r.struct(abi.POLL_IN)
    return Poll(**h, fh=fh, kh=kh, flags=flags, events=events)


def _notify_reply(r: _Reader, h: _Header, _x: bool) -> Request:
    _d1, offset, size, _d2, _d3, _d4 = r.struct(abi.NOTIFY_RETRIEVE_IN)
    return NotifyReply(**h, offset=offset, data=r.take(min(size, r.remaining())))


def _fallocate(r: _Reader, h: _Header, _x: bool) -> Request:
    fh, offset, length, mode, _pad = r.struct(abi.FALLOCATE_IN)
    return Fallocate(**h, fh=fh, offset=offset, length=length, mode=mode)


def _lseek(r: _Reader, h: _Header, _x: bool) -> Request:
    fh, offset, whence, _pad = r.struct(abi.LSEEK_IN)
    return Lseek(**h, fh=fh, offset=offset, whence=whence)


def _copy_file_range(r: _Reader, h: _Header, _x: bool) -> Request:
    fh_in, off_in, nodeid_out, fh_out, off_out, length, flags = r.struct(abi.COPY_FILE_RANGE_IN)
    return CopyFileRange(
        **h,
        fh_in=fh_in,
        off_in=off_in,
        nodeid_out=nodeid_out,
        fh_out=fh_out,
        off_out=off_out,
        length=length,
        flags=flags,
    )


def _syncfs(r: _Reader, h: _Header, _x: bool) -> Request:
    r.struct(abi.SYNCFS_IN)
    return Syncfs(**h)


_O = abi.Opcode
_PARSERS = {
    _O.LOOKUP: _lookup,
    _O.FORGET: _forget,
    _O.BATCH_FORGET: _batch_forget,
    _O.GETATTR: _getattr,
    _O.SETATTR: _setattr,
    _O.READLINK: _readlink,
    _O.SYMLINK: _symlink,
    _O.MKNOD: _mknod,
    _O.MKDIR: _mkdir,
    _O.UNLINK: _unlink,
    _O.RMDIR: _rmdir,
    _O.RENAME: _rename,
    _O.RENAME2: _rename2,
    _O.LINK: _link,
    _O.OPEN: _open,
    _O.OPENDIR: _open,
    _O.READ: _read,
    _O.READDIR: _read,
    _O.READDIRPLUS: _read,
    _O.WRITE: _write,
    _O.STATFS: _statfs,
    _O.RELEASE: _release,
    _O.RELEASEDIR: _release,
    _O.FSYNC: _fsync,
    _O.FSYNCDIR: _fsync,
    _O.SETXATTR: _setxattr,
    _O.GETXATTR: _getxattr,
    _O.LISTXATTR: _listxattr,
    _O.REMOVEXATTR: _removexattr,
    _O.FLUSH: _flush,
    _O.INIT: _init,
    _O.GETLK: _lk,
    _O.SETLK: _lk,
    _O.SETLKW: _lk,
    _O.ACCESS: _access,
    _O.CREATE: _create,
    _O.TMPFILE: _create,
    _O.INTERRUPT: _interrupt,
    _O.BMAP: _bmap,
    _O.DESTROY: _destroy,
    _O.IOCTL: _ioctl,
    _O.POLL: _poll,
    _O.NOTIFY_REPLY: _notify_reply,
    _O.FALLOCATE: _fallocate,
    _O.LSEEK: _lseek,
    _O.COPY_FILE_RANGE: _copy_file_range,
    _O.SYNCFS: _syncfs,
}
