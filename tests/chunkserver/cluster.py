"""A fake metaserver and a few real chunkservers on loopback, for service tests and benchmarks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from dfs.chunkserver.server import Chunkserver
from dfs.config import ChunkserverConfig, ClusterConfig, Config
from dfs.errors import InternalError, NotFound
from dfs.rpc.client import RpcClientPool
from dfs.rpc.dispatch import Dispatcher
from dfs.rpc.params import Params
from dfs.rpc.server import RpcServer
from dfs.security.ca import init_ca, issue_certificate
from dfs.security.identity import Peer, Role, TlsFiles


class FakeMetaserver:
    """Records what chunkservers tell it; hands out deletes; can forget or refuse them."""

    def __init__(self) -> None:
        self.registers: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        self.known: set[str] = set()
        #: chunk ids to hand out with the next heartbeat of each chunkserver id
        self.deletes: dict[str, list[int]] = {}
        #: refuse this many registrations (InternalError) before accepting
        self.fail_registers = 0
        self.changed = trio.Event()
        self.dispatcher = Dispatcher()
        cs = [Role.CHUNKSERVER]
        self.dispatcher.register("cs.register", self._register, cs)
        self.dispatcher.register("cs.heartbeat", self._heartbeat, cs)
        self.dispatcher.register("cs.report_bad", self._report_bad, [Role.CHUNKSERVER, Role.CLIENT])

    def _poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds (re-checked on every recorded call)."""
        with trio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()

    async def _register(self, peer: Peer, params: dict[str, Any]) -> Any:
        p = Params(params)
        if self.fail_registers > 0:
            self.fail_registers -= 1
            self.registers.append({"refused": True, **params})
            self._poke()
            raise InternalError("not ready yet")
        self.registers.append(params)
        self.known.add(p.str("id"))
        self._poke()
        return {"cluster_id": "fake"}

    async def _heartbeat(self, peer: Peer, params: dict[str, Any]) -> Any:
        node = Params(params).str("id")
        self.heartbeats.append(params)
        self._poke()
        if node not in self.known:
            raise NotFound(f"unknown chunkserver {node}")
        return {"delete": self.deletes.pop(node, [])}

    async def _report_bad(self, peer: Peer, params: dict[str, Any]) -> Any:
        self.reports.append(params)
        self._poke()
        return None


@dataclass
class Cluster:
    meta: FakeMetaserver
    meta_address: str
    servers: list[Chunkserver]
    scopes: list[trio.CancelScope]
    client: RpcClientPool
    #: the metaserver's certificate, for calling metaserver-only methods
    meta_tls: TlsFiles
    admin_tls: TlsFiles
    client_tls: TlsFiles
    data_dirs: list[Path] = field(default_factory=list)

    def chain(self, *indexes: int) -> list[dict[str, str]]:
        return [{"id": self.servers[i].id, "address": self.servers[i].address} for i in indexes]

    def stop(self, i: int) -> None:
        self.scopes[i].cancel()


@asynccontextmanager
async def running_cluster(
    tmp_path: Path, n: int = 3, *, forward_timeout: float = 30.0, heartbeat: float = 0.05
) -> AsyncIterator[Cluster]:
    ca = tmp_path / "ca"
    await trio.to_thread.run_sync(init_ca, ca, "test")

    def issue(role: Role, name: str) -> TlsFiles:
        return issue_certificate(ca, role, name, tmp_path / "certs" / name)

    meta_tls = await trio.to_thread.run_sync(issue, Role.METASERVER, "meta")
    client_tls = await trio.to_thread.run_sync(issue, Role.CLIENT, "client")
    admin_tls = await trio.to_thread.run_sync(issue, Role.ADMIN, "admin")
    meta = FakeMetaserver()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            RpcServer(meta.dispatcher, meta_tls, "meta").serve, "127.0.0.1", 0
        )
        meta_address = f"127.0.0.1:{port}"
        servers: list[Chunkserver] = []
        scopes: list[trio.CancelScope] = []
        dirs: list[Path] = []
        for i in range(n):
            name = f"cs{i}"
            tls = await trio.to_thread.run_sync(issue, Role.CHUNKSERVER, name)
            config = Config(
                path=None,
                cluster=ClusterConfig(metaservers=(meta_address,)),
                tls=tls,
                chunkserver=ChunkserverConfig(
                    id=name,
                    listen="127.0.0.1:0",
                    data_dir=tmp_path / name,
                    heartbeat_interval=heartbeat,
                ),
            )
            server = Chunkserver(
                config, forward_timeout=forward_timeout, hop_margin=forward_timeout / 4
            )
            scope = trio.CancelScope()

            async def run(
                server: Chunkserver = server,
                scope: trio.CancelScope = scope,
                *,
                task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                with scope:
                    await server.run(task_status=task_status)

            await nursery.start(run)
            servers.append(server)
            scopes.append(scope)
            dirs.append(tmp_path / name)
        with trio.fail_after(10):
            for server in servers:
                await server.registered.wait()
        async with RpcClientPool(
            client_tls, name="client", expect_roles={Role.CHUNKSERVER}
        ) as client:
            yield Cluster(
                meta=meta,
                meta_address=meta_address,
                servers=servers,
                scopes=scopes,
                client=client,
                meta_tls=meta_tls,
                admin_tls=admin_tls,
                client_tls=client_tls,
                data_dirs=dirs,
            )
        nursery.cancel_scope.cancel()
