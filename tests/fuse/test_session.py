"""FuseSession against a fake kernel: a SOCK_SEQPACKET socketpair keeps message boundaries like
/dev/fuse does, so the real read loop, task spawning, INTERRUPT and reply writing run here
without a mount."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
import trio

from dfs.fuse import abi
from dfs.fuse.handshake import FuseConfig
from dfs.fuse.model import FileLock, RequestContext
from dfs.fuse.session import FuseSession, SessionError
from tests.fuse.memfs import MemFs

pytestmark = pytest.mark.unit

INIT_BODY = struct.pack("<IIIII44x", 7, 45, 65536, 0x73FFFFFB, 0x5FD)


class FakeKernel:
    def __init__(self) -> None:
        self.sock, dev = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.setblocking(False)
        self.dev_fd = dev.detach()
        self._unique = 0

    def send(self, opcode: int, body: bytes = b"", *, nodeid: int = 1, unique: int = 0) -> int:
        if not unique:
            self._unique += 2
            unique = self._unique
        length = abi.IN_HEADER.size + len(body)
        self.sock.send(abi.IN_HEADER.pack(length, opcode, unique, nodeid, 0, 0, 77, 0, 0) + body)
        return unique

    def send_raw(self, data: bytes) -> None:
        self.sock.send(data)

    async def recv(self) -> tuple[int, int, bytes]:
        """(unique, errno, body) of the next message from the session."""
        with trio.fail_after(5):
            while True:
                try:
                    msg = self.sock.recv(1 << 21)
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self.sock)
        length, error, unique = abi.OUT_HEADER.unpack_from(msg)
        assert length == len(msg)
        return unique, -error, msg[16:]

    async def assert_silent(self) -> None:
        await trio.sleep(0.05)
        with pytest.raises(BlockingIOError):
            self.sock.recv(1 << 16)


async def test_lookup_forget_and_eof() -> None:
    kernel = FakeKernel()
    fs = MemFs()
    session = FuseSession(kernel.dev_fd, fs)
    async with trio.open_nursery() as nursery:
        kernel.send(abi.Opcode.INIT, INIT_BODY)
        started = await nursery.start(session.run)
        assert started is session and session.conn is not None
        _u, err, body = await kernel.recv()
        assert err == 0 and abi.INIT_OUT.unpack(body)[1] == 38

        u = kernel.send(abi.Opcode.LOOKUP, b"hello\0")
        unique, err, body = await kernel.recv()
        assert (unique, err) == (u, 0)
        ino = abi.ENTRY_OUT_HEAD.unpack_from(body)[0]

        kernel.send(abi.Opcode.FORGET, struct.pack("<Q", 1), nodeid=ino)  # never answered
        u = kernel.send(abi.Opcode.LOOKUP, b"missing\0")
        assert await kernel.recv() == (u, errno.ENOENT, b"")
        await kernel.assert_silent()
        assert fs.forgotten == [(ino, 1)]

        stats = session.statistics()
        assert stats.requests == {"INIT": 1, "LOOKUP": 2, "FORGET": 1}
        assert stats.errors == {"ENOENT": 1}
        kernel.sock.close()
    assert fs.destroyed  # destroy runs when the connection ends
    session.close()


async def test_interrupt_cancels_handler() -> None:
    kernel = FakeKernel()
    fs = MemFs()
    session = FuseSession(kernel.dev_fd, fs)
    async with trio.open_nursery() as nursery:
        kernel.send(abi.Opcode.INIT, INIT_BODY)
        await nursery.start(session.run)
        await kernel.recv()
        slow = fs.nodes[1].children[b"slow"]
        read = struct.pack("<QQIIQII", slow, 0, 4096, 0, 0, 0, 0)
        u = kernel.send(abi.Opcode.READ, read, nodeid=slow)
        await fs.slow_read_started.wait()
        assert session.statistics().in_flight == 1
        kernel.send(abi.Opcode.INTERRUPT, struct.pack("<Q", u), unique=u | 1)
        assert await kernel.recv() == (u, errno.EINTR, b"")
        assert fs.slow_read_cancelled.is_set()
        stats = session.statistics()
        assert stats.interrupts == 1 and stats.in_flight == 0
        kernel.sock.close()
    session.close()


async def test_interrupt_before_request_and_unknown_target() -> None:
    kernel = FakeKernel()
    session = FuseSession(kernel.dev_fd, MemFs())
    async with trio.open_nursery() as nursery:
        kernel.send(abi.Opcode.INIT, INIT_BODY)
        await nursery.start(session.run)
        await kernel.recv()
        kernel.send(abi.Opcode.INTERRUPT, struct.pack("<Q", 1000), unique=1001)
        kernel.send(abi.Opcode.INTERRUPT, struct.pack("<Q", 5000), unique=5001)  # never comes
        await kernel.assert_silent()  # INTERRUPT is never answered
        kernel.send(abi.Opcode.LOOKUP, b"hello\0", unique=1000)
        assert await kernel.recv() == (1000, errno.EINTR, b"")
        kernel.sock.close()
    session.close()


async def test_malformed_requests() -> None:
    kernel = FakeKernel()
    session = FuseSession(kernel.dev_fd, MemFs())
    async with trio.open_nursery() as nursery:
        kernel.send(abi.Opcode.INIT, INIT_BODY)
        await nursery.start(session.run)
        await kernel.recv()
        kernel.send_raw(b"\x01\x02\x03")  # not even a header: dropped
        u = kernel.send(abi.Opcode.LOOKUP, b"no-nul")  # header ok: answered EIO
        assert await kernel.recv() == (u, errno.EIO, b"")
        kernel.send(abi.Opcode.FORGET, b"")  # malformed FORGET: never answered
        await kernel.assert_silent()
        assert session.statistics().malformed == 3
        kernel.sock.close()
    session.close()


async def test_destroy_ends_session() -> None:
    kernel = FakeKernel()
    fs = MemFs()
    session = FuseSession(kernel.dev_fd, fs)
    async with trio.open_nursery() as nursery:
        kernel.send(abi.Opcode.INIT, INIT_BODY)
        await nursery.start(session.run)
        await kernel.recv()
        u = kernel.send(abi.Opcode.DESTROY)
        assert await kernel.recv() == (u, 0, b"")
        with trio.fail_after(5):
            await session.wait_finished()
    assert fs.destroyed
    session.close()


async def test_eof_before_init_is_session_error() -> None:
    kernel = FakeKernel()
    session = FuseSession(kernel.dev_fd, MemFs())
    kernel.sock.close()
    with pytest.raises(SessionError, match="before INIT"):
        await session.run()
    session.close()


async def test_refused_init_ends_session() -> None:
    kernel = FakeKernel()
    session = FuseSession(kernel.dev_fd, MemFs())
    kernel.send(abi.Opcode.INIT, struct.pack("<IIII", 7, 5, 0, 0))  # 7.5: too old
    with pytest.raises(SessionError):
        await session.run()
    _u, err, _body = await kernel.recv()
    assert err == errno.EPROTO
    session.close()


class BlockingLocks(MemFs):
    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0
        self.unblock = trio.Event()

    async def getlk(
        self, ctx: RequestContext, ino: int, fh: int, owner: int, lock: FileLock
    ) -> FileLock:
        return lock

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
        self.waiting += 1
        await self.unblock.wait()


async def test_lock_waits_do_not_use_handler_slots() -> None:
    kernel = FakeKernel()
    fs = BlockingLocks()
    session = FuseSession(kernel.dev_fd, fs, FuseConfig(max_concurrency=1))
    async with trio.open_nursery() as nursery:
        kernel.send(abi.Opcode.INIT, INIT_BODY)
        await nursery.start(session.run)
        _u, _e, body = await kernel.recv()
        assert abi.INIT_OUT.unpack(body)[3] & abi.FUSE_POSIX_LOCKS
        lk = struct.pack("<QQQQIIII", 1, 9, 0, 10, abi.F_WRLCK, 1, 0, 0)
        waits = [kernel.send(abi.Opcode.SETLKW, lk, nodeid=2) for _ in range(3)]
        u = kernel.send(abi.Opcode.LOOKUP, b"hello\0")
        unique, err, _body = await kernel.recv()
        assert (unique, err) == (u, 0)  # served although 3 lock waits are pending
        assert fs.waiting == 3
        fs.unblock.set()
        answered = {(await kernel.recv())[:2] for _ in waits}
        assert answered == {(w, 0) for w in waits}
        kernel.sock.close()
    session.close()


async def test_notify_messages_reach_the_channel() -> None:
    kernel = FakeKernel()
    session = FuseSession(kernel.dev_fd, MemFs())
    assert not await session.notify_inval_inode(1)  # before INIT: nothing is sent
    async with trio.open_nursery() as nursery:
        kernel.send(abi.Opcode.INIT, INIT_BODY)
        await nursery.start(session.run)
        await kernel.recv()
        assert await session.notify_inval_entry(1, b"hello")
        unique, code, body = await kernel.recv()
        assert unique == 0 and -code == abi.NotifyCode.INVAL_ENTRY
        assert body == struct.pack("<QII", 1, 5, 0) + b"hello\0"
        assert await session.notify_inval_inode(2, 0, 0)
        unique, code, body = await kernel.recv()
        assert -code == abi.NotifyCode.INVAL_INODE
        assert body == struct.pack("<Qqq", 2, 0, 0)
        kernel.sock.close()
    session.close()
    assert not await session.notify_inval_inode(1)  # after the end: nothing is sent


async def test_a_slow_request_is_logged_and_shows_in_a_task_dump(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unanswered request is logged once as slow, and a task dump (kill -USR1) names it
    and shows the file-system frame it waits in."""
    from dfs.fuse import session as session_mod
    from dfs.observability.taskdump import format_task_tree

    monkeypatch.setattr(session_mod, "SLOW_REQUEST", 0.3)
    kernel = FakeKernel()
    fs = MemFs()
    session = FuseSession(kernel.dev_fd, fs)
    async with trio.open_nursery() as nursery:
        kernel.send(abi.Opcode.INIT, INIT_BODY)
        await nursery.start(session.run)
        await kernel.recv()
        slow = fs.nodes[1].children[b"slow"]
        read = struct.pack("<QQIIQII", slow, 0, 4096, 0, 0, 0, 0)
        u = kernel.send(abi.Opcode.READ, read, nodeid=slow)
        await fs.slow_read_started.wait()
        with trio.fail_after(5):
            while "slow request" not in caplog.text:
                await trio.sleep(0.05)
        assert f"slow request: READ #{u} on node {slow}" in caplog.text
        dump = format_task_tree()
        assert f"(READ #{u} nodeid {slow}," in dump
        assert "memfs.py" in dump and " read" in dump
        await trio.sleep(0.5)
        assert caplog.text.count("slow request") == 1  # once per request
        kernel.send(abi.Opcode.INTERRUPT, struct.pack("<Q", u), unique=u | 1)
        assert await kernel.recv() == (u, errno.EINTR, b"")
        assert f"READ #{u}" not in format_task_tree()
        kernel.sock.close()
    session.close()
