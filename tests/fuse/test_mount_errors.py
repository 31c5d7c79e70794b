"""Mount argument checking and /proc/self/mountinfo parsing (no mount needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfs.fuse import mount as mount_mod
from dfs.fuse.mount import MountError, mount

pytestmark = pytest.mark.unit


def test_missing_mountpoint(tmp_path: Path) -> None:
    with pytest.raises(MountError, match="does not exist"):
        mount(str(tmp_path / "nope"), fsname="x")


def test_mountpoint_not_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(MountError, match="not a directory"):
        mount(str(f), fsname="x")


@pytest.mark.parametrize("fsname", ["", "a,b", "new\nline"])
def test_bad_fsname(tmp_path: Path, fsname: str) -> None:
    with pytest.raises(MountError, match="invalid fsname"):
        mount(str(tmp_path), fsname=fsname)


def test_fusermount_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dfs.fuse.mount.shutil.which", lambda _name: None)
    with pytest.raises(MountError, match="fusermount3 not found"):
        mount(str(tmp_path), fsname="x", method="fusermount")
    with pytest.raises(MountError, match="fusermount3 not found"):
        mount_mod.unmount(str(tmp_path), method="fusermount")


def test_mountinfo_unescape() -> None:
    assert mount_mod._unescape_mountinfo("/tmp/a\\040b\\134c") == "/tmp/a b\\c"
    assert mount_mod._unescape_mountinfo("/plain") == "/plain"


def test_is_mounted_root() -> None:
    assert mount_mod.is_mounted("/")
