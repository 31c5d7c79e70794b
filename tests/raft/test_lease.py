"""Lease-based reads (dissertation §6.4.1): a leader holding a lease answers reads with no
messages; a lease always runs out before another node could help elect a new leader, as long
as clocks drift within the bound stated in ``dfs.raft.core``."""

from __future__ import annotations

import pytest

from dfs.raft import ReadState, Role
from dfs.raft.messages import Message, RequestVote, VoteResponse
from dfs.types import NodeId
from tests.raft.sim import Cluster, SimNode

pytestmark = pytest.mark.sim

E = 10  # election_tick of every test here (the default)
MARGIN = 2  # lease_margin_ticks (the default): the lease lasts E - MARGIN = 8 ticks
#: The fastest follower clock the defaults allow: lease_ticks <= (E - 1) / (1 + r).
MAX_DRIFT = (E - 1) / (E - MARGIN) - 1


def settled(seed: int, **config: object) -> tuple[Cluster, SimNode]:
    """A 3-node cluster whose leader n1 committed an entry of its term and heard from all."""
    c = Cluster(3, seed=seed, **config)  # type: ignore[arg-type]
    c.elect("n1")
    c.propose("n1", b"x")
    c.stabilize()
    c.run(3)  # a heartbeat round goes out, arrives, and its acknowledgements come back
    return c, c.nodes[NodeId("n1")]


def read_now(c: Cluster, node: SimNode, context: bytes) -> list[ReadState]:
    """Ask for a read and return the read states of the very next Ready."""
    before = len(node.read_states)
    assert c.read(node.id, context)
    return [r for r, _ in node.read_states[before:]]


def test_6_4_1_lease_read_needs_no_messages() -> None:
    c, lead = settled(30)
    assert lead.c.status().lease
    sent = c.net.sent
    for k in range(5):
        got = read_now(c, lead, b"r%d" % k)
        assert got == [ReadState(lead.c.log.commit, b"r%d" % k)]
    assert c.net.sent == sent  # not one message
    # A follower's read is one request and one answer, not a heartbeat round.
    c.stabilize()
    sent = c.net.sent
    f = c.nodes[NodeId("n2")]
    assert c.read("n2", b"f")
    c.stabilize()
    assert [r.context for r, _ in f.read_states] == [b"f"]
    assert c.net.sent == sent + 2


def test_6_4_1_read_index_mode_always_confirms_with_a_round() -> None:
    c, lead = settled(31, read_mode="read_index")
    assert not lead.c.status().lease
    sent = c.net.sent
    assert read_now(c, lead, b"r") == []  # waits for the heartbeat round
    assert c.net.sent == sent + 2
    c.stabilize()
    assert [r.context for r, _ in lead.read_states] == [b"r"]


def test_6_4_1_new_leader_has_no_lease_before_committing_in_its_term() -> None:
    c = Cluster(3, seed=32)
    c.campaign("n1")
    for _ in range(100):  # deliver until n1 wins, but not the acks of its no-op
        if c.nodes[NodeId("n1")].c.role is Role.LEADER:
            break
        m = c.net.pop_due(None)
        assert m is not None
        c.deliver(m)
    lead = c.nodes[NodeId("n1")]
    assert lead.c.role is Role.LEADER and lead.c.log.commit < lead.c.log.last_index
    assert not lead.c.status().lease
    assert read_now(c, lead, b"r") == []
    c.stabilize()
    assert [(r.index, r.context) for r, _ in lead.read_states] == [(lead.c.log.last_index, b"r")]


def _vote_activity(c: Cluster, old: NodeId) -> list[int]:
    """Record (by time) every campaign or granted vote of a node other than ``old``."""
    times: list[int] = []
    send = c.net.send

    def spy(m: Message, now: int) -> None:
        if m.frm != old and (
            isinstance(m, RequestVote) or (isinstance(m, VoteResponse) and m.granted)
        ):
            times.append(now)
        send(m, now)

    c.net.send = spy  # type: ignore[method-assign]
    return times


def _partition_old_leader(seed: int, follower_rate: float) -> tuple[int, int, int]:
    """Isolate leader n1 while its followers' clocks run ``follower_rate`` times faster.
    Return (time of the partition, last time n1 still held its lease, first time another
    node would have granted a vote)."""
    c, lead = settled(seed)
    others = [c.nodes[NodeId("n2")], c.nodes[NodeId("n3")]]
    c.tick_rates = {n.id: follower_rate for n in others}
    c.net.isolate("n1")
    isolated_at = c.now
    last_lease = first_vote = -1
    for _ in range(10 * E):
        c.step_time()
        if lead.c.status().lease:
            last_lease = c.now
            assert read_now(c, lead, b"t%d" % c.now), "a lease read is served at once"
        if first_vote < 0 and any(not n.c.status().refuses_votes for n in others):
            first_vote = c.now
        if c.leader() not in (None, lead):
            break
    assert c.leader() not in (None, lead), "no new leader"
    return isolated_at, last_lease, first_vote


@pytest.mark.parametrize("seed", range(10))
def test_6_4_1_partitioned_leader_lease_ends_before_any_vote(seed: int) -> None:
    """Followers' clocks at the fastest drift the defaults allow, the leader's at nominal
    rate: the old leader stops serving lease reads strictly before any other node would
    grant a vote (so before a new leader can exist)."""
    isolated_at, last_lease, first_vote = _partition_old_leader(seed, 1 + MAX_DRIFT)
    assert last_lease > isolated_at  # it did serve lease reads after the partition
    assert isolated_at < last_lease < first_vote


def test_6_4_1_drift_beyond_the_bound_breaks_the_lease() -> None:
    """The clock assumption is load-bearing: followers whose clocks run twice as fast would
    vote while the isolated old leader still believes it holds the lease."""
    _, last_lease, first_vote = _partition_old_leader(0, 2.0)
    assert first_vote <= last_lease


def test_6_4_1_transfer_ends_the_lease_for_the_term() -> None:
    c, lead = settled(33)
    lead.c.transfer_leadership(NodeId("n2"))  # n2 is up to date: TimeoutNow goes at once
    assert not lead.c.status().lease
    c._process(lead)
    # The transferee's election ignores the followers' lease: n1 must not serve from it.
    assert read_now(c, lead, b"r") == []
    c.stabilize()
    assert c.leader() is c.nodes[NodeId("n2")]


def test_6_4_1_restarted_node_holds_its_vote_for_an_election_timeout() -> None:
    """A follower may have acknowledged the leader's heartbeat just before it crashed; once
    restarted it refuses (pre-)votes until it has counted election_tick ticks."""
    c, lead = settled(34)
    c.net.isolate("n1")
    c.crash("n3")
    c.restart("n3")
    n2, n3 = c.nodes[NodeId("n2")], c.nodes[NodeId("n3")]
    activity = _vote_activity(c, lead.id)
    for _ in range(E - 1):
        c.tick("n3")
    c.campaign("n2")
    c.stabilize()
    assert activity and all(n.c.role is not Role.LEADER for n in (n2, n3))
    assert n2.c.term == 1  # its PreVote failed: n3 was still holding its vote
    c.run_until(lambda: c.leader() not in (None, lead), 20 * E)


@pytest.mark.parametrize("batch", range(4))
def test_6_4_1_reads_stay_linearizable_under_partitions(batch: int) -> None:
    """Leaders are isolated and replaced while a client writes at every step and every node
    reads often; each read's index must cover every write acknowledged before it was asked
    (``Cluster.read``).  Clocks drift within the bound."""
    for seed in range(batch * 10, batch * 10 + 10):
        c = Cluster(3 if seed % 2 else 5, seed=seed)
        rng = c.rng
        c.tick_rates = {i: 1 + rng.uniform(0, MAX_DRIFT) for i in c.ids}
        for k in range(400):
            r = rng.random()
            lead = c.leader()
            if r < 0.04 and lead is not None:
                c.net.isolate(lead.id)
            elif r < 0.06:
                a, b = rng.sample(c.ids, 2)
                c.net.cut(a, b)
            elif r < 0.09:
                c.net.recover()
            c.propose_at_leader(b"%d-%d" % (seed, k))
            for i in c.ids:
                if rng.random() < 0.5:
                    c.read(i, b"%d/%s" % (k, i.encode()))
            c.step_time()
        c.check_invariants()
        c.heal_and_converge()
        c.check_invariants()
        c.check_acked()
