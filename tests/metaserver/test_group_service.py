"""Three metaservers (``run_metaserver`` with ``[metaserver] members``) over real TLS RPC:
one leader initialises the namespace, followers refuse with NotLeader, ``RpcMetaClient``
follows the leader across a failover, and ``admin.status`` reports every member."""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio

from dfs.client.fuse_adapter import to_errno
from dfs.client.interfaces import Cred
from dfs.client.remote import RpcMetaClient
from dfs.config import Config, MetaserverConfig
from dfs.errors import ConfigError, DfsError, Exists, NotLeader, Unauthorized
from dfs.metaserver.server import run_metaserver
from dfs.rpc.client import RpcClient, RpcClientPool
from dfs.security.identity import Role
from dfs.types import ROOT_INODE, InodeId
from tests.helpers.metagroup import MetaGroup, make_group

CRED = Cred(uid=0, gid=0)


@pytest.fixture
def group(tmp_path: Path) -> Iterator[MetaGroup]:
    yield make_group(tmp_path)


async def _status(g: MetaGroup, address: str) -> dict[str, object]:
    async with RpcClient(address, g.tls["admin"], name="admin", expect_roles=None) as c:
        result: dict[str, object] = await c.call("admin.status", {}, timeout=5)
        return result


async def test_group_elects_initialises_and_client_follows_leader(group: MetaGroup) -> None:
    g = group
    async with trio.open_nursery() as nursery:
        for node in g.addresses:
            await g.start(nursery, node)
        async with RpcClientPool(g.tls["client"], name="c", expect_roles={Role.METASERVER}) as p:
            # The client knows every address; whichever it tries first, it finds the leader.
            meta = RpcMetaClient(p, list(g.addresses.values()), op_timeout=20)
            with trio.fail_after(20):
                root = await meta.getattr(ROOT_INODE)
            assert root.ino == ROOT_INODE
            d = await meta.mkdir(ROOT_INODE, b"before", 0o755, CRED)
            views = {n: await _status(g, a) for n, a in g.addresses.items()}
            leaders = [n for n, v in views.items() if v["role"] == "leader"]
            assert len(leaders) == 1
            leader = leaders[0]
            assert meta.current == g.addresses[leader]
            # Every member reports the same group; a follower names the leader.
            for v in views.values():
                members = v["metaservers"]
                assert isinstance(members, list)
                assert sorted(m["id"] for m in members) == ["m1", "m2", "m3"]
                assert v["leader"] == leader
            # A follower refuses reads (linearizable reads only on the leader).
            follower = next(n for n in g.addresses if n != leader)
            async with RpcClient(
                g.addresses[follower], g.tls["client"], name="c2", expect_roles=None
            ) as c:
                with pytest.raises(NotLeader) as info:
                    await c.call("fs.getattr", {"ino": ROOT_INODE}, timeout=5)
                assert info.value.details["leader"] == g.addresses[leader]
            # Every member has the same cluster id on disk (a follower writes it once it has
            # applied the init entry, which may be after the leader answered).
            with trio.fail_after(10):
                while not all((g.tmp / n / "cluster_id").exists() for n in g.addresses):
                    await trio.sleep(0.05)
            ids = {(g.tmp / n / "cluster_id").read_text() for n in g.addresses}
            assert len(ids) == 1
            # Kill the leader: the client moves to the new one; nothing acknowledged is lost.
            g.scopes[leader].cancel()
            with trio.fail_after(10):
                after = await meta.mkdir(ROOT_INODE, b"after", 0o755, CRED)
            names = {n for n, _ in await meta.readdir(ROOT_INODE)}
            assert names == {b"before", b"after"}
            assert (await meta.getattr(InodeId(d.ino))).ino == d.ino
            assert after.ino != d.ino
            assert meta.current != g.addresses[leader]
            survivor = await _status(g, meta.current)
            roles = {m["id"]: m["role"] for m in survivor["metaservers"]}  # type: ignore[attr-defined]
            assert roles[leader] == "unreachable"
            assert sorted(r for n, r in roles.items() if n != leader) == ["follower", "leader"]
        nursery.cancel_scope.cancel()


async def test_existing_data_never_joins_another_group(group: MetaGroup) -> None:
    g = group
    single = g.config("m1")
    assert single.metaserver is not None
    lone = Config(
        path=None,
        cluster=single.cluster,
        tls=single.tls,
        metaserver=MetaserverConfig(id="m1", listen=g.addresses["m1"], data_dir=g.tmp / "m1"),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(run_metaserver, lone)
        nursery.cancel_scope.cancel()
    assert (g.tmp / "m1" / "cluster_id").exists()
    # A single-node directory is not a member of a new three-node group, whether it records
    # its group or was written before groups existed (no record) ...
    with pytest.raises(ConfigError, match=r"belongs to the Raft group \[m1\], not \[m1,m2,m3\]"):
        await run_metaserver(g.config("m1"))
    (g.tmp / "m1" / "raft_members").unlink()
    with pytest.raises(ConfigError, match="cannot join a new 3-member Raft group"):
        await run_metaserver(g.config("m1"))
    # ... and a group's directory does not move to another group.
    async with trio.open_nursery() as nursery:
        await g.start(nursery, "m2")
        nursery.cancel_scope.cancel()
    other = g.config("m2")
    assert other.metaserver is not None
    moved = Config(
        path=None,
        cluster=other.cluster,
        tls=other.tls,
        metaserver=MetaserverConfig(
            id="m2",
            listen=g.addresses["m2"],
            data_dir=g.tmp / "m2",
            members=(f"m2={g.addresses['m2']}", f"m4={g.addresses['m3']}"),
        ),
    )
    with pytest.raises(ConfigError, match="belongs to the Raft group"):
        await run_metaserver(moved)


async def test_command_retried_on_new_leader_is_applied_once(group: MetaGroup) -> None:
    """Dissertation §6.3: the leader commits a mkdir and dies before the client hears the
    answer; the client sends the same (session, seq) to the new leader and gets the first
    result, not EEXIST, and the namespace holds one directory."""
    g = group
    async with trio.open_nursery() as nursery:
        for node in g.addresses:
            await g.start(nursery, node)
        leader = await g.wait_leader()
        async with RpcClient(
            g.addresses[leader], g.tls["client"], name="c", expect_roles=None
        ) as c:
            sid = (await c.call("session.open", {"kind": "test"}, timeout=10))["session"]
            mkdir = {
                "parent": ROOT_INODE,
                "name": b"once",
                "mode": 0o755,
                "cred": CRED.to_wire(),
                "session": sid,
                "seq": 1,
                "acked": 1,
            }
            first = await c.call("fs.mkdir", mkdir, timeout=10)
            # Every member has applied it before the leader goes (so any may win).
            with trio.fail_after(10):
                while True:
                    views = [await _status(g, a) for a in g.addresses.values()]
                    applied = {m["applied_index"] for m in views[0]["metaservers"]}  # type: ignore[attr-defined]
                    if len(applied) == 1:
                        break
                    await trio.sleep(0.05)
        g.scopes[leader].cancel()
        new = await g.wait_leader()
        assert new != leader
        async with RpcClient(g.addresses[new], g.tls["client"], name="c", expect_roles=None) as c:
            again = await c.call("fs.mkdir", mkdir, timeout=10)
            assert again == first
            # The next request of the session is new: EEXIST for real.
            with pytest.raises(Exists):
                await c.call("fs.mkdir", {**mkdir, "seq": 2, "acked": 2}, timeout=10)
            entries = await c.call("fs.readdir", {"ino": ROOT_INODE}, timeout=10)
            assert [bytes(n) for n, _ in entries] == [b"once"]
            # Another client may not use this session.
        async with RpcClient(g.addresses[new], g.tls["admin"], name="a", expect_roles=None) as a:
            with pytest.raises(Unauthorized):
                await a.call("session.keepalive", {"session": sid}, timeout=10)
        nursery.cancel_scope.cancel()


async def test_silent_sessions_expire_and_kept_ones_live(group: MetaGroup) -> None:
    g = group
    g.session_timeout = 1.0
    async with trio.open_nursery() as nursery:
        for node in g.addresses:
            await g.start(nursery, node)
        async with RpcClientPool(g.tls["client"], name="c", expect_roles={Role.METASERVER}) as p:
            kept = RpcMetaClient(p, list(g.addresses.values()), op_timeout=20)
            silent = RpcMetaClient(p, list(g.addresses.values()), op_timeout=20)
            await kept.open_session()
            await silent.open_session()
            assert kept.session_timeout == 1.0
            nursery.start_soon(kept.keep_session_alive)
            silent_id = silent.session_id
            leader = await g.wait_leader()
            async with RpcClient(
                g.addresses[leader], g.tls["admin"], name="a", expect_roles=None
            ) as a:
                with trio.fail_after(10):
                    while True:
                        ids = {s["id"] for s in await a.call("admin.sessions", {}, timeout=5)}
                        if silent_id not in ids:
                            break
                        await trio.sleep(0.1)
                assert kept.session_id in ids
            # The expired client's next mutation opens a new session transparently.
            await silent.mkdir(ROOT_INODE, b"later", 0o755, CRED)
            assert silent.session_id != silent_id
            assert silent.sessions_opened == 2
            await kept.mkdir(ROOT_INODE, b"kept", 0o755, CRED)
            assert kept.sessions_opened == 1
            await kept.close_session()
        nursery.cancel_scope.cancel()


async def test_operation_fails_with_eio_after_op_timeout_when_group_is_gone(
    group: MetaGroup,
) -> None:
    """No operation hangs: with every metaserver dead, reads and mutations give up after the
    client's op_timeout with an error the FUSE adapter turns into EIO."""
    g = group
    async with trio.open_nursery() as nursery:
        for node in g.addresses:
            await g.start(nursery, node)
        async with RpcClientPool(g.tls["client"], name="c", expect_roles={Role.METASERVER}) as p:
            meta = RpcMetaClient(p, list(g.addresses.values()), op_timeout=1.5)
            await g.wait_leader()
            with trio.fail_after(20):
                while True:
                    try:
                        await meta.mkdir(ROOT_INODE, b"ok", 0o755, CRED)
                        break
                    except DfsError:
                        await trio.sleep(0.1)
            for scope in g.scopes.values():
                scope.cancel()
            await trio.sleep(0.1)
            ops: list[Callable[[], Awaitable[object]]] = [
                lambda: meta.getattr(ROOT_INODE),
                lambda: meta.mkdir(ROOT_INODE, b"never", 0o755, CRED),
            ]
            for op in ops:
                t0 = trio.current_time()
                with pytest.raises(DfsError) as info:
                    await op()
                elapsed = trio.current_time() - t0
                assert 1.0 <= elapsed <= 4.0, elapsed
                assert to_errno(info.value) == errno.EIO
        nursery.cancel_scope.cancel()
