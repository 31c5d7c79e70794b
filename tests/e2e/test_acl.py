"""POSIX ACLs and the umask on a real mount: ``setfacl``/``getfacl`` as root, access checks
by the kernel (``FUSE_POSIX_ACL``) for an unprivileged user, default ACLs inherited by new
files and directories, chmod and the mask, and copies that keep ACLs (``cp -a``, ``tar``)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.localcluster import Cluster, local_cluster

pytestmark = pytest.mark.mount

#: The unprivileged user of the access checks (no account needed: setpriv sets raw ids).
UID = 4321


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("setfacl") is None or shutil.which("getfacl") is None:
        pytest.skip("setfacl/getfacl missing (Debian package acl; scripts/bootstrap installs it)")
    with local_cluster(tmp_path_factory.mktemp("dfs-acl")) as c:
        yield c


@pytest.fixture
def top(cluster: Cluster, request: pytest.FixtureRequest) -> Path:
    """A fresh directory per test, traversable by everyone."""
    d: Path = cluster.mnt / request.node.name
    d.mkdir()
    os.chmod(d, 0o755)
    return d


def sh(script: str, cwd: Path) -> str:
    """Run ``script`` as root in ``cwd``; its stdout (it must succeed)."""
    proc = subprocess.run(
        ["sh", "-ec", script], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, (script, proc.stdout, proc.stderr)
    return proc.stdout


def as_user(script: str, cwd: Path, denied: str = "Permission denied") -> bool:
    """Whether ``script`` succeeds when run as ``UID`` (no supplementary groups) in ``cwd``
    (relative names: the test's temporary path is not traversable by other users); a failure
    must be the error ``denied``."""
    proc = subprocess.run(
        ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "sh", "-ec", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0 or denied in proc.stderr, proc.stderr
    return proc.returncode == 0


def getfacl(path: Path, *flags: str) -> list[str]:
    """``getfacl`` of ``path`` without its header (file name, owner, group) or blank lines."""
    out = sh(f"getfacl -cp {' '.join(flags)} '{path}'", cwd=path.parent)
    return [line for line in out.splitlines() if line]


def perms(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_applies_without_a_default_acl(top: Path) -> None:
    sh("umask 022; touch f; mkdir d", cwd=top)
    sh("umask 077; touch g; mkdir e", cwd=top)
    assert (perms(top / "f"), perms(top / "d")) == (0o644, 0o755)
    assert (perms(top / "g"), perms(top / "e")) == (0o600, 0o700)
    sh("umask 027; mknod p p; mkfifo q; ln -s f s", cwd=top)
    assert (perms(top / "p"), perms(top / "q")) == (0o640, 0o640)
    assert stat.S_IMODE((top / "s").lstat().st_mode) == 0o777
    assert os.listxattr(top / "f") == []


def test_named_user_entry_and_mask(top: Path) -> None:
    secret = top / "secret"
    sh("echo hush > secret; chmod 600 secret", cwd=top)
    assert not as_user("cat secret", cwd=top)
    sh("setfacl -m u:4321:r secret", cwd=top)
    assert as_user("cat secret", cwd=top)
    assert not as_user("echo more >> secret", cwd=top)
    assert getfacl(secret) == [
        "user::rw-",
        "user:4321:r--",
        "group::---",
        "mask::r--",
        "other::---",
    ]
    assert perms(secret) == 0o640  # the group bits show the mask
    assert "+" in sh("ls -l secret", cwd=top).split()[0]
    # The mask limits the named entry.
    sh("setfacl -m m::- secret", cwd=top)
    assert not as_user("cat secret", cwd=top)
    assert perms(secret) == 0o600
    # Removing every extended entry leaves the mode alone, and no xattr.
    sh("setfacl -m m::r secret; setfacl -b secret", cwd=top)
    assert not as_user("cat secret", cwd=top)
    assert os.listxattr(secret) == []
    assert getfacl(secret) == ["user::rw-", "group::---", "other::---"]


def test_named_user_on_a_directory(top: Path) -> None:
    sh("mkdir box; chmod 700 box; echo in > box/f; chmod 644 box/f", cwd=top)
    assert not as_user("cat box/f", cwd=top)
    sh("setfacl -m u:4321:x box", cwd=top)
    assert as_user("cat box/f", cwd=top)
    assert not as_user("ls box", cwd=top)
    assert not as_user("touch box/new", cwd=top)
    sh("setfacl -m u:4321:rwx box", cwd=top)
    assert as_user("ls box && touch box/new", cwd=top)
    assert (top / "box" / "new").stat().st_uid == UID


def test_chmod_updates_the_mask(top: Path) -> None:
    f = top / "f"
    sh("touch f; chmod 660 f; setfacl -m u:4321:rw f", cwd=top)
    assert as_user("echo x >> f", cwd=top)
    sh("chmod 640 f", cwd=top)
    assert "mask::r--" in getfacl(f)
    assert "user:4321:rw-\t#effective:r--" in getfacl(f)
    assert not as_user("echo x >> f", cwd=top)
    assert as_user("cat f", cwd=top)
    sh("chmod 660 f", cwd=top)
    assert as_user("echo x >> f", cwd=top)


def test_default_acl_is_inherited(top: Path) -> None:
    d = top / "shared"
    sh("mkdir shared; chmod 755 shared; setfacl -d -m u:4321:rwx shared", cwd=top)
    assert getfacl(d, "-d") == [
        "user::rwx",
        "user:4321:rwx",
        "group::r-x",
        "mask::rwx",
        "other::r-x",
    ]
    # The default ACL replaces the umask: 077 would otherwise give 0600 and 0700.
    sh("umask 077; echo x > shared/f; mkdir shared/sub", cwd=top)
    assert perms(d / "f") == 0o664
    assert getfacl(d / "f") == [
        "user::rw-",
        "user:4321:rwx\t#effective:rw-",
        "group::r-x\t#effective:r--",
        "mask::rw-",
        "other::r--",
    ]
    assert as_user("echo y >> shared/f", cwd=top)
    assert perms(d / "sub") == 0o775
    assert getfacl(d / "sub", "-d") == getfacl(d, "-d")
    # The user creates in the subdirectory thanks to the inherited access ACL.
    assert as_user("umask 077; touch shared/sub/mine; mkdir shared/sub/deeper", cwd=top)
    assert getfacl(d / "sub" / "deeper", "-d") == getfacl(d, "-d")
    assert perms(d / "sub" / "mine") == 0o664
    # A default ACL only on directories (setfacl refuses it itself: ask the kernel).
    value = os.getxattr(d, "system.posix_acl_default")
    with pytest.raises(PermissionError) as exc:
        os.setxattr(d / "f", "system.posix_acl_default", value)
    assert exc.value.errno == errno.EACCES
    # Only the owner (or root) sets ACLs.
    assert not as_user("setfacl -m u:4321:rwx shared/f", cwd=top, denied="Operation not permitted")


def test_getfacl_dump_round_trip(top: Path) -> None:
    sh(
        "mkdir -p t/a; touch t/a/f t/g; chmod 750 t/a; "
        "setfacl -m u:4321:rx,g:4000:r t/a; setfacl -d -m u:4321:rwx,o::- t/a; "
        "setfacl -m u:4322:rw t/g",
        cwd=top,
    )
    dump = sh("getfacl -pR t", cwd=top)
    sh("setfacl -bR t; setfacl -k t/a", cwd=top)
    assert sh("getfacl -pR t", cwd=top) != dump
    (top / "dump").write_text(dump)
    sh("setfacl --restore=dump", cwd=top)
    assert sh("getfacl -pR t", cwd=top) == dump


def test_copies_keep_acls(cluster: Cluster, top: Path) -> None:
    sh(
        "mkdir -p src/d; echo x > src/d/f; setfacl -m u:4321:r src/d/f; "
        "setfacl -d -m g:4000:rx src/d",
        cwd=top,
    )
    expected = sh("getfacl -pR src", cwd=top).replace("src", "@")
    sh("cp -a src cpa", cwd=top)
    assert sh("getfacl -pR cpa", cwd=top).replace("cpa", "@") == expected
    archive = top.parent / f"{top.name}.tar"
    try:
        sh(f"tar --acls -cf '{archive}' src", cwd=top)
        sh(f"mkdir untar; tar --acls -xpf '{archive}' -C untar", cwd=top)
    finally:
        archive.unlink(missing_ok=True)
    assert sh("getfacl -pR untar/src", cwd=top).replace("untar/src", "@") == expected
