"""Real kernel mounts of the in-memory file system (root and /dev/fuse needed).

Every access to the mount happens in a worker thread or a subprocess: a syscall on the mount
from the trio thread would wait for a reply that only the trio thread can send.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from dfs.fuse import FuseConfig, FuseSession, is_mounted, serve
from dfs.fuse.mount import Method
from tests.fuse.memfs import HELLO, MemFs

pytestmark = [
    pytest.mark.mount,
    pytest.mark.skipif(
        os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
        reason="needs root and /dev/fuse",
    ),
]

T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await trio.to_thread.run_sync(fn, *args)


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)


async def _exercise(mnt: Path, fs: MemFs, session: FuseSession) -> None:
    ls = await in_thread(run, "ls", "-la", str(mnt))
    assert ls.returncode == 0, ls.stderr
    assert "hello" in ls.stdout and "slow" in ls.stdout

    cat = await in_thread(run, "cat", str(mnt / "hello"))
    assert (cat.returncode, cat.stdout) == (0, HELLO.decode())

    st = await in_thread(run, "stat", "-c", "%s %F %a", str(mnt / "hello"))
    assert st.stdout.strip() == f"{len(HELLO)} regular file 644"

    def os_calls() -> None:
        os.mkdir(mnt / "dir", 0o750)
        fd = os.open(mnt / "dir" / "file", os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            assert os.write(fd, b"x" * 100_000) == 100_000
            assert os.pwrite(fd, b"tail", 200_000) == 4
        finally:
            os.close(fd)
        assert (mnt / "dir" / "file").stat().st_size == 200_004
        with open(mnt / "dir" / "file", "rb") as f:
            data = f.read()
        assert data[:100_000] == b"x" * 100_000 and data[-4:] == b"tail"
        assert sorted(os.listdir(mnt / "dir")) == ["file"]
        os.rename(mnt / "dir" / "file", mnt / "renamed")
        os.truncate(mnt / "renamed", 10)
        assert (mnt / "renamed").stat().st_size == 10
        os.setxattr(mnt / "hello", "user.color", b"blue")
        assert os.getxattr(mnt / "hello", "user.color") == b"blue"
        assert os.listxattr(mnt / "hello") == ["user.color"]
        with pytest.raises(OSError) as info:
            os.getxattr(mnt / "hello", "user.none")
        assert info.value.errno == errno.ENODATA
        os.unlink(mnt / "renamed")
        os.rmdir(mnt / "dir")
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "dir")
        vfs = os.statvfs(mnt)
        assert (vfs.f_blocks, vfs.f_files) == (1000, 100)

    await in_thread(os_calls)

    # The kernel cached the dentry "hello" (lookup above): invalidating it must be accepted.
    assert await session.notify_inval_entry(1, b"hello")
    await session.notify_inval_inode(fs.nodes[1].children[b"hello"])
    stats = session.statistics()
    assert stats.requests["LOOKUP"] >= 1 and stats.in_flight == 0


async def test_hello_fs_and_unmount_on_cancel(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fs = MemFs()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            session = await nursery.start(serve, fs, str(mnt), FuseConfig())
            assert is_mounted(str(mnt))
            await _exercise(mnt, fs, session)
            nursery.cancel_scope.cancel()
    assert not is_mounted(str(mnt))
    assert str(mnt) not in Path("/proc/mounts").read_text()
    assert fs.destroyed


async def test_interrupt_cancels_handler(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fs = MemFs()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            session = await nursery.start(serve, fs, str(mnt), FuseConfig())
            proc = await trio.lowlevel.open_process(["cat", str(mnt / "slow")])
            await fs.slow_read_started.wait()
            proc.send_signal(signal.SIGINT)  # the kernel turns this into FUSE_INTERRUPT
            await fs.slow_read_cancelled.wait()
            assert await proc.wait() != 0
            with trio.fail_after(5):
                while session.statistics().in_flight:
                    await trio.sleep(0.01)
            stats = session.statistics()
            assert stats.requests.get("INTERRUPT", 0) >= 1
            assert stats.errors.get("EINTR", 0) + stats.dropped_replies >= 1
            nursery.cancel_scope.cancel()
    assert not is_mounted(str(mnt))


async def test_external_unmount_ends_serve(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, MemFs(), str(mnt), FuseConfig())
            result = await in_thread(run, "umount", str(mnt))
            assert result.returncode == 0, result.stderr
        # serve returned by itself: the nursery exited without cancellation
    assert not is_mounted(str(mnt))


async def test_sigterm_unmounts(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, MemFs(), str(mnt), FuseConfig())
            os.kill(os.getpid(), signal.SIGTERM)
    assert not is_mounted(str(mnt))


@pytest.mark.skipif(shutil.which("fusermount3") is None, reason="fusermount3 not installed")
async def test_fusermount_path(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    method: Method = "fusermount"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: serve(
                    MemFs(), str(mnt), FuseConfig(), method=method, task_status=task_status
                )
            )
            cat = await in_thread(run, "cat", str(mnt / "hello"))
            assert cat.stdout == HELLO.decode()
            nursery.cancel_scope.cancel()
    assert not is_mounted(str(mnt))


async def test_concurrent_clients(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fs = MemFs()
    payloads = {i: bytes([i]) * (300_000 + i) for i in range(16)}

    def client(i: int) -> None:
        path = mnt / f"f{i}"
        with open(path, "wb") as f:
            f.write(payloads[i])
        with open(path, "rb") as f:
            assert f.read() == payloads[i]
        assert f"f{i}" in os.listdir(mnt)

    def big_write() -> None:
        data = os.urandom(3 * 1024 * 1024 + 17)
        fd = os.open(mnt / "big", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            assert os.write(fd, data) == len(data)
            assert os.pread(fd, len(data) + 10, 0) == data
        finally:
            os.close(fd)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            session = await nursery.start(serve, fs, str(mnt), FuseConfig())
            async with trio.open_nursery() as clients:
                for i in payloads:
                    clients.start_soon(in_thread, client, i)
                clients.start_soon(in_thread, big_write)
            stats = session.statistics()
            # 1 MiB writes: the 3 MiB write arrives in a handful of requests, not 768 pages
            assert stats.requests["WRITE"] < 40
            assert not stats.errors.get("EIO")
            nursery.cancel_scope.cancel()
    assert {bytes(fs.nodes[fs.nodes[1].children[f"f{i}".encode()]].data) for i in payloads} == set(
        payloads.values()
    )
