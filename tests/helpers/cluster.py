"""A real metaserver and real chunkservers inside one trio test, talking mTLS over loopback.

    async with inprocess_cluster(tmp_path, chunkservers=3) as cluster:
        vfs = cluster.vfs
        ...

Everything is the production code (``run_metaserver``, ``run_chunkserver``, the RPC clients
and the VFS); only the kernel is missing, so these tests run in the unit tier.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from dfs.chunkserver.server import run_chunkserver
from dfs.client.remote import RpcChunkClient, RpcMetaClient
from dfs.client.vfs import Vfs
from dfs.config import (
    ChunkserverConfig,
    ClientConfig,
    ClusterConfig,
    Config,
    MetaserverConfig,
)
from dfs.metaserver.server import run_metaserver
from dfs.rpc.client import RpcClient, RpcClientPool
from dfs.security.ca import issue_certificate
from dfs.security.identity import Role, TlsFiles
from tests.helpers.certs import make_cluster_certs


@dataclass
class InProcessCluster:
    tmp: Path
    certs: dict[Role, TlsFiles]
    meta_address: str
    chunk_scopes: dict[str, trio.CancelScope] = field(default_factory=dict)
    chunk_dirs: dict[str, Path] = field(default_factory=dict)
    vfs: Vfs | None = None
    nursery: trio.Nursery | None = None

    def kill_chunkserver(self, cs_id: str) -> None:
        """Stop a chunkserver at once (its connections drop; no goodbye to the metaserver)."""
        self.chunk_scopes[cs_id].cancel()


async def _run_cancellable(
    scope: trio.CancelScope,
    cfg: Config,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await run_chunkserver(cfg, task_status=task_status)


@asynccontextmanager
async def inprocess_cluster(
    tmp: Path,
    *,
    chunkservers: int = 3,
    write_buffer: int = 8 << 20,
    meta_options: dict[str, Any] | None = None,
) -> AsyncIterator[InProcessCluster]:
    """``meta_options``: extra ``MetaserverConfig`` settings (e.g. a short ``write_lease``)."""
    certs = make_cluster_certs(tmp)
    meta_cfg = Config(
        path=None,
        cluster=ClusterConfig(metaservers=("127.0.0.1:0",)),
        tls=certs[Role.METASERVER],
        metaserver=MetaserverConfig(
            id="m1", listen="127.0.0.1:0", data_dir=tmp / "meta", **(meta_options or {})
        ),
    )
    async with trio.open_nursery() as nursery:
        meta_address: str = await nursery.start(run_metaserver, meta_cfg)
        cluster = InProcessCluster(tmp=tmp, certs=certs, meta_address=meta_address, nursery=nursery)
        for i in range(1, chunkservers + 1):
            cs_id = f"cs{i}"
            tls = issue_certificate(tmp / "ca", Role.CHUNKSERVER, cs_id, tmp / "certs" / cs_id)
            cfg = Config(
                path=None,
                cluster=ClusterConfig(metaservers=(meta_address,)),
                tls=tls,
                chunkserver=ChunkserverConfig(
                    id=cs_id,
                    listen="127.0.0.1:0",
                    data_dir=tmp / cs_id,
                    zone=cs_id,
                    heartbeat_interval=0.2,
                ),
            )
            scope = trio.CancelScope()
            cluster.chunk_scopes[cs_id] = scope
            cluster.chunk_dirs[cs_id] = tmp / cs_id
            await nursery.start(_run_cancellable, scope, cfg)
        client_tls = certs[Role.CLIENT]
        async with (
            RpcClientPool(client_tls, name="test", expect_roles={Role.METASERVER}) as metas,
            RpcClientPool(client_tls, name="test", expect_roles={Role.CHUNKSERVER}) as pool,
        ):
            meta = RpcMetaClient(metas, [meta_address], op_timeout=ClientConfig().op_timeout)
            # Wait until every chunkserver registered, so placement sees all of them.
            with trio.fail_after(20):
                while len(await _alive(meta_address, certs)) < chunkservers:
                    await trio.sleep(0.05)
            chunks = RpcChunkClient(pool, meta, op_timeout=30.0, nursery=nursery)
            cluster.vfs = Vfs(meta, chunks, write_buffer=write_buffer)
            yield cluster
        nursery.cancel_scope.cancel()


async def _alive(meta_address: str, certs: dict[Role, TlsFiles]) -> list[str]:
    async with RpcClient(
        meta_address, certs[Role.ADMIN], name="test-admin", expect_roles={Role.METASERVER}
    ) as admin:
        status = await admin.call("admin.status", {}, timeout=5)
    return [c["id"] for c in status["chunkservers"] if c["state"] == "alive"]
