"""Mounting and unmounting a FUSE file system, and ``serve()`` that ties it all together.

As root we open /dev/fuse and call mount(2) ourselves; otherwise the setuid helper
``fusermount3`` mounts and hands the /dev/fuse descriptor back over a unix socket
(``_FUSE_COMMFD`` protocol, descriptor passed with SCM_RIGHTS).  These calls block: from trio,
run them with ``trio.to_thread.run_sync`` (``serve`` does).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Literal

import trio

from dfs.fuse.handshake import MAX_MAX_WRITE, FuseConfig
from dfs.fuse.operations import Operations
from dfs.fuse.session import FuseSession

log = logging.getLogger(__name__)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

#: Generic mount options that are mount(2) flags, not fuse options: name -> (set, clear).
_FLAG_OPTS: dict[str, tuple[int, int]] = {
    "ro": (MS_RDONLY, 0),
    "rw": (0, MS_RDONLY),
    "nosuid": (MS_NOSUID, 0),
    "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0),
    "dev": (0, MS_NODEV),
    "noexec": (MS_NOEXEC, 0),
    "exec": (0, MS_NOEXEC),
    "sync": (MS_SYNCHRONOUS, 0),
    "async": (0, MS_SYNCHRONOUS),
    "dirsync": (MS_DIRSYNC, 0),
    "noatime": (MS_NOATIME, 0),
    "nodiratime": (MS_NODIRATIME, 0),
    "relatime": (MS_RELATIME, 0),
    "strictatime": (MS_STRICTATIME, 0),
    "lazytime": (MS_LAZYTIME, 0),
}

Method = Literal["auto", "syscall", "fusermount"]


class MountError(Exception):
    """Mounting or unmounting failed; the message is one line meant for the operator."""


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    libc.mount.restype = ctypes.c_int
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.umount2.restype = ctypes.c_int
    return libc


def _use_syscall(method: Method) -> bool:
    if method == "auto":
        return os.geteuid() == 0
    return method == "syscall"


def _check_mountpoint(mountpoint: str) -> os.stat_result:
    try:
        st = os.stat(mountpoint)
    except FileNotFoundError:
        raise MountError(f"mount point {mountpoint} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(
                f"mount point {mountpoint} is a dead FUSE mount; unmount it first"
            ) from None
        raise MountError(f"cannot stat mount point {mountpoint}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mount point {mountpoint} is not a directory")
    return st


def _check_opt(name: str, value: str) -> None:
    if not value or any(c in value for c in ",\0\n"):
        raise MountError(f"invalid {name} {value!r}: must be non-empty without ',' or newlines")


def mount(
    mountpoint: str,
    *,
    fsname: str,
    subtype: str = "dfs",
    allow_other: bool = False,
    default_permissions: bool = True,
    extra_opts: Sequence[str] = (),
    max_read: int = MAX_MAX_WRITE,
    method: Method = "auto",
) -> int:
    """Mount a FUSE file system at ``mountpoint``; return the /dev/fuse descriptor.

    The kernel sends INIT right away; serve the descriptor with ``FuseSession``.
    ``extra_opts`` are ``mount -o`` words (``ro``, ``noatime``, ``blksize=4096``, ...).
    """
    mountpoint = os.path.abspath(mountpoint)
    _check_opt("fsname", fsname)
    _check_opt("subtype", subtype)
    for opt in extra_opts:
        _check_opt("mount option", opt)
    st = _check_mountpoint(mountpoint)
    if _use_syscall(method):
        return _mount_syscall(
            mountpoint,
            st=st,
            fsname=fsname,
            subtype=subtype,
            allow_other=allow_other,
            default_permissions=default_permissions,
            extra_opts=extra_opts,
            max_read=max_read,
        )
    return _mount_fusermount(
        mountpoint,
        fsname=fsname,
        subtype=subtype,
        allow_other=allow_other,
        default_permissions=default_permissions,
        extra_opts=extra_opts,
        max_read=max_read,
    )


def _mount_syscall(
    mountpoint: str,
    *,
    st: os.stat_result,
    fsname: str,
    subtype: str,
    allow_other: bool,
    default_permissions: bool,
    extra_opts: Sequence[str],
    max_read: int,
) -> int:
    try:
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MountError("/dev/fuse does not exist (is the fuse module loaded?)") from None
    except OSError as exc:
        raise MountError(f"cannot open /dev/fuse: {exc.strerror}") from None
    flags = MS_NOSUID | MS_NODEV
    data = [
        f"fd={fd}",
        f"rootmode={stat.S_IFMT(st.st_mode):o}",
        f"user_id={os.getuid()}",
        f"group_id={os.getgid()}",
        f"max_read={max_read}",
    ]
    if default_permissions:
        data.append("default_permissions")
    if allow_other:
        data.append("allow_other")
    for opt in extra_opts:
        if opt in _FLAG_OPTS:
            set_bits, clear_bits = _FLAG_OPTS[opt]
            flags = (flags | set_bits) & ~clear_bits
        else:
            data.append(opt)
    libc = _libc()
    rc = libc.mount(
        fsname.encode(),
        mountpoint.encode(),
        f"fuse.{subtype}".encode(),
        flags,
        ",".join(data).encode(),
    )
    if rc != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise MountError(f"mount {mountpoint} failed: {os.strerror(err)}")
    log.info("mounted %s at %s (fd %d)", fsname, mountpoint, fd)
    return fd


def _fusermount() -> str:
    exe = shutil.which("fusermount3")
    if exe is None:
        raise MountError("fusermount3 not found: install the fuse3 package (or run as root)")
    return exe


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no error message"


def _mount_fusermount(
    mountpoint: str,
    *,
    fsname: str,
    subtype: str,
    allow_other: bool,
    default_permissions: bool,
    extra_opts: Sequence[str],
    max_read: int,
) -> int:
    exe = _fusermount()
    opts = [f"fsname={fsname}", f"subtype={subtype}", "nosuid", "nodev", f"max_read={max_read}"]
    if default_permissions:
        opts.append("default_permissions")
    if allow_other:
        opts.append("allow_other")
    opts.extend(extra_opts)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
        try:
            proc = subprocess.run(
                [exe, "-o", ",".join(opts), "--", mountpoint],
                env=env,
                pass_fds=(theirs.fileno(),),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise MountError(f"fusermount3 timed out mounting {mountpoint}") from None
        theirs.close()
        if proc.returncode != 0:
            raise MountError(f"fusermount3 failed: {_first_line(proc.stderr)}")
        ours.settimeout(5)
        try:
            _msg, fds, _flags, _addr = socket.recv_fds(ours, 1, 1)
        except OSError as exc:
            raise MountError(f"no descriptor received from fusermount3: {exc}") from None
    if not fds:
        raise MountError("fusermount3 did not pass the /dev/fuse descriptor")
    for extra in fds[1:]:
        os.close(extra)
    fd = fds[0]
    os.set_inheritable(fd, False)
    log.info("mounted %s at %s via fusermount3 (fd %d)", fsname, mountpoint, fd)
    return fd


def unmount(mountpoint: str, lazy: bool = False, *, method: Method = "auto") -> None:
    """Unmount ``mountpoint``; ``lazy`` detaches it even while files are open (MNT_DETACH)."""
    mountpoint = os.path.abspath(mountpoint)
    if _use_syscall(method):
        rc = _libc().umount2(mountpoint.encode(), MNT_DETACH if lazy else 0)
        if rc != 0:
            err = ctypes.get_errno()
            if err == errno.EINVAL:
                raise MountError(f"{mountpoint} is not mounted")
            raise MountError(f"unmount {mountpoint} failed: {os.strerror(err)}")
    else:
        cmd = [_fusermount(), "-u", *(["-z"] if lazy else []), "--", mountpoint]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            raise MountError(f"fusermount3 -u timed out for {mountpoint}") from None
        if proc.returncode != 0:
            raise MountError(f"fusermount3 -u failed: {_first_line(proc.stderr)}")
    log.info("unmounted %s%s", mountpoint, " (lazy)" if lazy else "")


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and i + 3 < len(field):
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_device(mountpoint: str) -> str | None:
    """``major:minor`` of what is mounted at ``mountpoint`` (from /proc/self/mountinfo).

    Read from the mount table rather than with stat(2), which would send a request to the very
    file system this process serves.
    """
    target = os.path.abspath(mountpoint)
    device = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4 and _unescape_mountinfo(fields[4]) == target:
                device = fields[2]  # the last match is the topmost mount
    return device


def set_readahead(mountpoint: str, readahead_kb: int) -> bool:
    """Raise the kernel readahead window of the FUSE mount at ``mountpoint``; best effort.

    INIT caps ``max_readahead`` (and so the mount's ``read_ahead_kb``) at what the kernel
    offers, 128 KiB, which turns a sequential read into many small READ requests.  The bdi's
    sysfs knob (writable by root only) lifts that cap after INIT; failing to is logged, never
    fatal.  Call it after INIT has been answered: the INIT reply lowers the window again.
    """
    try:
        device = mount_device(mountpoint)
        if device is None:
            log.info("readahead not raised: %s is not in the mount table", mountpoint)
            return False
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w", encoding="ascii") as f:
            f.write(f"{readahead_kb}\n")
    except OSError as exc:
        log.info("could not raise readahead of %s to %d KiB: %s", mountpoint, readahead_kb, exc)
        return False
    log.info("readahead of %s (bdi %s) set to %d KiB", mountpoint, device, readahead_kb)
    return True


def is_mounted(mountpoint: str) -> bool:
    """True if something is mounted exactly at ``mountpoint`` (per /proc/self/mountinfo)."""
    target = os.path.abspath(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4 and _unescape_mountinfo(fields[4]) == target:
                return True
    return False


# ---- serve ----


async def serve(
    operations: Operations,
    mountpoint: str,
    config: FuseConfig | None = None,
    *,
    fsname: str = "dfs",
    subtype: str = "dfs",
    allow_other: bool = False,
    default_permissions: bool = True,
    extra_opts: Sequence[str] = (),
    handle_signals: bool = True,
    unmount_timeout: float = 10.0,
    method: Method = "auto",
    readahead_kb: int | None = None,
    task_status: trio.TaskStatus[FuseSession] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Mount, serve until unmounted / cancelled / SIGTERM / SIGINT, and always unmount.

    ``task_status.started(session)`` fires once INIT is done (the mount is usable).  On
    cancellation or a signal the file system is unmounted *while the session still serves*, so
    the kernel can finish in-flight requests; after ``unmount_timeout`` seconds (open files
    keep a lazily detached mount alive) the connection is aborted by closing /dev/fuse.
    Signals are handled only when ``serve`` runs in the main thread.  ``readahead_kb`` raises
    the kernel's readahead window for this mount once INIT is done (best effort, see
    ``set_readahead``).
    """
    config = config or FuseConfig()
    config.validate()
    # abspath only looks at the string and the process's cwd (no disk I/O).
    mountpoint = os.path.abspath(mountpoint)  # noqa: ASYNC240
    fd = await trio.to_thread.run_sync(
        partial(
            mount,
            mountpoint,
            fsname=fsname,
            subtype=subtype,
            allow_other=allow_other,
            default_permissions=default_permissions,
            extra_opts=extra_opts,
            max_read=config.max_write,
            method=method,
        )
    )
    try:
        session = FuseSession(fd, operations, config)
    except BaseException:
        os.close(fd)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_ensure_unmounted, mountpoint, method)
        raise
    # The session's scope is shielded from our caller's cancellation: on the way out we unmount
    # first and let the session answer what the kernel still sends, then stop it.
    session_scope = trio.CancelScope(shield=True)

    async def run_session(task_status: trio.TaskStatus[FuseSession]) -> None:
        with session_scope:
            await session.run(task_status=task_status)

    try:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(run_session)
                if readahead_kb is not None:
                    await trio.to_thread.run_sync(set_readahead, mountpoint, readahead_kb)
                with _signal_receiver(handle_signals) as signals:
                    # Installed before started(): a signal sent once the mount is visible is
                    # never lost to the default handler.
                    task_status.started(session)
                    await _wait_for_stop(session, signals)
            finally:
                with trio.CancelScope(shield=True, deadline=trio.current_time() + unmount_timeout):
                    await _graceful_unmount(session, mountpoint, method)
                session_scope.cancel()
    finally:
        session.close()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_ensure_unmounted, mountpoint, method)


@contextmanager
def _signal_receiver(enabled: bool) -> Iterator[AsyncIterator[int] | None]:
    """SIGTERM/SIGINT receiver, or None when disabled or not in the main thread."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield None
        return
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        yield signals


async def _wait_for_stop(session: FuseSession, signals: AsyncIterator[int] | None) -> None:
    """Return when the session ended on its own (external unmount) or a signal arrived."""
    async with trio.open_nursery() as nursery:

        async def on_finished() -> None:
            await session.wait_finished()
            nursery.cancel_scope.cancel()

        nursery.start_soon(on_finished)
        if signals is not None:
            receiver = signals

            async def on_signal() -> None:
                async for signum in receiver:
                    log.info("received %s: unmounting", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(on_signal)


async def _graceful_unmount(session: FuseSession, mountpoint: str, method: Method) -> None:
    """Unmount while the session keeps serving, then wait for it to see the unmount."""
    if not await trio.to_thread.run_sync(is_mounted, mountpoint):
        return
    try:
        await trio.to_thread.run_sync(
            partial(unmount, mountpoint, False, method=method), abandon_on_cancel=True
        )
    except MountError as exc:
        log.warning("%s; detaching lazily", exc)
        try:
            await trio.to_thread.run_sync(
                partial(unmount, mountpoint, True, method=method), abandon_on_cancel=True
            )
        except MountError as exc2:
            log.warning("lazy unmount failed too: %s", exc2)
            return
    await session.wait_finished()


def _ensure_unmounted(mountpoint: str, method: Method) -> None:
    """Last resort after the session ended: lazily detach whatever is still mounted."""
    try:
        if is_mounted(mountpoint):
            unmount(mountpoint, lazy=True, method=method)
    except MountError as exc:
        log.error("could not unmount %s: %s", mountpoint, exc)
