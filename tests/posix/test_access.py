"""access(2) for each permission class, as an unprivileged user and as root."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tests.posix.util import NOBODY, as_user, expect, write_file

pytestmark = pytest.mark.mount


def _access(path: Path, mode: int) -> None:
    """``access(2)`` raising like the other calls (``os.access`` only answers a bool)."""
    if not os.access(path, mode):
        raise OSError(errno.EACCES, "access denied", str(path))


CASES = [
    # (file mode, owner uid, owner gid, caller's groups, access mode, expected errno)
    (0o644, 0, 0, (), os.R_OK, 0),
    (0o640, 0, 0, (), os.R_OK, errno.EACCES),
    (0o644, 0, 0, (), os.W_OK, errno.EACCES),
    (0o666, 0, 0, (), os.W_OK, 0),
    (0o755, 0, 0, (), os.X_OK, 0),
    (0o754, 0, 0, (), os.X_OK, errno.EACCES),
    (0o640, 0, 4242, (4242,), os.R_OK, 0),
    (0o604, 0, 4242, (4242,), os.R_OK, errno.EACCES),  # the group class, not "other", applies
    (0o077, NOBODY, NOBODY, (), os.R_OK, errno.EACCES),  # the owner class applies
    (0o700, NOBODY, NOBODY, (), os.R_OK | os.W_OK | os.X_OK, 0),
    (0o600, NOBODY, NOBODY, (), os.R_OK | os.W_OK | os.X_OK, errno.EACCES),
    (0o000, 0, 0, (), os.F_OK, 0),
]


@pytest.mark.parametrize(("mode", "uid", "gid", "groups", "amode", "code"), CASES)
def test_access_unprivileged(
    d: Path, mode: int, uid: int, gid: int, groups: tuple[int, ...], amode: int, code: int
) -> None:
    write_file(d / "f", mode=mode)
    os.chown(d / "f", uid, gid)
    os.chmod(d / "f", mode)
    expect(code, as_user, lambda: _access(d / "f", amode), groups=groups)


def test_access_as_root(d: Path) -> None:
    write_file(d / "f", mode=0o000)
    expect(0, _access, d / "f", os.R_OK | os.W_OK)
    expect(errno.EACCES, _access, d / "f", os.X_OK)  # root needs one execute bit
    os.chmod(d / "f", 0o001)
    expect(0, _access, d / "f", os.X_OK)
    os.mkdir(d / "dir", 0o000)
    expect(0, _access, d / "dir", os.R_OK | os.W_OK | os.X_OK)


def test_access_missing(d: Path) -> None:
    expect(errno.ENOENT, os.stat, d / "nope")
    assert not os.access(d / "nope", os.F_OK)


def test_access_directory_search(d: Path) -> None:
    os.mkdir(d / "dir", 0o700)
    write_file(d / "dir" / "f", mode=0o644)
    expect(errno.EACCES, as_user, lambda: _access(d / "dir", os.X_OK))
    expect(errno.EACCES, as_user, lambda: os.stat(d / "dir" / "f"))
    os.chmod(d / "dir", 0o711)
    as_user(lambda: _access(d / "dir" / "f", os.R_OK))
    expect(errno.EACCES, as_user, lambda: os.listdir(d / "dir"))
