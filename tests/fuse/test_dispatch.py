"""Dispatcher: INIT negotiation, routing to Operations, the reply obligation, xattr sizes."""

from __future__ import annotations

import errno
import logging
import stat
import struct
from typing import Any

import pytest

from dfs.fuse import abi, replies
from dfs.fuse import requests as rq
from dfs.fuse.dispatch import Dispatcher
from dfs.fuse.errors import FuseError
from dfs.fuse.handshake import FuseConfig
from dfs.fuse.model import Attr, ConnectionInfo, Entry, FileLock, RequestContext
from dfs.fuse.operations import Operations
from tests.fuse.memfs import HELLO, MemFs

pytestmark = pytest.mark.unit

KERNEL_FLAGS = 0x73FFFFFB | (0x5FD << 32)  # what a 6.18 kernel offers (see test_requests)
_unique = iter(range(100, 10**6))


def hdr(opcode: int, nodeid: int = 1) -> dict[str, Any]:
    return {
        "opcode": opcode,
        "unique": next(_unique),
        "nodeid": nodeid,
        "uid": 0,
        "gid": 0,
        "pid": 1,
    }


def init_req(minor: int = 45, flags: int = KERNEL_FLAGS, major: int = 7) -> rq.Init:
    return rq.Init(
        **hdr(abi.Opcode.INIT), major=major, minor=minor, max_readahead=65536, flags=flags
    )


def status(msg: bytes | None) -> int:
    assert msg is not None
    length, error, _unique = abi.OUT_HEADER.unpack_from(msg)
    assert length == len(msg)
    return -int(error)


def body(msg: bytes | None) -> bytes:
    assert msg is not None and status(msg) == 0
    return msg[16:]


async def ready(ops: Operations, config: FuseConfig | None = None) -> Dispatcher:
    d = Dispatcher(ops, config or FuseConfig())
    assert status(await d.dispatch(init_req())) == 0
    return d


class LockingOps(Operations):
    def __init__(self) -> None:
        self.conn: ConnectionInfo | None = None

    async def init(self, conn: ConnectionInfo) -> None:
        self.conn = conn

    async def getlk(
        self, ctx: RequestContext, ino: int, fh: int, owner: int, lock: FileLock
    ) -> FileLock:
        return FileLock(lock.start, lock.end, abi.F_UNLCK, 0)

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
        return None


async def test_init_negotiation_defaults() -> None:
    d = Dispatcher(MemFs(), FuseConfig())
    msg = await d.dispatch(init_req())
    fields = abi.INIT_OUT.unpack(body(msg))
    major, minor, readahead, flags, max_bg, congestion, max_write, gran, max_pages, _a, flags2 = (
        fields
    )
    assert (major, minor, readahead) == (7, 38, 65536)
    assert (max_bg, congestion, max_write, gran, max_pages) == (64, 48, 1 << 20, 1, 256)
    for wanted in (
        abi.FUSE_ASYNC_READ,
        abi.FUSE_BIG_WRITES,
        abi.FUSE_PARALLEL_DIROPS,
        abi.FUSE_DO_READDIRPLUS,
        abi.FUSE_READDIRPLUS_AUTO,
        abi.FUSE_ASYNC_DIO,
        abi.FUSE_AUTO_INVAL_DATA,
        abi.FUSE_EXPORT_SUPPORT,
        abi.FUSE_INIT_EXT,
        abi.FUSE_MAX_PAGES,
    ):
        assert flags & wanted, hex(wanted)
    for unwanted in (
        abi.FUSE_POSIX_LOCKS,
        abi.FUSE_FLOCK_LOCKS,
        abi.FUSE_WRITEBACK_CACHE,
        abi.FUSE_POSIX_ACL,
        abi.FUSE_DONT_MASK,
        abi.FUSE_SETXATTR_EXT,
    ):
        assert not flags & unwanted, hex(unwanted)
    assert flags2 == 0
    assert d.conn is not None and d.conn.proto_minor == 38


async def test_init_lock_flags_only_when_overridden() -> None:
    ops = LockingOps()
    d = Dispatcher(ops, FuseConfig(writeback_cache=True, posix_acl=True, auto_inval_data=False))
    flags = abi.INIT_OUT.unpack(body(await d.dispatch(init_req())))[3]
    assert flags & abi.FUSE_POSIX_LOCKS and flags & abi.FUSE_FLOCK_LOCKS
    assert flags & abi.FUSE_WRITEBACK_CACHE and flags & abi.FUSE_POSIX_ACL
    # The file system applies the umask (or a default ACL instead of it).
    assert flags & abi.FUSE_DONT_MASK
    assert not flags & abi.FUSE_AUTO_INVAL_DATA
    assert ops.conn is not None and ops.conn.flags == flags


async def test_init_intersects_with_kernel_offer() -> None:
    d = Dispatcher(LockingOps(), FuseConfig())
    offered = abi.FUSE_ASYNC_READ | abi.FUSE_POSIX_LOCKS  # an old kernel without INIT_EXT
    fields = abi.INIT_OUT.unpack(body(await d.dispatch(init_req(minor=30, flags=offered))))
    assert fields[1] == 30  # the kernel's older minor wins
    assert fields[3] == offered
    assert fields[8] == 0  # no FUSE_MAX_PAGES -> max_pages unset
    assert fields[6] == 32 * 4096  # and max_write capped to what the kernel will do


async def test_init_version_mismatch() -> None:
    d = Dispatcher(MemFs(), FuseConfig())
    msg = await d.dispatch(init_req(major=8))
    assert abi.INIT_OUT_COMPAT.unpack(body(msg)) == (7, 38)
    assert d.conn is None
    assert status(await d.dispatch(init_req(minor=5))) == errno.EPROTO
    assert d.conn is None


async def test_request_before_init_is_eio() -> None:
    d = Dispatcher(MemFs(), FuseConfig())
    assert status(await d.dispatch(rq.Lookup(**hdr(abi.Opcode.LOOKUP), name=b"x"))) == errno.EIO


async def test_defaults_answer_enosys() -> None:
    d = await ready(Operations())
    for req in (
        rq.Lookup(**hdr(abi.Opcode.LOOKUP), name=b"x"),
        rq.Getattr(**hdr(abi.Opcode.GETATTR), getattr_flags=0, fh=None),
        rq.Open(**hdr(abi.Opcode.OPENDIR), flags=0, open_flags=0),
        rq.Access(**hdr(abi.Opcode.ACCESS), mask=4),
        rq.UnknownRequest(**hdr(9999), body=b""),
        rq.Ioctl(
            **hdr(abi.Opcode.IOCTL), fh=0, flags=0, cmd=0, arg=0, in_size=0, out_size=0, data=b""
        ),
    ):
        assert status(await d.dispatch(req)) == errno.ENOSYS
    # init/forget/destroy have no-op defaults
    assert await d.dispatch(rq.Forget(**hdr(abi.Opcode.FORGET), nlookup=1)) is None
    assert status(await d.dispatch(rq.Destroy(**hdr(abi.Opcode.DESTROY)))) == 0


class Broken(Operations):
    async def lookup(self, ctx: RequestContext, parent: int, name: bytes) -> Entry:
        if name == b"boom":
            raise RuntimeError("boom")
        if name == b"denied":
            raise FuseError(errno.EACCES)
        return "not an entry"  # type: ignore[return-value]

    async def forget(self, items: list[tuple[int, int]]) -> None:
        raise RuntimeError("forget failed")

    async def read(self, ctx: RequestContext, ino: int, fh: int, offset: int, size: int) -> bytes:
        return b"x" * (size + 1)


async def test_handler_failures_become_eio_and_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = await ready(Broken())
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="dfs.fuse.dispatch"):
        assert status(await d.dispatch(rq.Lookup(**hdr(abi.Opcode.LOOKUP), name=b"boom"))) == 5
    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is not None
    assert "LOOKUP" in caplog.records[0].getMessage()

    caplog.clear()
    assert status(await d.dispatch(rq.Lookup(**hdr(abi.Opcode.LOOKUP), name=b"denied"))) == 13
    assert not caplog.records  # a FuseError is an answer, not a bug

    for req in (
        rq.Lookup(**hdr(abi.Opcode.LOOKUP), name=b"other"),  # wrong return type
        rq.Read(
            **hdr(abi.Opcode.READ), fh=0, offset=0, size=10, read_flags=0, lock_owner=0, flags=0
        ),  # too much data
    ):
        caplog.clear()
        assert status(await d.dispatch(req)) == errno.EIO
        assert len(caplog.records) == 1

    caplog.clear()
    assert await d.dispatch(rq.Forget(**hdr(abi.Opcode.FORGET), nlookup=1)) is None
    assert len(caplog.records) == 1  # logged, never answered


async def test_memfs_roundtrip_through_dispatcher() -> None:
    fs = MemFs()
    d = await ready(fs)
    entry = body(await d.dispatch(rq.Lookup(**hdr(abi.Opcode.LOOKUP), name=b"hello")))
    ino = abi.ENTRY_OUT_HEAD.unpack_from(entry)[0]
    assert fs.lookups[ino] == 1
    attr = abi.ATTR.unpack_from(entry, 40)
    assert attr[1] == len(HELLO) and attr[9] == stat.S_IFREG | 0o644

    read = rq.Read(
        **hdr(abi.Opcode.READ, ino), fh=ino, offset=6, size=100, read_flags=0, lock_owner=0, flags=0
    )
    assert body(await d.dispatch(read)) == b"world\n"

    write = rq.Write(
        **hdr(abi.Opcode.WRITE, ino),
        fh=ino,
        offset=0,
        write_flags=0,
        lock_owner=0,
        flags=0,
        data=b"HELLO",
    )
    assert struct.unpack("<II", body(await d.dispatch(write))) == (5, 0)
    assert bytes(fs.nodes[ino].data) == b"HELLO world\n"

    batch = rq.BatchForget(**hdr(abi.Opcode.BATCH_FORGET, 0), items=((ino, 1),))
    assert await d.dispatch(batch) is None
    assert fs.lookups[ino] == 0


async def test_getxattr_size_protocol() -> None:
    fs = MemFs()
    d = await ready(fs)
    fs.nodes[2].xattrs[b"user.k"] = b"value!"

    def get(size: int) -> rq.Getxattr:
        return rq.Getxattr(**hdr(abi.Opcode.GETXATTR, 2), size=size, name=b"user.k")

    assert struct.unpack("<II", body(await d.dispatch(get(0)))) == (6, 0)  # length query
    assert status(await d.dispatch(get(5))) == errno.ERANGE  # buffer too small
    assert body(await d.dispatch(get(6))) == b"value!"
    assert body(await d.dispatch(get(4096))) == b"value!"
    missing = rq.Getxattr(**hdr(abi.Opcode.GETXATTR, 2), size=10, name=b"user.none")
    assert status(await d.dispatch(missing)) == errno.ENODATA


async def test_listxattr_size_protocol() -> None:
    fs = MemFs()
    d = await ready(fs)
    fs.nodes[2].xattrs.update({b"user.a": b"1", b"user.bb": b"2"})
    names = b"user.a\0user.bb\0"

    def lst(size: int) -> rq.Listxattr:
        return rq.Listxattr(**hdr(abi.Opcode.LISTXATTR, 2), size=size)

    assert struct.unpack("<II", body(await d.dispatch(lst(0)))) == (len(names), 0)
    assert status(await d.dispatch(lst(len(names) - 1))) == errno.ERANGE
    assert body(await d.dispatch(lst(len(names)))) == names


async def test_readdir_respects_size() -> None:
    fs = MemFs()
    d = await ready(fs)
    req = rq.Read(
        **hdr(abi.Opcode.READDIR), fh=0, offset=0, size=64, read_flags=0, lock_owner=0, flags=0
    )
    raw = body(await d.dispatch(req))
    assert len(raw) == 64  # "." and ".." fit, "hello" does not
    assert struct.unpack_from("<QQII", raw, 32)[1] == 2  # next cookie of ".."
    req2 = rq.Read(
        **hdr(abi.Opcode.READDIR), fh=0, offset=2, size=4096, read_flags=0, lock_owner=0, flags=0
    )
    raw2 = body(await d.dispatch(req2))
    assert raw2[24:29] == b"hello"

    plus = rq.Read(
        **hdr(abi.Opcode.READDIRPLUS),
        fh=0,
        offset=0,
        size=4096,
        read_flags=0,
        lock_owner=0,
        flags=0,
    )
    raw3 = body(await d.dispatch(plus))
    assert len(raw3) == 4 * 160  # ".", "..", "hello", "slow": each 152 + name -> 160
    # lookups counted for "hello" and "slow" only, not for "." and ".."
    assert fs.lookups == {2: 1, 3: 1}


class ReleaseRecorder(Operations):
    def __init__(self) -> None:
        self.calls: list[tuple[int | None, bool]] = []

    async def release(
        self,
        ctx: RequestContext,
        ino: int,
        fh: int,
        flags: int,
        lock_owner: int | None,
        flush: bool,
    ) -> None:
        self.calls.append((lock_owner, flush))


async def test_release_lock_owner_only_with_flock_unlock() -> None:
    ops = ReleaseRecorder()
    d = await ready(ops)
    for rflags in (0, abi.FUSE_RELEASE_FLOCK_UNLOCK, abi.FUSE_RELEASE_FLUSH):
        req = rq.Release(
            **hdr(abi.Opcode.RELEASE), fh=1, flags=0, release_flags=rflags, lock_owner=0x77
        )
        assert status(await d.dispatch(req)) == 0
    assert ops.calls == [(None, False), (0x77, False), (None, True)]


async def test_getlk_setlk_routing() -> None:
    d = await ready(LockingOps())
    lock = FileLock(0, 10, abi.F_WRLCK, 5)
    getlk = rq.Lk(**hdr(abi.Opcode.GETLK), fh=1, owner=2, lock=lock, lk_flags=0)
    assert struct.unpack("<QQII", body(await d.dispatch(getlk))) == (0, 10, abi.F_UNLCK, 0)
    setlk = rq.Lk(**hdr(abi.Opcode.SETLK), fh=1, owner=2, lock=lock, lk_flags=0)
    assert body(await d.dispatch(setlk)) == b""


async def test_destroy_runs_once() -> None:
    fs = MemFs()
    d = await ready(fs)
    assert status(await d.dispatch(rq.Destroy(**hdr(abi.Opcode.DESTROY)))) == 0
    assert fs.destroyed
    fs.destroyed = False
    await d.run_destroy()
    assert not fs.destroyed


def test_attr_helper_sanity() -> None:
    # Entry.ino mirrors attr.ino (negative entries use ino 0)
    attr = Attr(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert Entry(attr).ino == 0
    assert replies.entry_reply(1, Entry(attr))[16:24] == b"\0" * 8
