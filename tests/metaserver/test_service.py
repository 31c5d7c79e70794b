"""The metaserver over real loopback mutual-TLS RPC: run_metaserver, roles, the protocol."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from dfs.config import ClusterConfig, Config, MetaserverConfig
from dfs.errors import (
    BadRequest,
    ConfigError,
    Exists,
    IsADirectory,
    NameTooLong,
    NotFound,
    Unauthorized,
    Unavailable,
)
from dfs.metaserver.server import run_metaserver
from dfs.rpc.client import RpcClient
from dfs.security.identity import Role, TlsFiles
from dfs.types import CHUNK_SIZE
from tests.helpers.certs import make_cluster_certs

pytestmark = pytest.mark.unit

Certs = dict[Role, TlsFiles]
CRED = {"uid": 1000, "gid": 100}
GiB = 1 << 30


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_cluster_certs(tmp_path)


def config(certs: Certs, data_dir: Path, **kw: Any) -> Config:
    return Config(
        path=None,
        cluster=ClusterConfig(("127.0.0.1:0",)),
        tls=certs[Role.METASERVER],
        metaserver=MetaserverConfig(id="m1", listen="127.0.0.1:0", data_dir=data_dir, **kw),
    )


@asynccontextmanager
async def metaserver(cfg: Config) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(run_metaserver, cfg)
        yield address
        nursery.cancel_scope.cancel()


def connect(certs: Certs, address: str, role: Role) -> RpcClient:
    return RpcClient(address, certs[role], name=f"{role.value}-1", expect_roles={Role.METASERVER})


async def test_namespace_over_rpc(certs: Certs, tmp_path: Path) -> None:
    async with (
        metaserver(config(certs, tmp_path / "meta")) as addr,
        connect(certs, addr, Role.CLIENT) as c,
    ):
        root = await c.call("fs.getattr", {"ino": 1})
        assert root["mode"] == stat.S_IFDIR | 0o755 and root["goal"] == 2
        d = await c.call("fs.mkdir", {"parent": 1, "name": b"d", "mode": 0o755, "cred": CRED})
        assert (d["uid"], d["gid"], d["nlink"]) == (1000, 100, 2)
        f = await c.call(
            "fs.mknod",
            {
                "parent": d["ino"],
                "name": b"f",
                "mode": stat.S_IFREG | 0o644,
                "rdev": 0,
                "cred": CRED,
            },
        )
        assert await c.call("fs.lookup", {"parent": d["ino"], "name": b"f"}) == f
        with pytest.raises(Exists):
            await c.call("fs.mkdir", {"parent": 1, "name": b"d", "mode": 0o755, "cred": CRED})
        with pytest.raises(NameTooLong):
            await c.call("fs.lookup", {"parent": 1, "name": b"x" * 256})
        with pytest.raises(BadRequest):
            await c.call("fs.lookup", {"parent": 1, "name": "not-bytes"})
        link = await c.call("fs.link", {"ino": f["ino"], "parent": 1, "name": b"hard"})
        assert link["nlink"] == 2
        await c.call("fs.symlink", {"parent": 1, "name": b"sym", "target": b"d/f", "cred": CRED})
        names = [n for n, _ in await c.call("fs.readdir", {"ino": 1})]
        assert names == [b"d", b"hard", b"sym"]
        sym = await c.call("fs.lookup", {"parent": 1, "name": b"sym"})
        assert await c.call("fs.readlink", {"ino": sym["ino"]}) == b"d/f"
        assert await c.call(
            "fs.rename",
            {"parent": 1, "name": b"hard", "newparent": d["ino"], "newname": b"g", "flags": 0},
        ) == {"ino": f["ino"], "replaced": None, "gone": False}
        # d/f still names the inode; a last name's unlink answers gone=True
        assert await c.call("fs.unlink", {"parent": d["ino"], "name": b"g"}) == {
            "ino": f["ino"],
            "gone": False,
        }
        with pytest.raises(IsADirectory):
            await c.call("fs.unlink", {"parent": 1, "name": b"d"})
        await c.call("fs.setxattr", {"ino": f["ino"], "name": b"user.k", "value": b"v", "flags": 0})
        assert await c.call("fs.getxattr", {"ino": f["ino"], "name": b"user.k"}) == b"v"
        assert await c.call("fs.listxattr", {"ino": f["ino"]}) == [b"user.k"]
        await c.call("fs.removexattr", {"ino": f["ino"], "name": b"user.k"})
        r = await c.call(
            "fs.setattr", {"ino": f["ino"], "cred": CRED, "mode": 0o600, "mtime_ns": 7}
        )
        assert r["attr"]["mode"] == stat.S_IFREG | 0o600 and r["attr"]["mtime_ns"] == 7
        with pytest.raises(NotFound):
            await c.call("fs.rmdir", {"parent": 1, "name": b"nope"})
        statfs = await c.call("fs.statfs", {})
        assert statfs["files"] == 4 and statfs["chunkservers"] == 0
        # No chunkserver at all: retry later (Unavailable), not a full disk (ENOSPC).
        with pytest.raises(Unavailable) as unavailable:
            await c.call("file.alloc_chunk", {"ino": f["ino"], "index": 0})
        assert unavailable.value.details.get("retry")


async def test_chunk_lifecycle_with_a_chunkserver(certs: Certs, tmp_path: Path) -> None:
    async with (
        metaserver(config(certs, tmp_path / "meta")) as addr,
        connect(certs, addr, Role.CLIENT) as c,
        connect(certs, addr, Role.CHUNKSERVER) as cs,
        connect(certs, addr, Role.ADMIN) as admin,
    ):
        reg = await cs.call(
            "cs.register",
            {
                "id": "chunkserver-1",
                "address": "127.0.0.1:9999",
                "zone": "z1",
                "capacity": 10 * GiB,
                "free": 9 * GiB,
                "chunks": [],
            },
        )
        assert isinstance(reg["cluster_id"], str) and len(reg["cluster_id"]) == 32
        f = await c.call(
            "fs.mknod",
            {"parent": 1, "name": b"f", "mode": stat.S_IFREG | 0o644, "rdev": 0, "cred": CRED},
        )
        server = {"id": "chunkserver-1", "address": "127.0.0.1:9999"}
        leased = await c.call("file.alloc_chunk", {"ino": f["ino"], "index": 1})
        assert leased == {
            "index": 1,
            "chunk_id": 1,
            "version": 1,
            "servers": [server],
            "lease": 30.0,
        }
        # Inside the lease the same chunk comes back without a version bump.
        assert await c.call("file.alloc_chunk", {"ino": f["ino"], "index": 1}) == leased
        chunk = {k: v for k, v in leased.items() if k != "lease"}
        chunk0 = await c.call("file.alloc_chunk", {"ino": f["ino"], "index": 0})
        del chunk0["lease"]
        assert await c.call("file.chunks", {"ino": f["ino"], "first": 0, "count": 8}) == [
            chunk0,
            chunk,
        ]
        attr = await c.call(
            "file.commit_write", {"ino": f["ino"], "size": CHUNK_SIZE + 10, "mtime_ns": 5}
        )
        assert (attr["size"], attr["mtime_ns"]) == (CHUNK_SIZE + 10, 5)
        r = await c.call("fs.setattr", {"ino": f["ino"], "cred": CRED, "size": 100})
        assert r["trim"] == [{**chunk0, "trim_length": 100}]
        hb = await cs.call(
            "cs.heartbeat", {"id": "chunkserver-1", "capacity": 10 * GiB, "free": 9 * GiB}
        )
        assert hb == {"delete": [chunk["chunk_id"]]}
        # a client reports a bad replica: file.chunks stops offering that server
        await c.call(
            "cs.report_bad",
            {
                "id": "chunkserver-1",
                "chunk_id": chunk0["chunk_id"],
                "version": 1,
                "reason": "checksum",
            },
        )
        got = await c.call("file.chunks", {"ino": f["ino"], "first": 0, "count": 8})
        assert got == [{**chunk0, "servers": []}]
        status = await admin.call("admin.status", {})
        assert status["metaservers"][0]["role"] == "leader"
        assert status["metaservers"][0]["address"] == addr
        assert (
            status["metaservers"][0]["applied_index"]
            >= status["metaservers"][0]["commit_index"] - 0
        )
        assert status["chunkservers"][0]["id"] == "chunkserver-1"
        assert status["chunkservers"][0]["state"] == "alive"
        assert status["counts"]["chunks"] == 1 and status["counts"]["missing"] == 1
        await c.call("fs.unlink", {"parent": 1, "name": b"f"})
        hb = await cs.call(
            "cs.heartbeat", {"id": "chunkserver-1", "capacity": 10 * GiB, "free": 9 * GiB}
        )
        assert hb == {"delete": [chunk0["chunk_id"]]}


async def test_roles_are_enforced(certs: Certs, tmp_path: Path) -> None:
    async with (
        metaserver(config(certs, tmp_path / "meta")) as addr,
        connect(certs, addr, Role.CLIENT) as c,
        connect(certs, addr, Role.CHUNKSERVER) as cs,
    ):
        with pytest.raises(Unauthorized):
            await c.call(
                "cs.register",
                {"id": "x", "address": "a:1", "zone": "z", "capacity": 1, "free": 1, "chunks": []},
            )
        with pytest.raises(Unauthorized):
            await c.call("admin.status", {})
        with pytest.raises(Unauthorized):
            await cs.call("fs.getattr", {"ino": 1})
        with pytest.raises(NotFound):
            await cs.call("cs.heartbeat", {"id": "chunkserver-1", "capacity": 1, "free": 1})
        # A chunkserver speaks only for itself: its id must be its certificate's name.
        with pytest.raises(Unauthorized):
            await cs.call(
                "cs.register",
                {
                    "id": "other",
                    "address": "a:1",
                    "zone": "z",
                    "capacity": 1,
                    "free": 1,
                    "chunks": [],
                },
            )
        with pytest.raises(Unauthorized):
            await cs.call("cs.heartbeat", {"id": "other", "capacity": 1, "free": 1})


async def test_restart_keeps_everything_acknowledged(certs: Certs, tmp_path: Path) -> None:
    cfg = config(certs, tmp_path / "meta", snapshot_every=5)
    async with metaserver(cfg) as addr, connect(certs, addr, Role.CLIENT) as c:
        for i in range(12):
            await c.call("fs.mkdir", {"parent": 1, "name": b"d%d" % i, "mode": 0o700, "cred": CRED})
        cluster_id = (tmp_path / "meta" / "cluster_id").read_text()
    async with (
        metaserver(cfg) as addr,
        connect(certs, addr, Role.CLIENT) as c,
        connect(certs, addr, Role.ADMIN) as admin,
    ):
        names = [n for n, _ in await c.call("fs.readdir", {"ino": 1})]
        assert names == [b"d%d" % i for i in range(12)]
        assert (await c.call("fs.getattr", {"ino": 1}))["nlink"] == 14
        status = await admin.call("admin.status", {})
        assert status["metaservers"][0]["term"] == 2
    assert (tmp_path / "meta" / "cluster_id").read_text() == cluster_id


async def test_data_dir_is_locked(certs: Certs, tmp_path: Path) -> None:
    cfg = config(certs, tmp_path / "meta")
    async with metaserver(cfg):
        with pytest.raises(ConfigError, match="in use"):
            await run_metaserver(cfg)


async def test_silent_chunkserver_is_marked_dead(
    certs: Certs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(certs, tmp_path / "meta", chunkserver_timeout=0.2)
    async with (
        metaserver(cfg) as addr,
        connect(certs, addr, Role.CHUNKSERVER) as cs,
        connect(certs, addr, Role.ADMIN) as admin,
    ):
        await cs.call(
            "cs.register",
            {
                "id": "chunkserver-1",
                "address": "127.0.0.1:1",
                "zone": "z",
                "capacity": GiB,
                "free": GiB,
                "chunks": [],
            },
        )
        with trio.fail_after(5):
            while "marked dead" not in caplog.text:
                await trio.sleep(0.05)
        status = await admin.call("admin.status", {})
        assert status["chunkservers"][0]["state"] == "dead"
        assert status["chunkservers"][0]["last_heartbeat_age"] > 0.2
        await cs.call("cs.heartbeat", {"id": "chunkserver-1", "capacity": GiB, "free": GiB})
        status = await admin.call("admin.status", {})
        assert status["chunkservers"][0]["state"] == "alive"
