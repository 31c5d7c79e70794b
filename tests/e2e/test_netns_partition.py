"""The metadata Raft group across real network partitions.

Three ``dfs metaserver`` processes run on three throw-away hosts (network namespaces on one
bridge, tests/helpers/netns.py), each listening on its own host's address.  This test process
sits in the root namespace, on the bridge, like a client machine on the same LAN; a client
that must see only one side of a partition runs *inside* a host (an RPC agent).

What is checked, with the timing the daemons use (Raft tick 0.05 s, election timeout 10 to 20
ticks, CheckQuorum and PreVote on):

* a cut-off leader steps down, never commits and never answers a read or a write, while the
  majority elects a leader in a higher term and goes on; on heal the old leader follows
  without an election, catches up, and every acknowledged write is there (and no other);
* a cut-off follower: the leader keeps serving; the follower's term does not move (PreVote),
  so its return changes nothing;
* a follower cut off from the leader only (it still reaches the other follower) cannot
  disrupt the group either (PreVote, and the other follower's leader lease);
* a client whose leader is cut off (no connection reset) moves to the new leader.

Each scenario is checked twice: through ``admin.status`` while it happens, and afterwards to
the millisecond from the role changes the daemons log.  The harness's own fault primitives
have a plain-TCP test at the end.
"""

from __future__ import annotations

import functools
import math
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from dfs.client.interfaces import Cred
from dfs.client.remote import RpcMetaClient
from dfs.config import write_config
from dfs.errors import DfsError, NotFound
from dfs.rpc.client import RpcClientPool
from dfs.security.ca import init_ca, issue_certificate
from dfs.security.identity import Role, TlsFiles
from dfs.types import ROOT_INODE
from tests.helpers.netns import Agent, Answer, Host, NetnsLab, Proc, netns_lab, start_agent

pytestmark = pytest.mark.netns

IDS = ("m1", "m2", "m3")
META_PORT = 9420
RAFT_TICK = 0.05
#: The longest randomised election timeout (2 x 10 ticks); CheckQuorum runs every 10 ticks.
MAX_ELECTION_TIMEOUT = 20 * RAFT_TICK
#: "A few election timeouts": the majority has a new leader, the old one stepped down.
FAILOVER_BOUND = 5.0
#: Every test body, start-up included.
TEST_BUDGET = 45.0
#: op_timeout of the client whose leader is cut off (longer than one attempt's deadline).
CLIENT_OP_TIMEOUT = 5.0
ROOT = int(ROOT_INODE)
CRED = Cred(uid=0, gid=0)
#: How a request that reaches only the cut-off side may end (never ok, never "not found").
REFUSED = {"not_leader", "deadline_exceeded", "unavailable"}
#: Log lines that mean a bug: a partition is not a reason for any of these.
BAD_LOG_MARKERS = ("Traceback", " WARNING ", " ERROR ", " CRITICAL ")


# ---------------------------------------------------------------- the cluster on the hosts
@dataclass
class MetaGroup:
    """Three metaservers, ``m<i>`` on host ``h<i>`` at ``<host address>:9420``."""

    lab: NetnsLab
    tmp: Path
    hosts: dict[str, Host]
    addresses: dict[str, str]
    #: TLS identities by name: the metaserver ids, "client" and "admin".
    tls: dict[str, TlsFiles]
    procs: dict[str, Proc] = field(default_factory=dict)
    agents: list[Agent] = field(default_factory=list)

    @classmethod
    def create(cls, lab: NetnsLab, tmp: Path) -> MetaGroup:
        ca = tmp / "ca"
        init_ca(ca, "netns")
        hosts = dict(zip(IDS, lab.hosts, strict=True))
        addresses = {m: f"{h.address}:{META_PORT}" for m, h in hosts.items()}
        # Peers are identified by the name in their certificate, not by address (no host
        # name check, dfs/security/tls.py); the SAN is informative only.
        tls = {
            m: issue_certificate(ca, Role.METASERVER, m, tmp / "certs" / m, hosts=(h.address,))
            for m, h in hosts.items()
        }
        tls["client"] = issue_certificate(ca, Role.CLIENT, "client", tmp / "certs" / "client")
        tls["admin"] = issue_certificate(ca, Role.ADMIN, "admin", tmp / "certs" / "admin")
        members = [f"{m}={a}" for m, a in addresses.items()]
        for m in IDS:
            files = tls[m]
            write_config(
                tmp / f"{m}.toml",
                {
                    "cluster": {"metaservers": list(addresses.values())},
                    "tls": {"ca": files.ca_cert, "cert": files.cert, "key": files.key},
                    "metaserver": {
                        "id": m,
                        "listen": addresses[m],
                        "data_dir": tmp / "data" / m,
                        "members": members,
                        "raft_tick": RAFT_TICK,
                    },
                },
            )
        return cls(lab=lab, tmp=tmp, hosts=hosts, addresses=addresses, tls=tls)

    def start(self, member: str) -> None:
        argv = [
            sys.executable,
            "-m",
            "dfs",
            "metaserver",
            "--config",
            str(self.tmp / f"{member}.toml"),
        ]
        log_path = self.tmp / "logs" / f"{member}.log"
        self.procs[member] = self.lab.spawn(self.hosts[member], argv, log_path=log_path)

    def agent(self, member: str, identity: str) -> Agent:
        """An RPC agent on ``member``'s host with the ``identity`` certificate; its
        ``RpcMetaClient`` knows every metaserver, as a real client would."""
        files = self.tls[identity]
        agent = start_agent(
            self.lab,
            self.hosts[member],
            ca=files.ca_cert,
            cert=files.cert,
            key=files.key,
            log_path=self.tmp / "logs" / f"agent-{identity}-on-{member}.log",
            metaservers=list(self.addresses.values()),
            name=f"agent-{identity}",
        )
        self.agents.append(agent)
        return agent

    def stop(self) -> dict[str, int]:
        """SIGTERM every metaserver (SIGKILL after 5 s); their exit statuses."""
        for agent in self.agents:
            agent.close()
        return {m: self.lab.terminate(p) for m, p in self.procs.items()}

    def log_problems(self) -> list[str]:
        problems = []
        for name, proc in [
            *self.procs.items(),
            *((a.proc.log_path.stem, a.proc) for a in self.agents),
        ]:
            lines = proc.log().splitlines()
            for i, line in enumerate(lines):
                if any(marker in line for marker in BAD_LOG_MARKERS):
                    problems.append(f"{name}: " + "\n".join(lines[i : i + 12]))
                    break
        return problems


@pytest.fixture
def group(tmp_path: Path) -> Iterator[MetaGroup]:
    """Three started metaservers; on exit they are stopped and their logs must be clean."""
    with netns_lab(len(IDS)) as lab:
        g = MetaGroup.create(lab, tmp_path)
        for m in IDS:
            g.start(m)
        try:
            yield g
        finally:
            codes = g.stop()
            for m, proc in g.procs.items():
                # Shown by pytest only when the test fails.
                print(f"----- {m} ({proc.log_path}), last lines:")
                print("\n".join(proc.log().splitlines()[-25:]))
        assert codes == dict.fromkeys(IDS, 0), f"metaserver exit statuses {codes}"
        problems = g.log_problems()
        assert not problems, "unexpected errors in the logs:\n" + "\n\n".join(problems)


@asynccontextmanager
async def pools(g: MetaGroup) -> AsyncIterator[tuple[RpcClientPool, RpcClientPool]]:
    """(admin pool, client pool) in this process, the root namespace."""
    async with (
        RpcClientPool(g.tls["admin"], name="netns-admin", expect_roles={Role.METASERVER}) as admin,
        RpcClientPool(g.tls["client"], name="netns-client", expect_roles={Role.METASERVER}) as cl,
    ):
        yield admin, cl


# ---------------------------------------------------------------- Raft views
View = dict[str, Any]


async def own_view(admin: RpcClientPool, address: str) -> View | None:
    """The Raft state of the member at ``address`` as it sees itself (``admin.status``),
    or None if it does not answer within 3 s."""
    try:
        status = await admin.call(address, "admin.status", {}, timeout=3.0, fail_fast=True)
    except DfsError:
        return None
    view: View = status["metaservers"][0]
    return view


async def views_of(
    admin: RpcClientPool, g: MetaGroup, members: Sequence[str]
) -> dict[str, View | None]:
    views: dict[str, View | None] = {}

    async def fetch(m: str) -> None:
        views[m] = await own_view(admin, g.addresses[m])

    async with trio.open_nursery() as nursery:
        for m in members:
            nursery.start_soon(fetch, m)
    return {m: views[m] for m in members}


def agreed_leader(views: Mapping[str, View | None]) -> tuple[str, int] | None:
    """(leader, term) if exactly one member leads and every other one follows it in its term."""
    if any(v is None for v in views.values()):
        return None
    leaders = [m for m, v in views.items() if v is not None and v["role"] == "leader"]
    if len(leaders) != 1:
        return None
    leader = leaders[0]
    terms = {v["term"] for v in views.values() if v is not None}
    followed = {v["leader"] for v in views.values() if v is not None}
    if len(terms) != 1 or followed != {leader}:
        return None
    return leader, int(terms.pop())


async def wait_leader(
    admin: RpcClientPool, g: MetaGroup, members: Sequence[str], *, timeout: float, what: str
) -> tuple[str, int]:
    views: dict[str, View | None] = {}
    with trio.move_on_after(timeout):
        while True:
            views = await views_of(admin, g, members)
            if (agreed := agreed_leader(views)) is not None:
                return agreed
            await trio.sleep(0.05)
    raise AssertionError(f"no leader agreed by {members} within {timeout} s ({what}): {views}")


async def wait_converged(
    admin: RpcClientPool, g: MetaGroup, *, leader: str, term: int, timeout: float
) -> dict[str, View]:
    """Wait until every member follows ``leader`` in ``term`` and all applied the same
    committed index.  Fails at once if any member is seen in a later term (a disruption)."""
    views: dict[str, View | None] = {}
    with trio.move_on_after(timeout):
        while True:
            views = await views_of(admin, g, IDS)
            seen = [v for v in views.values() if v is not None]
            assert all(v["term"] <= term for v in seen), f"term moved past {term}: {views}"
            if agreed_leader(views) == (leader, term):
                indexes = {(v["commit_index"], v["applied_index"]) for v in seen}
                if len(indexes) == 1 and seen[0]["commit_index"] == seen[0]["applied_index"]:
                    return {m: v for m, v in views.items() if v is not None}
            await trio.sleep(0.05)
    raise AssertionError(f"not converged on {leader} in term {term} within {timeout} s: {views}")


# ---------------------------------------------------------------- namespace helpers
async def mkdirs(meta: RpcMetaClient, names: Sequence[bytes]) -> list[bytes]:
    """mkdir each name in the root directory; the names acknowledged (all, or it raises)."""
    acked = []
    for name in names:
        await meta.mkdir(ROOT_INODE, name, 0o755, CRED)
        acked.append(name)
    return acked


async def root_names(g: MetaGroup) -> set[bytes]:
    """The root directory's entries, read through the leader by a fresh client."""
    async with pools(g) as (_admin, cl):
        meta = RpcMetaClient(cl, list(g.addresses.values()), op_timeout=10.0)
        return {name for name, _attr in await meta.readdir(ROOT_INODE)}


async def agent_call(agent: Agent, method: str, params: dict[str, Any], **kw: Any) -> Answer:
    return await trio.to_thread.run_sync(functools.partial(agent.call, method, params, **kw))


async def agent_result(agent: Agent, req_id: int, timeout: float) -> Answer:
    return await trio.to_thread.run_sync(agent.result, req_id, timeout)


async def agent_view(agent: Agent, address: str) -> View:
    """``address``'s own Raft view, asked from inside the agent's host."""
    answer = await agent_call(agent, "admin.status", {}, to=address, timeout=5.0)
    assert answer.ok, f"admin.status from inside the host: {answer}"
    view: View = answer.result["metaservers"][0]
    return view


def mkdir_params(name: bytes) -> dict[str, Any]:
    return {"parent": ROOT, "name": name, "mode": 0o755, "cred": CRED.to_wire()}


def lookup_params(name: bytes) -> dict[str, Any]:
    return {"parent": ROOT, "name": name}


# ---------------------------------------------------------------- role changes in the logs
_ROLE_CHANGE = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO dfs\.metaserver\.raftnode: raft: "
    r"(?P<member>\S+) is (?P<role>\w+) in term (?P<term>\d+) \(leader (?P<leader>\S+)\)$"
)


@dataclass(frozen=True)
class RoleChange:
    """One "raft: m1 is leader in term 2 (leader m1)" line of a metaserver's log."""

    at: float  # wall clock (the log's timestamp), to compare with time.time() of a fault
    member: str
    role: str
    term: int
    leader: str | None

    def __str__(self) -> str:
        return (
            f"{self.member} {self.role} in term {self.term} (leader {self.leader}) @{self.at:.3f}"
        )


def role_changes(g: MetaGroup, since: float, until: float = math.inf) -> list[RoleChange]:
    """Every member's role changes logged in ``[since, until)`` (wall clock), oldest first.
    The logs are stamped to the millisecond, hence the 1 ms of slack."""
    changes = []
    for proc in g.procs.values():
        for line in proc.log().splitlines():
            if (m := _ROLE_CHANGE.match(line)) is None:
                continue
            at = datetime.strptime(m["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if since - 0.001 <= at < until:
                leader = None if m["leader"] == "None" else m["leader"]
                changes.append(RoleChange(at, m["member"], m["role"], int(m["term"]), leader))
    return sorted(changes, key=lambda c: c.at)


def assert_no_election(changes: Sequence[RoleChange], term: int, what: str) -> None:
    """Nobody campaigned for real or took over, and no term passed ``term``: ``changes`` are
    followers and PreVote rounds (pre-candidates) only."""
    bad = [c for c in changes if c.role not in ("follower", "pre_candidate") or c.term > term]
    assert not bad, f"{what}: unexpected role changes {[str(c) for c in bad]}"


# ---------------------------------------------------------------- tests
async def test_cut_leader_fails_over_and_old_leader_serves_nothing(group: MetaGroup) -> None:
    g = group
    with trio.fail_after(TEST_BUDGET):
        async with pools(g) as (admin, cl):
            leader, term0 = await wait_leader(admin, g, IDS, timeout=20, what="start-up")
            majority = [m for m in IDS if m != leader]
            old_address = g.addresses[leader]
            meta = RpcMetaClient(cl, list(g.addresses.values()), op_timeout=10.0)
            acked = await mkdirs(meta, [b"before-%d" % i for i in range(5)])
            await wait_converged(admin, g, leader=leader, term=term0, timeout=10)

            # A client and an admin inside the leader's host: after the cut they reach only it.
            inside = g.agent(leader, "client")
            inside_admin = g.agent(leader, "admin")
            for agent in (inside, inside_admin):
                await trio.to_thread.run_sync(agent.wait_ready, 15.0)
            warm = await agent_call(inside, "fs.lookup", lookup_params(b"before-0"), to=old_address)
            assert warm.ok, warm

            before_cut = await own_view(admin, old_address)
            assert before_cut is not None and before_cut["role"] == "leader", before_cut
            commit_at_cut = before_cut["commit_index"]
            g.lab.cut(g.hosts[leader])
            cut_wall = time.time()
            # Sent within milliseconds: the old leader still believes it leads (CheckQuorum
            # notices after 10 to 20 ticks), appends them, and can never commit them.
            isolated = [b"isolated-%d" % i for i in range(3)]
            pending = [
                inside.send(
                    "fs.mkdir", mkdir_params(n), to=old_address, timeout=3.0, idempotent=False
                )
                for n in isolated
            ]

            new_leader, term1 = await wait_leader(
                admin, g, majority, timeout=FAILOVER_BOUND, what="the majority after the cut"
            )
            assert new_leader != leader and term1 > term0
            # A client on the majority side that knows only the members it can reach.
            majority_meta = RpcMetaClient(cl, [g.addresses[m] for m in majority], op_timeout=10.0)
            after = [b"after-%d" % i for i in range(5)]
            acked += await mkdirs(majority_meta, after)

            # The old leader stepped down, never advanced its commit index, and its term did
            # not move (PreVote: its failed elections do not raise it).
            samples = []
            with trio.fail_after(FAILOVER_BOUND):
                while True:
                    v = await agent_view(inside_admin, old_address)
                    samples.append(v)
                    if v["role"] != "leader":
                        break
            for v in samples:
                assert v["commit_index"] <= commit_at_cut, (commit_at_cut, samples)
                assert v["term"] == term0, (term0, samples)
            # The mkdirs sent at the cut were appended there, and never committed.
            assert samples[-1]["last_index"] >= commit_at_cut + len(isolated), samples

            # No stale read: names the majority created after the cut are never "not found"
            # on the old side, neither from the old leader itself nor through a full client.
            for name in after:
                answer = await agent_call(
                    inside, "fs.lookup", lookup_params(name), to=old_address, timeout=2.0
                )
                assert not answer.ok and answer.code in REFUSED, (name, answer)
            answer = await agent_call(inside, "fs.lookup", lookup_params(after[0]), timeout=3.0)
            assert not answer.ok and answer.code != "not_found", answer
            # No write succeeds there either: not the ones sent at the cut, not a late one.
            isolated_answers = [await agent_result(inside, r, 10.0) for r in pending]
            for answer in isolated_answers:
                assert not answer.ok and answer.code in REFUSED, answer
            answer = await agent_call(
                inside,
                "fs.mkdir",
                mkdir_params(b"isolated-late"),
                to=old_address,
                timeout=2.0,
                idempotent=False,
            )
            assert not answer.ok and answer.code in REFUSED, answer
            last = await agent_view(inside_admin, old_address)
            assert last["role"] != "leader" and last["term"] == term0, last
            assert last["commit_index"] <= commit_at_cut, (commit_at_cut, last)

            # Taken before: the first packets pass while heal() still waits for the link.
            heal_wall = time.time()
            g.lab.heal(g.hosts[leader])
        async with pools(g) as (admin, _cl):
            # Rejoins as a follower of the new leader; nobody's term moves (checked at every
            # poll); everyone applies the same log.
            views = await wait_converged(admin, g, leader=new_leader, term=term1, timeout=10)
            caught_up_after = time.time() - heal_wall
            assert views[leader]["role"] == "follower"
        names = await root_names(g)
        assert names == set(acked), f"acknowledged {sorted(acked)}, found {sorted(names)}"
        async with pools(g) as (_admin, cl):
            meta = RpcMetaClient(cl, list(g.addresses.values()), op_timeout=10.0)
            for name in [*isolated, b"isolated-late"]:
                with pytest.raises(NotFound):
                    await meta.lookup(ROOT_INODE, name)

    # The same story, to the millisecond, from the daemons' own logs.
    during = role_changes(g, since=cut_wall, until=heal_wall)
    old = [c for c in during if c.member == leader]
    assert old, "the old leader never stepped down"
    assert (old[0].role, old[0].term) == ("follower", term0), [str(c) for c in old]
    stepped_down_after = old[0].at - cut_wall
    assert stepped_down_after <= 3 * MAX_ELECTION_TIMEOUT, [str(c) for c in old]
    assert_no_election(old, term0, "the cut-off old leader")
    won = [c for c in during if c.role == "leader"]
    assert [(c.member, c.term) for c in won] == [(new_leader, term1)], [str(c) for c in during]
    elected_after = won[0].at - cut_wall
    assert elected_after <= FAILOVER_BOUND
    rejoin = role_changes(g, since=heal_wall)
    assert_no_election(rejoin, term1, "after the heal")
    assert any(c.member == leader and c.leader == new_leader for c in rejoin), rejoin
    print(
        f"\nleader {leader} cut in term {term0}: it stepped down after {stepped_down_after:.2f} s; "
        f"{new_leader} leads term {term1} {elected_after:.2f} s after the cut; writes sent to "
        f"the old leader at the cut ended {[a.code for a in isolated_answers]}; all caught up "
        f"{caught_up_after:.2f} s after the heal"
    )


async def test_cut_follower_leader_keeps_serving_and_term_stays(group: MetaGroup) -> None:
    g = group
    with trio.fail_after(TEST_BUDGET):
        async with pools(g) as (admin, cl):
            leader, term0 = await wait_leader(admin, g, IDS, timeout=20, what="start-up")
            follower, other = [m for m in IDS if m != leader]
            order = [g.addresses[m] for m in (leader, other, follower)]
            meta = RpcMetaClient(cl, order, op_timeout=10.0)
            acked = await mkdirs(meta, [b"before-%d" % i for i in range(3)])
            await wait_converged(admin, g, leader=leader, term=term0, timeout=10)
            inside_admin = g.agent(follower, "admin")
            await trio.to_thread.run_sync(inside_admin.wait_ready, 15.0)

            g.lab.cut(g.hosts[follower])
            cut_wall = time.time()
            cut_at = trio.current_time()
            with trio.fail_after(5.0):  # a majority of two: each mkdir is one round trip
                acked += await mkdirs(meta, [b"during-%d" % i for i in range(10)])
            assert await wait_leader(
                admin, g, [leader, other], timeout=5, what="leader and the other follower"
            ) == (leader, term0)
            # Several election timeouts without a leader for the cut follower: its PreVote
            # rounds fail without raising its term.
            await trio.sleep_until(cut_at + 3 * MAX_ELECTION_TIMEOUT)
            v = await agent_view(inside_admin, g.addresses[follower])
            assert v["role"] != "leader" and v["term"] == term0, v

            # Taken before: the first packets pass while heal() still waits for the link.
            heal_wall = time.time()
            g.lab.heal(g.hosts[follower])
        async with pools(g) as (admin, cl):
            await wait_converged(admin, g, leader=leader, term=term0, timeout=10)
            meta = RpcMetaClient(cl, list(g.addresses.values()), op_timeout=10.0)
            acked += await mkdirs(meta, [b"after-heal"])
        assert await root_names(g) == set(acked)
    during = role_changes(g, since=cut_wall, until=heal_wall)
    assert {c.member for c in during} <= {follower}, [str(c) for c in during]
    assert_no_election(during, term0, "the cut-off follower")
    assert_no_election(role_changes(g, since=heal_wall), term0, "after the heal")


async def test_follower_cut_from_leader_only_cannot_disrupt(group: MetaGroup) -> None:
    g = group
    with trio.fail_after(TEST_BUDGET):
        async with pools(g) as (admin, cl):
            leader, term0 = await wait_leader(admin, g, IDS, timeout=20, what="start-up")
            follower, other = [m for m in IDS if m != leader]
            order = [g.addresses[m] for m in (leader, other, follower)]
            meta = RpcMetaClient(cl, order, op_timeout=10.0)
            acked = await mkdirs(meta, [b"before-0"])
            await wait_converged(admin, g, leader=leader, term=term0, timeout=10)

            # The follower still reaches the other follower (and this process); only its path
            # to the leader is down.  Its pre-votes reach the other follower, which hears from
            # the leader and refuses them (leader lease).
            g.lab.cut_between(g.hosts[leader], g.hosts[follower])
            cut_wall = time.time()
            cut_at = trio.current_time()
            with trio.fail_after(5.0):
                acked += await mkdirs(meta, [b"during-%d" % i for i in range(5)])
            await trio.sleep_until(cut_at + 3 * MAX_ELECTION_TIMEOUT)
            views = await views_of(admin, g, IDS)
            assert agreed_leader({m: views[m] for m in (leader, other)}) == (leader, term0), views
            cut_view = views[follower]
            assert cut_view is not None, views
            assert cut_view["role"] != "leader" and cut_view["term"] == term0, views

            # Taken before: the first packets pass while heal() still waits for the link.
            heal_wall = time.time()
            g.lab.heal_between(g.hosts[leader], g.hosts[follower])
            await wait_converged(admin, g, leader=leader, term=term0, timeout=10)
        assert await root_names(g) == set(acked)
    during = role_changes(g, since=cut_wall, until=heal_wall)
    assert {c.member for c in during} <= {follower}, [str(c) for c in during]
    assert_no_election(during, term0, "the follower cut from the leader")
    assert_no_election(role_changes(g, since=heal_wall), term0, "after the heal")


async def test_client_of_a_cut_off_leader_moves_to_the_new_leader(group: MetaGroup) -> None:
    """A leader that vanishes without a connection reset: the client's read gives up on it
    after one attempt's deadline (``ATTEMPT_TIMEOUT``) and finds the new leader, and its
    next mutation (in its session) commits there."""
    g = group
    with trio.fail_after(TEST_BUDGET):
        async with pools(g) as (admin, cl):
            leader, _term0 = await wait_leader(admin, g, IDS, timeout=20, what="start-up")
            order = [g.addresses[leader], *(g.addresses[m] for m in IDS if m != leader)]
            meta = RpcMetaClient(cl, order, op_timeout=CLIENT_OP_TIMEOUT)
            await mkdirs(meta, [b"before"])
            g.lab.cut(g.hosts[leader])
            try:
                start = trio.current_time()
                await meta.lookup(ROOT_INODE, b"before")
                assert trio.current_time() - start <= FAILOVER_BOUND
                assert meta.current != g.addresses[leader]
                await mkdirs(meta, [b"after"])
            finally:
                g.lab.heal(g.hosts[leader])


def test_harness_cut_heal_and_cut_between(tmp_path: Path) -> None:
    """The fault primitives themselves, with plain TCP: who reaches whom."""
    listen = (
        "import socket, sys\n"
        "s = socket.create_server((sys.argv[1], 7000))\n"
        "while True:\n"
        "    c, _ = s.accept(); c.sendall(b'hi'); c.close()\n"
    )
    probe = (
        "import socket, sys, concurrent.futures as cf\n"
        "def reach(a):\n"
        "    try:\n"
        "        with socket.create_connection((a, 7000), timeout=0.3) as c:\n"
        "            return c.recv(2) == b'hi'\n"
        "    except OSError:\n"
        "        return False\n"
        "with cf.ThreadPoolExecutor(8) as ex:\n"
        "    print(' '.join(str(int(r)) for r in ex.map(reach, sys.argv[1:])))\n"
    )
    with netns_lab(3) as lab:
        h1, h2, h3 = lab.hosts
        for h in lab.hosts:
            lab.spawn(
                h, [sys.executable, "-c", listen, h.address], log_path=tmp_path / "listen.log"
            )
        argv = [sys.executable, "-c", probe, *(h.address for h in lab.hosts)]

        def reach_matrix() -> set[tuple[str, str]]:
            """Pairs (from, to) that connect, probed from everywhere at once; "root" is this
            process's namespace."""
            probes = {"root": subprocess.Popen(argv, stdout=subprocess.PIPE)}
            for h in lab.hosts:
                proc = lab.spawn(h, argv, log_path=tmp_path / "probe.log", pipes=True)
                probes[h.name] = proc.popen
            got = set()
            for src, popen in probes.items():
                out, _ = popen.communicate(timeout=10)
                for dst, ok in zip(lab.hosts, out.split(), strict=True):
                    if ok == b"1":
                        got.add((src, dst.name))
            return got

        everyone = {(a, b.name) for a in ("root", "h1", "h2", "h3") for b in lab.hosts}
        deadline = time.monotonic() + 5
        while (matrix := reach_matrix()) != everyone and time.monotonic() < deadline:
            time.sleep(0.05)  # the listeners are starting
        assert matrix == everyone
        lab.cut(h1)
        assert reach_matrix() == {p for p in everyone if "h1" not in p} | {("h1", "h1")}
        lab.heal(h1)
        assert reach_matrix() == everyone
        lab.cut_between(h2, h3)
        assert reach_matrix() == everyone - {("h2", "h3"), ("h3", "h2")}
        lab.partition([h1], [h2, h3])
        hosts = ("h1", "h2", "h3")
        assert reach_matrix() == everyone - {(a, b) for a in hosts for b in hosts if a != b}
        lab.heal_all()
        assert reach_matrix() == everyone
