"""Helpers shared by the POSIX conformance tests: errno checks, running a step as another user,
and the system calls Python's ``os`` module does not expose (renameat2, utimensat with
UTIME_OMIT, fallocate)."""

from __future__ import annotations

import ctypes
import errno
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

NOBODY = 65534
#: Two unprivileged users with their own groups, for ownership rules (sticky bit, chown).
ALICE = 4001
BOB = 4002

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(None, use_errno=True)


def ename(code: int) -> str:
    return "OK" if code == 0 else errno.errorcode.get(code, str(code))


def err(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Run ``fn`` and return 0, or the errno of the ``OSError`` it raised."""
    try:
        fn(*args, **kwargs)
    except OSError as e:
        assert e.errno is not None
        return e.errno
    return 0


def expect(code: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Assert that ``fn(*args)`` fails with ``code`` (or succeeds when ``code`` is 0)."""
    got = err(fn, *args, **kwargs)
    name = getattr(fn, "__name__", repr(fn))
    assert got == code, f"{name}{args!r}: expected {ename(code)}, got {ename(got)}"


def as_user(
    fn: Callable[[], T], uid: int = NOBODY, gid: int | None = None, groups: Sequence[int] = ()
) -> T:
    """Run ``fn`` in a forked child with the given credentials (no capabilities); return its
    result, or raise the ``OSError`` it raised with the same errno."""
    gid = uid if gid is None else gid
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            result: tuple[Any, ...]
            try:
                os.setgroups(list(groups))
                os.setgid(gid)
                os.setuid(uid)
                result = ("ok", fn())
            except OSError as e:
                result = ("err", e.errno, str(e))
            except BaseException as e:
                result = ("exc", repr(e))
            with os.fdopen(w, "wb") as f:
                f.write(pickle.dumps(result))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    result = pickle.loads(data)
    if result[0] == "ok":
        value: T = result[1]
        return value
    if result[0] == "err":
        raise OSError(result[1], result[2])
    raise AssertionError(f"child as uid {uid} raised {result[1]}")


def renameat2(old: Path | str, new: Path | str, flags: int) -> None:
    rc = _libc.renameat2(
        AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), ctypes.c_uint(flags)
    )
    if rc != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(old))


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(
    path: Path | str,
    atime: tuple[int, int] | int,
    mtime: tuple[int, int] | int,
    *,
    follow: bool = True,
) -> None:
    """``utimensat(2)``; a time is ``(sec, nsec)`` or one of ``UTIME_NOW``/``UTIME_OMIT``."""
    times = (_Timespec * 2)()
    for i, t in enumerate((atime, mtime)):
        if isinstance(t, tuple):
            times[i].tv_sec, times[i].tv_nsec = t
        else:
            times[i].tv_sec, times[i].tv_nsec = 0, t
    flags = 0 if follow else AT_SYMLINK_NOFOLLOW
    rc = _libc.utimensat(AT_FDCWD, os.fsencode(path), times, flags)
    if rc != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """``fallocate(2)`` itself (``os.posix_fallocate`` would emulate a missing one)."""
    rc = _libc.fallocate(
        ctypes.c_int(fd), ctypes.c_int(mode), ctypes.c_int64(offset), ctypes.c_int64(length)
    )
    if rc != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def write_file(path: Path, data: bytes = b"", mode: int = 0o644) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)
    return path


def read_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()
