"""Write leases over a real metaserver and chunkservers: replicas that differ after a writer
died mid-write are reconciled when the lease ends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from dfs.client.interfaces import Cred
from dfs.rpc.client import RpcClient
from dfs.security.identity import Role
from dfs.types import ROOT_INODE
from tests.helpers.cluster import inprocess_cluster

pytestmark = pytest.mark.unit

ROOT = Cred(uid=0, gid=0)


async def test_replicas_that_differ_after_a_lease_are_reconciled(tmp_path: Path) -> None:
    async with inprocess_cluster(tmp_path, meta_options={"write_lease": 1.0}) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        data = os.urandom(300_000)
        fh, attr = await vfs.create(ROOT_INODE, b"f", 0o644, os.O_WRONLY, ROOT)
        await vfs.write(fh, 0, data)
        await vfs.release(fh, sync=True)
        (chunk,) = await vfs.meta.file_chunks(attr.ino, 0, 1)
        assert len(chunk.servers) == 2
        admin_tls = cluster.certs[Role.ADMIN]
        async with RpcClient(
            chunk.servers[1].address, admin_tls, name="t", expect_roles={Role.CHUNKSERVER}
        ) as cs:
            # What a writer dying mid-write leaves: one replica got bytes the other did not.
            await cs.call(
                "chunk.write",
                {
                    "chunk_id": chunk.chunk_id,
                    "version": chunk.version,
                    "offset": 1000,
                    "data": b"\xff" * 5000,
                    "chain": [],
                },
                timeout=10,
            )
        async with RpcClient(
            cluster.meta_address, admin_tls, name="t", expect_roles={Role.METASERVER}
        ) as meta:
            with trio.fail_after(30):
                while True:
                    status = await meta.call("admin.status", {}, timeout=5)
                    rep = status["replication"]
                    if rep["recoveries"] >= 1 and status["counts"]["under_goal"] == 0:
                        break
                    await trio.sleep(0.1)
        # Every up-to-date replica now holds the same bytes (the kept replica's).
        (after,) = await vfs.meta.file_chunks(attr.ino, 0, 1)
        assert after.version > chunk.version
        copies = []
        for server in after.servers:
            async with RpcClient(
                server.address, admin_tls, name="t", expect_roles={Role.CHUNKSERVER}
            ) as cs:
                copies.append(
                    await cs.call(
                        "chunk.read",
                        {
                            "chunk_id": after.chunk_id,
                            "version": after.version,
                            "offset": 0,
                            "length": len(data),
                        },
                        timeout=10,
                    )
                )
        assert len(copies) == 2 and copies[0] == copies[1]
        assert copies[0] in (data, data[:1000] + b"\xff" * 5000 + data[6000:])


async def test_last_close_gives_the_leases_back(tmp_path: Path) -> None:
    """With a 30 s lease, a closed file's chunks are free for checks and copies at once."""
    async with inprocess_cluster(tmp_path, meta_options={"write_lease": 30.0}) as cluster:
        vfs = cluster.vfs
        assert vfs is not None
        admin_tls = cluster.certs[Role.ADMIN]
        async with RpcClient(
            cluster.meta_address, admin_tls, name="t", expect_roles={Role.METASERVER}
        ) as meta:

            async def leases() -> int:
                status = await meta.call("admin.status", {}, timeout=5)
                return int(status["replication"]["write_leases"])

            fh, _attr = await vfs.create(ROOT_INODE, b"f", 0o644, os.O_WRONLY, ROOT)
            await vfs.write(fh, 0, os.urandom(100_000))
            await vfs.flush(fh, sync=False)
            assert await leases() == 1  # still open: the lease stays
            await vfs.flush(fh, sync=False, closing=True)
            await vfs.release(fh, sync=False)
            with trio.fail_after(5):
                while await leases():
                    await trio.sleep(0.1)
            # Written again, then fsynced (nothing left to commit at close): released too.
            fh, _ = await vfs.open(_attr.ino, os.O_WRONLY)
            await vfs.write(fh, 0, b"again")
            await vfs.flush(fh, sync=True)
            assert await leases() == 1
            await vfs.flush(fh, sync=False, closing=True)
            await vfs.release(fh, sync=False)
            with trio.fail_after(5):
                while await leases():
                    await trio.sleep(0.1)
