"""The ACL and umask parameters of ``fs.mknod``/``fs.mkdir``/``fs.setxattr`` over real RPC."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dfs.errors import BadRequest, InvalidArgument, NotPermitted
from dfs.metaserver import acl
from dfs.metaserver.acl import MASK, OTHER, USER, USER_OBJ, Entry
from dfs.security.identity import Role
from tests.helpers.certs import make_cluster_certs
from tests.metaserver.test_service import Certs, config, connect, metaserver

pytestmark = pytest.mark.unit

OWNER = {"uid": 1000, "gid": 100}
NAMED = acl.encode(
    (
        Entry(USER_OBJ, 7),
        Entry(USER, 5, 3000),
        Entry(acl.GROUP_OBJ, 5),
        Entry(MASK, 5),
        Entry(OTHER, 0),
    )
)


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_cluster_certs(tmp_path)


async def test_umask_and_acls_over_rpc(certs: Certs, tmp_path: Path) -> None:
    async with (
        metaserver(config(certs, tmp_path / "meta")) as addr,
        connect(certs, addr, Role.CLIENT) as c,
    ):
        d = await c.call(
            "fs.mkdir", {"parent": 1, "name": b"d", "mode": 0o777, "cred": OWNER, "umask": 0o022}
        )
        assert d["mode"] == stat.S_IFDIR | 0o755
        with pytest.raises(BadRequest):
            await c.call(
                "fs.mkdir", {"parent": 1, "name": b"x", "mode": 0o777, "cred": OWNER, "umask": -1}
            )
        base = {"ino": d["ino"], "name": acl.XATTR_DEFAULT, "value": NAMED, "flags": 0}
        with pytest.raises(NotPermitted):
            await c.call("fs.setxattr", {**base, "cred": {"uid": 2000, "gid": 2000}})
        with pytest.raises(InvalidArgument):
            await c.call("fs.setxattr", {**base, "value": b"junk", "cred": OWNER})
        await c.call("fs.setxattr", {**base, "cred": OWNER})
        f = await c.call(
            "fs.mknod",
            {
                "parent": d["ino"],
                "name": b"f",
                "mode": stat.S_IFREG | 0o666,
                "rdev": 0,
                "cred": OWNER,
                "umask": 0o077,
            },
        )
        assert f["mode"] == stat.S_IFREG | 0o640  # the default ACL, not the umask
        got = await c.call("fs.getxattr", {"ino": f["ino"], "name": acl.XATTR_ACCESS})
        assert (USER, 5, 3000) in [(e.tag, e.perm, e.id) for e in acl.decode(got)]
        with pytest.raises(NotPermitted):
            await c.call(
                "fs.removexattr",
                {"ino": d["ino"], "name": acl.XATTR_DEFAULT, "cred": {"uid": 1, "gid": 1}},
            )
        await c.call("fs.removexattr", {"ino": d["ino"], "name": acl.XATTR_DEFAULT})
