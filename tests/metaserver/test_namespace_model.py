"""Model-based test: random namespace operations run on the pure Namespace and on a real
local directory (the Linux kernel is the model).  After every step the results (or the error
classes, mapped from errno) must agree, both trees must look the same (names, types, link
counts, symlink targets), the schema invariants must hold, and a failed command must not have
changed anything (``Driver.do`` checks the last two).  Chunk operations, which have no local
counterpart, run against the Namespace alone.  Each run ends with a snapshot round trip.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dfs.errors import (
    DirectoryNotEmpty,
    Exists,
    FsError,
    InvalidArgument,
    IsADirectory,
    NotADirectory,
    NotFound,
    NotPermitted,
)
from dfs.metaserver.namespace import Namespace
from dfs.types import CHUNK_SIZE
from tests.metaserver.nsutil import ROOT, USER, Driver

pytestmark = pytest.mark.unit

ERRNO_CLASS: dict[int, type[FsError]] = {
    errno.ENOENT: NotFound,
    errno.EEXIST: Exists,
    errno.ENOTDIR: NotADirectory,
    errno.EISDIR: IsADirectory,
    errno.ENOTEMPTY: DirectoryNotEmpty,
    errno.EINVAL: InvalidArgument,
    errno.EPERM: NotPermitted,
}

NAMES = st.sampled_from([b"a", b"b", b"c"])
PATHS = st.lists(NAMES, max_size=2).map(tuple)
FLAGS = st.sampled_from([0, 0, 0, 1, 2])

_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100


def renameat2(old: bytes, new: bytes, flags: int) -> None:
    if _libc.renameat2(_AT_FDCWD, old, _AT_FDCWD, new, flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def outcome_real(fn: Any) -> type[FsError] | None:
    try:
        fn()
    except OSError as exc:
        return ERRNO_CLASS.get(exc.errno or 0, FsError)
    return None


class NamespaceVsKernel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.d = Driver()
        self.base = tempfile.mkdtemp(prefix="dfs-model-")
        self.root = os.path.join(self.base, "root").encode()
        os.mkdir(self.root)
        # symlinks point at a regular file outside the tree: following one as a directory
        # gives ENOTDIR on Linux, which is what a lookup through a symlink gives here
        self.target = os.path.join(self.base, "file").encode()
        Path(self.target.decode()).touch()

    def teardown(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    # ---- helpers ----
    def real(self, path: tuple[bytes, ...], name: bytes | None = None) -> bytes:
        parts = (*path, name) if name is not None else path
        return os.path.join(self.root, *parts)

    def resolve(self, path: tuple[bytes, ...]) -> int:
        ino = ROOT
        for part in path:
            ino = int(self.d.ns.lookup(ino, part)["ino"])
        return ino

    def resolve_dir(self, path: tuple[bytes, ...]) -> int:
        """A parent path, resolved as the kernel does: every component must be a directory."""
        ino = self.resolve(path)
        if not stat.S_ISDIR(self.d.attr(ino)["mode"]):
            raise NotADirectory(repr(path))
        return ino

    def run_both(self, real_fn: Any, ns_fn: Any) -> None:
        want = outcome_real(real_fn)
        got: type[FsError] | None = None
        try:
            ns_fn()
        except FsError as exc:
            got = type(exc)
        assert got is want, f"namespace gave {got}, Linux gave {want}"

    def parent_then(self, path: tuple[bytes, ...], op: str, **args: Any) -> None:
        parent = self.resolve_dir(path)
        self.d.do(op, parent=parent, **args)

    # ---- rules ----
    @rule(path=PATHS, name=NAMES)
    def mkdir(self, path: tuple[bytes, ...], name: bytes) -> None:
        self.run_both(
            lambda: os.mkdir(self.real(path, name), 0o755),
            lambda: self.parent_then(path, "mkdir", name=name, mode=0o755, cred=USER),
        )

    @rule(path=PATHS, name=NAMES)
    def create(self, path: tuple[bytes, ...], name: bytes) -> None:
        def real() -> None:
            os.close(os.open(self.real(path, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

        self.run_both(
            real,
            lambda: self.parent_then(
                path, "mknod", name=name, mode=stat.S_IFREG | 0o644, rdev=0, cred=USER
            ),
        )

    @rule(path=PATHS, name=NAMES)
    def symlink(self, path: tuple[bytes, ...], name: bytes) -> None:
        self.run_both(
            lambda: os.symlink(self.target, self.real(path, name)),
            lambda: self.parent_then(path, "symlink", name=name, target=self.target, cred=USER),
        )

    @rule(src=st.lists(NAMES, min_size=1, max_size=3).map(tuple), path=PATHS, name=NAMES)
    def link(self, src: tuple[bytes, ...], path: tuple[bytes, ...], name: bytes) -> None:
        def ns() -> None:
            ino = self.resolve(src)
            self.parent_then(path, "link", ino=ino, name=name)

        self.run_both(
            lambda: os.link(self.real(src), self.real(path, name), follow_symlinks=False), ns
        )

    @rule(path=PATHS, name=NAMES)
    def unlink(self, path: tuple[bytes, ...], name: bytes) -> None:
        self.run_both(
            lambda: os.unlink(self.real(path, name)),
            lambda: self.parent_then(path, "unlink", name=name),
        )

    @rule(path=PATHS, name=NAMES)
    def rmdir(self, path: tuple[bytes, ...], name: bytes) -> None:
        self.run_both(
            lambda: os.rmdir(self.real(path, name)),
            lambda: self.parent_then(path, "rmdir", name=name),
        )

    @rule(path=PATHS, name=NAMES, newpath=PATHS, newname=NAMES, flags=FLAGS)
    def rename(
        self,
        path: tuple[bytes, ...],
        name: bytes,
        newpath: tuple[bytes, ...],
        newname: bytes,
        flags: int,
    ) -> None:
        def ns() -> None:
            parent = self.resolve_dir(path)
            newparent = self.resolve_dir(newpath)
            self.d.do(
                "rename",
                parent=parent,
                name=name,
                newparent=newparent,
                newname=newname,
                flags=flags,
            )

        self.run_both(
            lambda: renameat2(self.real(path, name), self.real(newpath, newname), flags), ns
        )

    @rule(path=st.lists(NAMES, min_size=1, max_size=3).map(tuple), index=st.integers(0, 3))
    def alloc_chunk(self, path: tuple[bytes, ...], index: int) -> None:
        with contextlib.suppress(FsError):
            self.d.do("alloc_chunk", ino=self.resolve(path), index=index)

    @rule(
        path=st.lists(NAMES, min_size=1, max_size=3).map(tuple),
        size=st.integers(0, 4 * CHUNK_SIZE),
    )
    def truncate(self, path: tuple[bytes, ...], size: int) -> None:
        with contextlib.suppress(FsError):
            self.d.do("setattr", ino=self.resolve(path), size=size)

    # ---- invariants ----
    @invariant()
    def trees_match(self) -> None:
        self._compare(self.root, ROOT)

    def _compare(self, real_dir: bytes, ino: int) -> None:
        ours = {name: attr for name, attr in self.d.ns.readdir(ino)}
        theirs = sorted(os.listdir(real_dir))
        assert sorted(ours) == theirs, (real_dir, sorted(ours), theirs)
        real_st = os.lstat(real_dir)
        assert self.d.attr(ino)["nlink"] == real_st.st_nlink, real_dir
        for name, attr in ours.items():
            path = os.path.join(real_dir, name)
            st_ = os.lstat(path)
            assert stat.S_IFMT(st_.st_mode) == stat.S_IFMT(attr["mode"]), path
            assert st_.st_nlink == attr["nlink"], path
            if stat.S_ISDIR(st_.st_mode):
                self._compare(path, attr["ino"])
            elif stat.S_ISLNK(st_.st_mode):
                assert os.readlink(path) == self.d.ns.readlink(attr["ino"])

    def check_snapshot(self) -> None:
        blob = self.d.ns.snapshot_state()
        other = Namespace()
        other.restore(blob)
        assert other.snapshot_state() == blob


NamespaceVsKernel.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestNamespaceVsKernel = NamespaceVsKernel.TestCase


class SnapshotAtEnd(NamespaceVsKernel):
    """Same machine; every run also survives a snapshot round trip after each step."""

    @invariant()
    def snapshot_round_trip(self) -> None:
        self.check_snapshot()


SnapshotAtEnd.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSnapshotRoundTrip = SnapshotAtEnd.TestCase
