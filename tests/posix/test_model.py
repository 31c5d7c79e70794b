"""A Hypothesis state machine runs random namespace and I/O operations on a dfs directory and on
a local one (the reference) and compares every result and errno exactly, then the whole trees.

Derandomized: a failure reproduces on every run; Hypothesis prints the shortest sequence of
steps it found."""

from __future__ import annotations

import collections
import errno
import itertools
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

pytestmark = pytest.mark.mount

NAMES = ["a", "b", "c"]
PATHS = NAMES + [f"{x}/{y}" for x in NAMES for y in NAMES]
paths = st.sampled_from(PATHS)
# relative to the link's own directory, never above the root
targets = st.sampled_from(["a", "b", "c", "a/b", "b/c", "nowhere", "."])
file_modes = st.sampled_from([0o644, 0o600, 0o755, 0o000, 0o4755, 0o1777])
offsets = st.one_of(st.integers(0, 300), st.sampled_from([4095, 65536, 70000, 1 << 20]))
sizes = st.one_of(st.integers(0, 400), st.sampled_from([4096, 65537, 1 << 20]))
datas = st.binary(min_size=0, max_size=200)

Outcome = tuple[str, Any]


def outcome(fn: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", fn())
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno or 0, e.errno))


def describe(root: Path, rel: str) -> Any:
    """What a path is: kind, permission bits, link count and contents (a directory's size is
    file-system specific and left out)."""
    p = root / rel
    s = os.lstat(p)
    kind = stat.S_IFMT(s.st_mode)
    if stat.S_ISREG(s.st_mode):
        with open(p, "rb") as f:
            body: Any = f.read()
        assert len(body) == s.st_size
    elif stat.S_ISLNK(s.st_mode):
        body = os.readlink(p)
    else:
        body = None
    return (kind, stat.S_IMODE(s.st_mode), s.st_nlink, body)


def tree(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            out[rel] = describe(root, rel)
    return out


class FsModel(RuleBasedStateMachine):
    #: outcomes per operation over the whole run ("mkdir ok", "rename ENOENT", ...)
    stats: collections.Counter[str] = collections.Counter()

    #: where each run makes its pair of fresh directories (set by the test)
    local_base: Path
    dfs_base: Path
    runs = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        n = next(self.runs)
        self.local = self.local_base / str(n)
        self.dfs = self.dfs_base / str(n)
        self.local.mkdir()
        self.dfs.mkdir()
        #: descriptors open on both sides: (local fd, dfs fd, path when opened)
        self.fds: list[tuple[int, int, str]] = []

    @initialize()
    def populate(self) -> None:
        """Start from a small tree so that most steps find something to work on."""

        def op(r: Path) -> None:
            os.mkdir(r / "a")
            os.mkdir(r / "b")
            os.mkdir(r / "b" / "c")
            for rel, size in (("c", 100), ("a/a", 5000), ("b/a", 0)):
                with open(r / rel, "wb") as f:
                    f.write(bytes(range(256)) * (size // 256) + bytes(size % 256))

        self.both("populate", op)

    def both(self, what: str, fn: Callable[[Path], Any]) -> Outcome:
        want = outcome(lambda: fn(self.local))
        got = outcome(lambda: fn(self.dfs))
        assert got == want, f"{what}: local {want!r}, dfs {got!r}"
        self.stats[f"{what.split(maxsplit=1)[0]} {'ok' if want[0] == 'ok' else want[1]}"] += 1
        return want

    @rule(p=paths, mode=st.sampled_from([0o755, 0o700, 0o1777]))
    def mkdir(self, p: str, mode: int) -> None:
        self.both(f"mkdir {p}", lambda r: os.mkdir(r / p, mode))

    @rule(p=paths, offset=offsets, data=datas)
    def write(self, p: str, offset: int, data: bytes) -> None:
        def op(r: Path) -> int:
            fd = os.open(r / p, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                return os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

        self.both(f"write {p} @{offset} +{len(data)}", op)

    @rule(p=paths, data=datas)
    def append(self, p: str, data: bytes) -> None:
        def op(r: Path) -> int:
            fd = os.open(r / p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                return os.write(fd, data)
            finally:
                os.close(fd)

        self.both(f"append {p} +{len(data)}", op)

    @rule(p=paths, trunc=st.booleans())
    def create(self, p: str, trunc: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | (os.O_TRUNC if trunc else 0)
        self.both(f"create {p}", lambda r: os.close(os.open(r / p, flags, 0o640)))

    @rule(p=paths)
    def read(self, p: str) -> None:
        def op(r: Path) -> bytes:
            with open(r / p, "rb") as f:
                return f.read()

        self.both(f"read {p}", op)

    @rule(p=paths, offset=offsets, length=st.integers(0, 5000))
    def pread(self, p: str, offset: int, length: int) -> None:
        def op(r: Path) -> bytes:
            fd = os.open(r / p, os.O_RDONLY)
            try:
                return os.pread(fd, length, offset)
            finally:
                os.close(fd)

        self.both(f"pread {p} @{offset} +{length}", op)

    @rule(p=paths, size=sizes)
    def truncate(self, p: str, size: int) -> None:
        self.both(f"truncate {p} {size}", lambda r: os.truncate(r / p, size))

    @rule(src=paths, dst=paths)
    def rename(self, src: str, dst: str) -> None:
        self.both(f"rename {src} {dst}", lambda r: os.rename(r / src, r / dst))

    @rule(p=paths)
    def unlink(self, p: str) -> None:
        self.both(f"unlink {p}", lambda r: os.unlink(r / p))

    @rule(p=paths)
    def rmdir(self, p: str) -> None:
        self.both(f"rmdir {p}", lambda r: os.rmdir(r / p))

    @rule(src=paths, dst=paths)
    def link(self, src: str, dst: str) -> None:
        self.both(f"link {src} {dst}", lambda r: os.link(r / src, r / dst))

    @rule(dest=targets, p=paths)
    def symlink(self, dest: str, p: str) -> None:
        self.both(f"symlink {dest} {p}", lambda r: os.symlink(dest, r / p))

    @rule(p=paths, mode=file_modes)
    def chmod(self, p: str, mode: int) -> None:
        self.both(f"chmod {p} {mode:o}", lambda r: os.chmod(r / p, mode))

    @rule(p=paths)
    def stat(self, p: str) -> None:
        def op(r: Path) -> tuple[int, int, int, int | None]:
            s = os.lstat(r / p)
            size = None if stat.S_ISDIR(s.st_mode) else s.st_size
            return (stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_nlink, size)

        self.both(f"stat {p}", op)

    @rule(p=st.sampled_from(["", *PATHS]))
    def listdir(self, p: str) -> None:
        self.both(f"listdir {p}", lambda r: sorted(os.listdir(r / p)))

    @rule(p=paths)
    def readlink(self, p: str) -> None:
        self.both(f"readlink {p}", lambda r: os.readlink(r / p))

    # -- descriptors held across other steps (unlinked and renamed while open) ----------

    def both_fd(self, what: str, i: int, fn: Callable[[int], Any]) -> Outcome:
        lfd, dfd, path = self.fds[i % len(self.fds)]
        want = outcome(lambda: fn(lfd))
        got = outcome(lambda: fn(dfd))
        assert got == want, f"{what} (fd of {path}): local {want!r}, dfs {got!r}"
        self.stats[f"{what.split(maxsplit=1)[0]} {'ok' if want[0] == 'ok' else want[1]}"] += 1
        return want

    @precondition(lambda self: len(self.fds) < 4)
    @rule(p=paths, creat=st.booleans())
    def fd_open(self, p: str, creat: bool) -> None:
        flags = os.O_RDWR | (os.O_CREAT if creat else 0)
        lo = outcome(lambda: os.open(self.local / p, flags, 0o644))
        do = outcome(lambda: os.open(self.dfs / p, flags, 0o644))
        for o in (lo, do):
            if o[0] == "ok" and (lo[0], do[0]) != ("ok", "ok"):
                os.close(o[1])
        assert do[0] == lo[0] and (lo[0] == "ok" or do == lo), f"open {p}: {lo!r} {do!r}"
        if lo[0] == "ok":
            self.fds.append((lo[1], do[1], p))

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, 3), offset=offsets, data=datas)
    def fd_pwrite(self, i: int, offset: int, data: bytes) -> None:
        self.both_fd(f"fd_pwrite @{offset} +{len(data)}", i, lambda fd: os.pwrite(fd, data, offset))

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, 3), offset=offsets, length=st.integers(0, 5000))
    def fd_pread(self, i: int, offset: int, length: int) -> None:
        self.both_fd(f"fd_pread @{offset} +{length}", i, lambda fd: os.pread(fd, length, offset))

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, 3), size=sizes)
    def fd_truncate(self, i: int, size: int) -> None:
        self.both_fd(f"fd_truncate {size}", i, lambda fd: os.ftruncate(fd, size))

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, 3))
    def fd_fstat(self, i: int) -> None:
        def op(fd: int) -> tuple[int, int, int]:
            s = os.fstat(fd)
            return (s.st_mode, s.st_nlink, s.st_size)

        self.both_fd("fd_fstat", i, op)

    @precondition(lambda self: self.fds)
    @rule(i=st.integers(0, 3))
    def fd_close(self, i: int) -> None:
        self.both_fd("fd_close", i, os.close)
        del self.fds[i % len(self.fds)]

    def teardown(self) -> None:
        while self.fds:
            self.fd_close(0)
        assert tree(self.dfs) == tree(self.local)


SETTINGS = settings(
    max_examples=30,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_namespace_and_io_model(mnt_dir: Path, local_dir: Path) -> None:
    class Bound(FsModel):
        local_base = local_dir
        dfs_base = mnt_dir

    FsModel.stats.clear()
    run_state_machine_as_test(Bound, settings=SETTINGS)
    print(sorted(FsModel.stats.items()))
    steps = sum(FsModel.stats.values())
    ok = sum(n for k, n in FsModel.stats.items() if k.endswith(" ok"))
    assert steps >= 500, f"only {steps} steps ran"
    assert ok >= steps // 4, f"only {ok} of {steps} steps succeeded: the model is vacuous"
