"""RaftNode: a 3-metaserver Raft group over real mutual-TLS RPC on loopback, real files.

Each scenario runs in one trio test bounded by ``trio.fail_after``.  Nodes tick every 50 ms
with an election timeout of 10 ticks (0.5-1 s), so elections take about a second.
"""

from __future__ import annotations

import functools
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from dfs.errors import ConfigError, Exists, NotLeader, Unauthorized
from dfs.metaserver.commit import Committer
from dfs.metaserver.peers import RAFT_METHOD, RaftGroupConfig, RaftMember
from dfs.metaserver.raftnode import RaftNode
from dfs.metaserver.raftstorage import (
    decode_snapshot_state,
    encode_snapshot_state,
    entry_to_record,
    record_to_entry,
)
from dfs.raft import ConfChange, ConfChangeOp, ConfState, Entry, EntryKind
from dfs.rpc.client import RpcClient
from dfs.rpc.dispatch import Dispatcher
from dfs.rpc.server import RpcServer
from dfs.security.ca import init_ca, issue_certificate
from dfs.security.identity import Role, TlsFiles
from dfs.types import LogIndex, NodeId, Term
from tests.metaserver.nsutil import ROOT, T0, USER

pytestmark = pytest.mark.unit

TICK = 0.05


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Member:
    id: str
    data_dir: Path
    tls: TlsFiles
    address: str
    port: int
    node: RaftNode | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event = field(default_factory=trio.Event)

    @property
    def n(self) -> RaftNode:
        assert self.node is not None, f"{self.id} is down"
        return self.node


class Group:
    """Three (or n) metaservers, each a RaftNode plus an RpcServer on a fixed port."""

    def __init__(
        self,
        tmp_path: Path,
        nursery: trio.Nursery,
        n: int,
        voters: list[str] | None = None,
        read_mode: str = "lease",
        **options: Any,
    ) -> None:
        self.read_mode = read_mode
        ca = tmp_path / "ca"
        init_ca(ca, "raft-test")
        self.ca = ca
        self.tmp = tmp_path
        self.nursery = nursery
        self.members: dict[str, Member] = {}
        for i in range(1, n + 1):
            name = f"m{i}"
            tls = issue_certificate(ca, Role.METASERVER, name, tmp_path / "certs" / name)
            port = _free_port()
            self.members[name] = Member(name, tmp_path / name, tls, f"127.0.0.1:{port}", port)
        initial = [m for m in self.members.values() if voters is None or m.id in voters]
        extra = [m for m in self.members.values() if m not in initial]
        self.config = RaftGroupConfig.from_pairs(
            [(m.id, m.address) for m in initial],
            tick_interval=TICK,
            election_tick=10,
            extra_addresses=tuple(RaftMember(NodeId(m.id), m.address) for m in extra),
            **options,
        )

    async def start(self, name: str) -> None:
        m = self.members[name]
        assert m.node is None
        m.stopped = trio.Event()
        await self.nursery.start(self._run, m)

    async def _run(self, m: Member, task_status: trio.TaskStatus[None]) -> None:
        node = await trio.to_thread.run_sync(
            functools.partial(
                RaftNode.recover,
                m.data_dir,
                node_id=m.id,
                group=self.config,
                tls=m.tls,
                read_mode=self.read_mode,
            )
        )
        dispatcher = Dispatcher()
        node.register(dispatcher)
        server = RpcServer(dispatcher, m.tls, name=m.id)
        try:
            with trio.CancelScope() as scope:
                m.scope, m.node = scope, node
                async with trio.open_nursery() as nursery:
                    await nursery.start(node.run)
                    await nursery.start(server.serve, "127.0.0.1", m.port)
                    task_status.started()
        finally:
            m.node = m.scope = None
            m.stopped.set()

    async def stop(self, name: str) -> None:
        m = self.members[name]
        assert m.scope is not None
        m.scope.cancel()
        await m.stopped.wait()

    def running(self) -> list[RaftNode]:
        return [m.node for m in self.members.values() if m.node is not None]

    async def wait_leader(self) -> RaftNode:
        """Wait until one running node leads and every running node follows it."""
        while True:
            nodes = self.running()
            leaders = [n for n in nodes if n.is_leader()]
            if len(leaders) == 1:
                lead = leaders[0]
                if all(n.leader_id() == lead.node_id for n in nodes):
                    return lead
            await trio.sleep(0.02)

    async def wait_converged(self) -> None:
        """Every running node applied the leader's whole log."""
        while True:
            nodes = self.running()
            lead = [n for n in nodes if n.is_leader()]
            if lead:
                last = lead[0].statistics().last_index
                if all(n.statistics().applied_index == last for n in nodes):
                    return
            await trio.sleep(0.02)

    def states(self) -> set[bytes]:
        return {n.namespace.snapshot_state() for n in self.running()}


@asynccontextmanager
async def group(
    tmp_path: Path,
    n: int = 3,
    voters: list[str] | None = None,
    read_mode: str = "lease",
    **options: Any,
) -> AsyncIterator[Group]:
    async with trio.open_nursery() as nursery:
        g = Group(tmp_path, nursery, n, voters, read_mode, **options)
        for name in g.members:
            await g.start(name)
        yield g
        nursery.cancel_scope.cancel()


def mknod(name: bytes) -> dict[str, Any]:
    return {
        "op": "mknod",
        "now_ns": T0,
        "parent": ROOT,
        "name": name,
        "mode": stat.S_IFREG | 0o644,
        "rdev": 0,
        "cred": USER,
    }


INIT = {"op": "init", "now_ns": T0, "goal": 2, "cluster_id": "c"}


def names(node: RaftNode) -> set[bytes]:
    return {bytes(e[0]) for e in node.namespace.readdir(ROOT)} - {b".", b".."}


# ---------------------------------------------------------------------- pure storage mapping
def test_entry_records_round_trip() -> None:
    entries = [
        Entry(Term(1), LogIndex(1), EntryKind.NOOP, b""),
        Entry(Term(1), LogIndex(2), EntryKind.NORMAL, {"op": "mkdir", "name": b"x"}),
        Entry(Term(2), LogIndex(3), EntryKind.CONF, {"op": "add_voter", "node": "m4"}),
        Entry(Term(2), LogIndex(4), EntryKind.NORMAL, b"raw"),
    ]
    for e in entries:
        rec = entry_to_record(e)
        assert rec.command["op"] in ("noop", "mkdir")  # a Committer would apply a no-op
        assert record_to_entry(rec) == e


def test_snapshot_envelope_and_legacy_state() -> None:
    conf = ConfState(frozenset({NodeId("m1"), NodeId("m2")}))
    initial = ConfState(frozenset({NodeId("x")}))
    assert decode_snapshot_state(encode_snapshot_state(conf, b"\x80"), initial) == (conf, b"\x80")
    legacy = b"\x81\xa6format\x01"  # a bare Namespace snapshot, as the Committer writes
    assert decode_snapshot_state(legacy, initial) == (initial, legacy)


# ---------------------------------------------------------------------- cluster scenarios
async def test_election_replication_reads_and_redirects(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with group(tmp_path) as g:
            lead = await g.wait_leader()
            assert sum(n.is_leader() for n in g.running()) == 1
            await lead.propose(INIT)
            for i in range(20):
                await lead.propose(mknod(b"f%d" % i))
            with pytest.raises(Exists):
                await lead.propose(mknod(b"f0"))
            await g.wait_converged()
            assert len(g.states()) == 1
            assert all(names(n) == {b"f%d" % i for i in range(20)} for n in g.running())

            follower = next(n for n in g.running() if not n.is_leader())
            with pytest.raises(NotLeader) as info:
                await follower.propose(mknod(b"nope"))
            assert info.value.details["leader"] == g.members[lead.node_id].address
            assert follower.leader_address() == g.members[lead.node_id].address

            await lead.read_barrier()
            with pytest.raises(NotLeader):
                await follower.read_barrier()

            stats = lead.statistics()
            assert stats.role == "leader" and stats.leader == lead.node_id
            # noop of the term, init, 20 files, 1 failed mknod
            assert stats.commit_index == stats.applied_index == stats.last_index >= 23
            assert stats.failed_commands == 1
            fstats = follower.statistics()
            assert fstats.role == "follower" and fstats.term == stats.term

            # raft.message is for metaservers only, and a metaserver only speaks for itself.
            client_tls = issue_certificate(g.ca, Role.CLIENT, "c1", tmp_path / "certs" / "c1")
            target = g.members[follower.node_id].address
            async with RpcClient(target, client_tls, name="c1", expect_roles=None) as c:
                with pytest.raises(Unauthorized):
                    await c.call(RAFT_METHOD, {"from": "c1", "messages": []})
            m1 = g.members[lead.node_id].tls
            async with RpcClient(target, m1, name="x", expect_roles=None) as c:
                with pytest.raises(Unauthorized):
                    await c.call(RAFT_METHOD, {"from": "m9", "messages": []})


async def test_failover_then_old_leader_rejoins(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with group(tmp_path) as g:
            lead = await g.wait_leader()
            await lead.propose(INIT)
            acked = set()
            for i in range(10):
                await lead.propose(mknod(b"a%d" % i))
                acked.add(b"a%d" % i)
            old = lead.node_id
            old_term = lead.statistics().term
            t0 = trio.current_time()
            await g.stop(old)
            new = await g.wait_leader()
            failover = trio.current_time() - t0
            assert new.node_id != old and new.statistics().term > old_term
            assert failover < 5, failover
            # A new leader applies what its predecessor committed only once it has committed
            # an entry of its own term: read through the barrier, as the service does.
            await new.read_barrier()
            assert acked <= names(new)
            for i in range(10):
                await new.propose(mknod(b"b%d" % i))
                acked.add(b"b%d" % i)

            await g.start(old)
            await g.wait_leader()
            await g.wait_converged()
            assert len(g.states()) == 1
            assert names(g.members[old].n) == acked


async def test_all_stopped_and_restarted_from_disk(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with group(tmp_path) as g:
            lead = await g.wait_leader()
            await lead.propose(INIT)
            for i in range(15):
                await lead.propose(mknod(b"f%d" % i))
            await g.wait_converged()
            (before,) = g.states()
            for name in list(g.members):
                await g.stop(name)
            assert g.running() == []
            for name in list(g.members):
                await g.start(name)
            lead = await g.wait_leader()
            await g.wait_converged()
            assert g.states() == {before}
            await lead.propose(mknod(b"after-restart"))
            await g.wait_converged()
            assert all(b"after-restart" in names(n) for n in g.running())


async def test_lagging_follower_catches_up_by_install_snapshot(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with group(tmp_path, snapshot_every=20) as g:
            lead = await g.wait_leader()
            await lead.propose(INIT)
            lagger = next(n for n in g.running() if not n.is_leader()).node_id
            await g.stop(lagger)
            for i in range(60):
                await lead.propose(mknod(b"f%d" % i))
            stats = lead.statistics()
            assert stats.snapshots_taken >= 2
            assert stats.snapshot_index > 20
            # The compacted log segments are gone from disk too.
            assert lead.storage.log is not None and lead.storage.log.first_index > 1
            await g.start(lagger)
            await g.wait_converged()
            assert g.members[lagger].n.statistics().snapshots_installed >= 1
            assert len(g.states()) == 1
            assert len(names(g.members[lagger].n)) == 60
            # ...and it restarts from the installed snapshot.
            await g.stop(lagger)
            await g.start(lagger)
            await g.wait_converged()
            assert len(g.states()) == 1


async def test_group_commit_50_concurrent_proposals(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with group(tmp_path) as g:
            lead = await g.wait_leader()
            await lead.propose(INIT)
            await g.wait_converged()
            before = lead.statistics().fsyncs
            results: list[Any] = []

            async def one(i: int) -> None:
                results.append(await lead.propose(mknod(b"g%d" % i)))

            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
            fsyncs = lead.statistics().fsyncs - before
            assert len(results) == 50
            assert fsyncs <= 10, fsyncs
            await g.wait_converged()
            assert len(g.states()) == 1


async def test_transfer_leadership(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with group(tmp_path) as g:
            lead = await g.wait_leader()
            await lead.propose(INIT)
            await g.wait_converged()
            target = next(n for n in g.running() if not n.is_leader())
            await lead.transfer_leadership(target.node_id)
            new = await g.wait_leader()
            while new.node_id != target.node_id:
                await trio.sleep(0.02)
                new = await g.wait_leader()
            await new.propose(mknod(b"x"))
            await new.read_barrier()
            with pytest.raises(NotLeader):
                await lead.propose(mknod(b"y"))


@pytest.mark.parametrize("read_mode", ["lease", "read_index"])
async def test_reads_by_lease_or_by_read_index(tmp_path: Path, read_mode: str) -> None:
    """Under a lease, read barriers are answered without the driver or any message; with
    ``read_mode="read_index"`` every one waits for a heartbeat round."""
    with trio.fail_after(30):
        async with group(tmp_path, read_mode=read_mode) as g:
            lead = await g.wait_leader()
            await lead.propose(INIT)
            await g.wait_converged()
            await trio.sleep(3 * TICK)  # a heartbeat round renews the lease
            before = lead.statistics()
            for _ in range(20):
                await lead.read_barrier()
            after = lead.statistics()
            assert after.read_barriers - before.read_barriers == 20
            if read_mode == "lease":
                assert after.lease_reads - before.lease_reads == 20
                assert after.readies == before.readies
            else:
                assert after.lease_reads == 0
                assert after.messages_sent > before.messages_sent
            # A write then a read: the read waits for nothing but the write's apply.
            await lead.propose(mknod(b"w"))
            await lead.read_barrier()
            assert b"w" in names(lead)


def test_unknown_read_mode_is_refused(tmp_path: Path) -> None:
    config = RaftGroupConfig.from_pairs([("m1", "127.0.0.1:1")])
    with pytest.raises(ConfigError):
        RaftNode.recover(tmp_path, node_id="m1", group=config, tls=None, read_mode="psychic")  # type: ignore[arg-type]


async def test_committer_data_dir_grows_into_a_group(tmp_path: Path) -> None:
    """A single-node Committer's data dir (log and bare snapshot) opens as the only voter of
    a group; ``propose_conf_change`` adds two empty members, which catch up (by snapshot)."""
    committer = Committer.recover(tmp_path / "m1", node_id="m1", snapshot_every=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(committer.run)
        await committer.propose(INIT)
        for i in range(8):
            await committer.propose(mknod(b"old%d" % i))
        legacy = committer.namespace.snapshot_state()
        nursery.cancel_scope.cancel()
    with trio.fail_after(30):
        async with group(tmp_path, voters=["m1"]) as g:
            lead = g.members["m1"].n
            while not lead.is_leader():
                await trio.sleep(0.02)
            assert lead.namespace.snapshot_state() == legacy
            await lead.propose(mknod(b"new"))
            for name in ("m2", "m3"):
                await lead.propose_conf_change(ConfChange(ConfChangeOp.ADD_VOTER, NodeId(name)))
            assert lead.core.conf.voters == {"m1", "m2", "m3"}
            await g.wait_leader()
            await g.wait_converged()
            assert len(g.states()) == 1
            expect = {b"old%d" % i for i in range(8)} | {b"new"}
            assert all(names(n) == expect for n in g.running())
