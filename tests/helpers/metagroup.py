"""Three real metaservers (``run_metaserver`` with ``[metaserver] members``) inside one trio
test, over real TLS on 127.0.0.1; each can be killed (its task cancelled, no goodbye) and
restarted from its data directory on the same address.

    group = make_group(tmp_path)
    async with trio.open_nursery() as nursery:
        for node in group.addresses:
            await group.start(nursery, node)
        leader = await group.wait_leader()
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

import trio

from dfs.config import ClusterConfig, Config, MetaserverConfig
from dfs.errors import DfsError
from dfs.metaserver.server import run_metaserver
from dfs.rpc.client import RpcClient
from dfs.security.ca import init_ca, issue_certificate
from dfs.security.identity import Role, TlsFiles

NODES = ("m1", "m2", "m3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MetaGroup:
    tmp: Path
    addresses: dict[str, str]
    #: Certificates by member id, plus ``"client"`` and ``"admin"``.
    tls: dict[str, TlsFiles]
    scopes: dict[str, trio.CancelScope] = field(default_factory=dict)
    stopped: dict[str, trio.Event] = field(default_factory=dict)
    session_timeout: float = 10.0

    def config(self, node: str) -> Config:
        return Config(
            path=None,
            cluster=ClusterConfig(metaservers=tuple(self.addresses.values())),
            tls=self.tls[node],
            metaserver=MetaserverConfig(
                id=node,
                listen=self.addresses[node],
                data_dir=self.tmp / node,
                members=tuple(f"{i}={a}" for i, a in self.addresses.items()),
                session_timeout=self.session_timeout,
            ),
        )

    async def start(self, nursery: trio.Nursery, node: str) -> None:
        scope = trio.CancelScope()
        stopped = trio.Event()
        self.scopes[node] = scope
        self.stopped[node] = stopped

        async def run(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await run_metaserver(self.config(node), task_status=task_status)
            finally:
                stopped.set()

        await nursery.start(run)

    async def kill(self, node: str) -> None:
        """Stop ``node`` at once (no goodbye) and wait until its data directory is free."""
        self.scopes[node].cancel()
        with trio.fail_after(10):
            await self.stopped[node].wait()

    async def wait_leader(self, timeout: float = 20) -> str:
        """The running member that says it leads a initialised namespace."""
        with trio.fail_after(timeout):
            while True:
                leader = await self._leader()
                if leader is not None:
                    return leader
                await trio.sleep(0.05)

    async def _leader(self) -> str | None:
        for node, address in self.addresses.items():
            if node not in self.stopped or self.stopped[node].is_set():
                continue
            with trio.move_on_after(1):
                try:
                    async with RpcClient(
                        address, self.tls["admin"], name="admin", expect_roles=None
                    ) as c:
                        status = await c.call("admin.status", {}, timeout=1)
                except (DfsError, OSError):
                    continue
                if status.get("role") == "leader" and status.get("initialised"):
                    return node
        return None


def make_group(tmp: Path, *, ca_name: str = "group-test") -> MetaGroup:
    """A CA, certificates for m1..m3, a client and an admin, and three free addresses."""
    ca = tmp / "ca"
    init_ca(ca, ca_name)
    tls = {
        name: issue_certificate(ca, Role.METASERVER, name, tmp / "certs" / name) for name in NODES
    }
    for role in (Role.CLIENT, Role.ADMIN):
        tls[role.value] = issue_certificate(ca, role, role.value, tmp / "certs" / role.value)
    return MetaGroup(tmp, {n: f"127.0.0.1:{free_port()}" for n in NODES}, tls)
