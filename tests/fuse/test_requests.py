"""Parser tests: raw kernel bytes (annotated per field) in, typed requests out."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dfs.fuse import abi
from dfs.fuse import requests as rq
from dfs.fuse.errors import MalformedRequest
from dfs.fuse.model import FileLock

pytestmark = pytest.mark.unit


def header(opcode: int, body: bytes, *, unique: int = 7, nodeid: int = 1, extlen: int = 0) -> bytes:
    """fuse_in_header for a body, uid 1000, gid 100, pid 4242."""
    length = abi.IN_HEADER.size + len(body)
    return abi.IN_HEADER.pack(length, opcode, unique, nodeid, 1000, 100, 4242, extlen, 0) + body


# A LOOKUP of "hello" in the root directory, byte by byte.
RAW_LOOKUP = (
    b"\x2e\x00\x00\x00"  # len = 46 (40-byte header + "hello\0")
    b"\x01\x00\x00\x00"  # opcode = 1 (FUSE_LOOKUP)
    b"\x04\x00\x00\x00\x00\x00\x00\x00"  # unique = 4
    b"\x01\x00\x00\x00\x00\x00\x00\x00"  # nodeid = 1 (FUSE_ROOT_ID)
    b"\xe8\x03\x00\x00"  # uid = 1000
    b"\x64\x00\x00\x00"  # gid = 100
    b"\x39\x30\x00\x00"  # pid = 12345
    b"\x00\x00"  # total_extlen = 0
    b"\x00\x00"  # padding
    b"hello\x00"  # name, NUL-terminated
)

# The INIT request a 6.18 kernel sent on this machine (captured from /dev/fuse).
RAW_INIT = (
    b"\x68\x00\x00\x00"  # len = 104 (header + 64-byte fuse_init_in)
    b"\x1a\x00\x00\x00"  # opcode = 26 (FUSE_INIT)
    b"\x02\x00\x00\x00\x00\x00\x00\x00"  # unique = 2
    b"\x00\x00\x00\x00\x00\x00\x00\x00"  # nodeid = 0
    b"\x00\x00\x00\x00"  # uid = 0
    b"\x00\x00\x00\x00"  # gid = 0
    b"\x00\x00\x00\x00"  # pid = 0
    b"\x00\x00"  # total_extlen
    b"\x00\x00"  # padding
    b"\x07\x00\x00\x00"  # major = 7
    b"\x2d\x00\x00\x00"  # minor = 45
    b"\x00\x00\x02\x00"  # max_readahead = 131072
    b"\xfb\xff\xff\x73"  # flags = 0x73fffffb (INIT_EXT set, POSIX_ACL... offered)
    b"\xfd\x05\x00\x00" + b"\x00" * 44  # flags2 = 0x5fd (bits 32.. of the 64-bit set)  # unused[11]
)

# GETATTR of the root from `stat`, also captured.
RAW_GETATTR = (
    b"\x38\x00\x00\x00"  # len = 56
    b"\x03\x00\x00\x00"  # opcode = 3 (FUSE_GETATTR)
    b"\x04\x00\x00\x00\x00\x00\x00\x00"  # unique = 4
    b"\x01\x00\x00\x00\x00\x00\x00\x00"  # nodeid = 1
    b"\x00\x00\x00\x00"  # uid = 0
    b"\x00\x00\x00\x00"  # gid = 0
    b"\x5f\x1c\x00\x00"  # pid = 7263
    b"\x00\x00\x00\x00"  # total_extlen, padding
    b"\x00\x00\x00\x00"  # getattr_flags = 0 (no FUSE_GETATTR_FH)
    b"\x00\x00\x00\x00"  # dummy
    b"\x00\x00\x00\x00\x00\x00\x00\x00"  # fh (not valid)
)


def test_raw_lookup() -> None:
    req = rq.parse_request(RAW_LOOKUP)
    assert req == rq.Lookup(
        opcode=abi.Opcode.LOOKUP, unique=4, nodeid=1, uid=1000, gid=100, pid=12345, name=b"hello"
    )


def test_raw_init_combines_flags2() -> None:
    req = rq.parse_request(RAW_INIT)
    assert isinstance(req, rq.Init)
    assert (req.major, req.minor, req.max_readahead) == (7, 45, 131072)
    assert req.flags == 0x73FFFFFB | (0x5FD << 32)
    assert req.flags & abi.FUSE_SECURITY_CTX


def test_init_without_init_ext_ignores_flags2() -> None:
    body = struct.pack("<IIIII44x", 7, 38, 4096, abi.FUSE_ASYNC_READ, 0xFFFF)
    req = rq.parse_request(header(abi.Opcode.INIT, body))
    assert isinstance(req, rq.Init)
    assert req.flags == abi.FUSE_ASYNC_READ


def test_init_compat_16_bytes() -> None:
    body = struct.pack("<IIII", 7, 31, 65536, abi.FUSE_ASYNC_READ)  # pre-7.36 kernels
    req = rq.parse_request(header(abi.Opcode.INIT, body))
    assert isinstance(req, rq.Init)
    assert (req.minor, req.max_readahead, req.flags) == (31, 65536, abi.FUSE_ASYNC_READ)


def test_raw_getattr() -> None:
    req = rq.parse_request(RAW_GETATTR)
    assert isinstance(req, rq.Getattr)
    assert (req.unique, req.nodeid, req.pid, req.fh) == (4, 1, 7263, None)


def test_getattr_with_fh() -> None:
    body = struct.pack("<IIQ", abi.FUSE_GETATTR_FH, 0, 99)  # flags, dummy, fh
    req = rq.parse_request(header(abi.Opcode.GETATTR, body))
    assert isinstance(req, rq.Getattr)
    assert req.fh == 99


def test_setattr_changes() -> None:
    valid = abi.FATTR_SIZE | abi.FATTR_MTIME | abi.FATTR_ATIME | abi.FATTR_ATIME_NOW | abi.FATTR_FH
    body = struct.pack(
        "<IIQQQqqqIIIIIIII",
        valid,  # valid
        0,  # padding
        5,  # fh
        1234,  # size
        0,  # lock_owner
        111,  # atime (ignored: ATIME_NOW)
        1_700_000_000,  # mtime seconds
        0,  # ctime
        0,  # atimensec
        500,  # mtimensec
        0,  # ctimensec
        0o100644,  # mode (not valid)
        0,  # unused4
        1,  # uid (not valid)
        2,  # gid (not valid)
        0,  # unused5
    )
    req = rq.parse_request(header(abi.Opcode.SETATTR, body, nodeid=9))
    assert isinstance(req, rq.Setattr)
    c = req.changes
    assert (c.size, c.fh, c.mode, c.uid, c.gid) == (1234, 5, None, None, None)
    assert c.mtime_ns == 1_700_000_000 * 10**9 + 500
    assert c.atime_now and c.atime_ns is None and not c.mtime_now
    assert req.lock_owner is None


def test_names_ops() -> None:
    req = rq.parse_request(header(abi.Opcode.MKDIR, struct.pack("<II", 0o755, 0o022) + b"d\0"))
    assert isinstance(req, rq.Mkdir)
    assert (req.mode, req.umask, req.name) == (0o755, 0o022, b"d")

    req = rq.parse_request(header(abi.Opcode.SYMLINK, b"link\0/target/path\0"))
    assert isinstance(req, rq.Symlink)
    assert (req.name, req.target) == (b"link", b"/target/path")

    body = struct.pack("<Q", 5) + b"a\0b\0"  # fuse_rename_in.newdir = 5
    req = rq.parse_request(header(abi.Opcode.RENAME, body))
    assert isinstance(req, rq.Rename)
    assert (req.newdir, req.flags, req.name, req.newname) == (5, 0, b"a", b"b")

    body = struct.pack("<QII", 6, abi.RENAME_NOREPLACE, 0) + b"x\0y\0"  # newdir flags padding
    req = rq.parse_request(header(abi.Opcode.RENAME2, body))
    assert isinstance(req, rq.Rename)
    assert (req.newdir, req.flags, req.name, req.newname) == (6, abi.RENAME_NOREPLACE, b"x", b"y")

    body = struct.pack("<IIII", 0o100600, 0, 0o022, 0) + b"node\0"  # mode rdev umask padding
    req = rq.parse_request(header(abi.Opcode.MKNOD, body))
    assert isinstance(req, rq.Mknod)
    assert (req.mode, req.umask, req.name) == (0o100600, 0o022, b"node")

    body = struct.pack("<IIII", 0o101, 0o644, 0o022, 0) + b"f\0"  # flags mode umask open_flags
    req = rq.parse_request(header(abi.Opcode.CREATE, body))
    assert isinstance(req, rq.Create)
    assert (req.flags, req.mode, req.umask, req.name) == (0o101, 0o644, 0o022, b"f")

    req = rq.parse_request(header(abi.Opcode.LINK, struct.pack("<Q", 3) + b"hard\0", nodeid=1))
    assert isinstance(req, rq.Link)
    assert (req.oldnodeid, req.nodeid, req.newname) == (3, 1, b"hard")


def test_read_write() -> None:
    # fh offset size read_flags lock_owner flags padding
    body = struct.pack("<QQIIQII", 3, 4096, 8192, 0, 0, 0o2, 0)
    req = rq.parse_request(header(abi.Opcode.READ, body))
    assert isinstance(req, rq.Read)
    assert (req.fh, req.offset, req.size, req.flags) == (3, 4096, 8192, 0o2)

    data = b"payload"
    body = struct.pack("<QQIIQII", 3, 10, len(data), abi.FUSE_WRITE_CACHE, 0, 0, 0) + data
    req = rq.parse_request(header(abi.Opcode.WRITE, body))
    assert isinstance(req, rq.Write)
    assert (req.offset, req.data, req.write_flags) == (10, data, abi.FUSE_WRITE_CACHE)


def test_write_size_mismatch_is_malformed() -> None:
    body = struct.pack("<QQIIQII", 3, 0, 100, 0, 0, 0, 0) + b"short"
    with pytest.raises(MalformedRequest) as info:
        rq.parse_request(header(abi.Opcode.WRITE, body, unique=77))
    assert info.value.unique == 77


def test_xattr_requests() -> None:
    # compat fuse_setxattr_in (size, flags), then name and value
    req = rq.parse_request(header(abi.Opcode.SETXATTR, struct.pack("<II", 3, 1) + b"user.a\0abc"))
    assert isinstance(req, rq.Setxattr)
    assert (req.name, req.value, req.flags, req.setxattr_flags) == (b"user.a", b"abc", 1, 0)

    body = struct.pack("<IIII", 2, 0, abi.FUSE_SETXATTR_ACL_KILL_SGID, 0) + b"user.b\0xy"
    req = rq.parse_request(header(abi.Opcode.SETXATTR, body), setxattr_ext=True)
    assert isinstance(req, rq.Setxattr)
    assert (req.name, req.value, req.setxattr_flags) == (b"user.b", b"xy", 1)

    req = rq.parse_request(header(abi.Opcode.GETXATTR, struct.pack("<II", 0, 0) + b"user.a\0"))
    assert isinstance(req, rq.Getxattr)
    assert (req.size, req.name) == (0, b"user.a")

    req = rq.parse_request(header(abi.Opcode.LISTXATTR, struct.pack("<II", 64, 0)))
    assert isinstance(req, rq.Listxattr)
    assert req.size == 64


def test_locks() -> None:
    # fh owner start end type pid lk_flags padding
    body = struct.pack("<QQQQIIII", 4, 0xABC, 0, abi.OFFSET_MAX, abi.F_WRLCK, 99, 1, 0)
    req = rq.parse_request(header(abi.Opcode.SETLKW, body))
    assert isinstance(req, rq.Lk)
    assert req.sleep and req.is_flock
    assert req.lock == FileLock(start=0, end=abi.OFFSET_MAX, type=abi.F_WRLCK, pid=99)
    assert req.owner == 0xABC


def test_forgets() -> None:
    req = rq.parse_request(header(abi.Opcode.FORGET, struct.pack("<Q", 3), nodeid=12))
    assert isinstance(req, rq.Forget)
    assert (req.nodeid, req.nlookup) == (12, 3)

    body = struct.pack("<II", 2, 0) + struct.pack("<QQQQ", 5, 1, 6, 2)  # count, dummy, 2 items
    req = rq.parse_request(header(abi.Opcode.BATCH_FORGET, body))
    assert isinstance(req, rq.BatchForget)
    assert req.items == ((5, 1), (6, 2))

    with pytest.raises(MalformedRequest):
        rq.parse_request(header(abi.Opcode.BATCH_FORGET, struct.pack("<II", 1000, 0)))


def test_interrupt_release_fsync() -> None:
    req = rq.parse_request(header(abi.Opcode.INTERRUPT, struct.pack("<Q", 42), unique=43))
    assert isinstance(req, rq.Interrupt)
    assert req.target == 42

    body = struct.pack("<QIIQ", 8, 0o2, abi.FUSE_RELEASE_FLOCK_UNLOCK, 0x55)
    req = rq.parse_request(header(abi.Opcode.RELEASE, body))
    assert isinstance(req, rq.Release)
    assert (req.fh, req.flags, req.release_flags, req.lock_owner) == (8, 0o2, 2, 0x55)

    req = rq.parse_request(header(abi.Opcode.FSYNCDIR, struct.pack("<QII", 8, 1, 0)))
    assert isinstance(req, rq.Fsync)
    assert (req.opcode, req.fsync_flags) == (abi.Opcode.FSYNCDIR, 1)


def test_extensions_are_stripped() -> None:
    ext = b"\x08\x00\x00\x00\x01\x00\x00\x00"  # one 8-byte fuse_ext_header
    req = rq.parse_request(header(abi.Opcode.LOOKUP, b"n\0\0\0\0\0\0\0" + ext, extlen=1))
    assert isinstance(req, rq.Lookup)
    assert req.name == b"n"


def test_unknown_opcode_is_not_malformed() -> None:
    req = rq.parse_request(header(9999, b"abc"))
    assert isinstance(req, rq.UnknownRequest)
    assert req.body == b"abc"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        RAW_LOOKUP[:39],  # shorter than the header
        RAW_LOOKUP[:-1],  # len field says 46, 45 bytes read
        RAW_LOOKUP + b"x",  # trailing byte beyond len
        RAW_LOOKUP[:-1] + b"x",  # name without NUL
        header(abi.Opcode.LOOKUP, b"\0"),  # empty name
        header(abi.Opcode.GETATTR, b"\0" * 8),  # fuse_getattr_in truncated
        header(abi.Opcode.LOOKUP, b"a\0", extlen=9),  # extensions longer than the request
        header(abi.Opcode.SETXATTR, struct.pack("<II", 10, 0) + b"user.a\0abc"),  # size > value
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(MalformedRequest):
        rq.parse_request(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_malformed(data: bytes) -> None:
    try:
        req = rq.parse_request(data)
    except MalformedRequest as exc:
        assert exc.reason
        return
    assert isinstance(req, rq.Request)


@settings(max_examples=400, deadline=None)
@given(
    opcode=st.sampled_from([int(op) for op in abi.Opcode]),
    body=st.binary(max_size=200),
    extlen=st.integers(0, 3),
    ext=st.booleans(),
)
def test_random_bodies_with_valid_headers(opcode: int, body: bytes, extlen: int, ext: bool) -> None:
    try:
        req = rq.parse_request(header(opcode, body, extlen=extlen), setxattr_ext=ext)
    except MalformedRequest as exc:
        assert exc.unique == 7
        return
    assert req.opcode == opcode and req.unique == 7
