"""Scenarios named after the sections of the Raft paper (Ongaro & Ousterhout, 2014)."""

from __future__ import annotations

import pytest

from dfs.raft import ConfChange, ConfChangeOp, ProposalDropped, Role
from dfs.raft.messages import AppendEntries, InstallSnapshot, RequestVote
from dfs.types import NodeId
from tests.raft.sim import Cluster

pytestmark = pytest.mark.sim


def finish(c: Cluster) -> None:
    c.check_invariants()
    c.heal_and_converge()
    c.check_invariants()
    c.check_acked()


# ---------------------------------------------------------------------------- 5.2
@pytest.mark.parametrize("seed", range(20))
def test_5_2_leader_election_elects_one_leader(seed: int) -> None:
    c = Cluster(5, seed=seed)
    c.run_until(lambda: c.leader() is not None, 200)
    lead = c.leader()
    assert lead is not None
    c.run(30)
    assert c.leader() is lead  # stable: heartbeats keep followers quiet
    assert len(set(c.terms().values())) == 1
    finish(c)


def test_5_2_leader_election_after_leader_crash() -> None:
    c = Cluster(3, seed=7)
    c.elect("n1")
    c.crash("n1")
    c.run_until(lambda: c.leader() is not None, 300)
    lead = c.leader()
    assert lead is not None and lead.id != "n1" and lead.c.term > 1
    finish(c)


def test_5_2_leader_election_needs_a_quorum() -> None:
    c = Cluster(3, seed=3)
    c.crash("n2")
    c.crash("n3")
    c.run(300)
    assert c.leader() is None
    assert c.nodes[NodeId("n1")].c.term == 0  # PreVote: failed campaigns raise no term
    finish(c)


# ---------------------------------------------------------------------------- 5.3
def test_5_3_log_replication_commits_with_a_majority_and_catches_up() -> None:
    c = Cluster(3, seed=1)
    c.elect("n1")
    c.net.isolate("n3")
    for i in range(20):
        c.propose("n1", f"v{i}".encode())
    c.stabilize()
    assert len(c.acked) == 20  # n1 + n2 are a majority
    assert c.nodes[NodeId("n3")].applied <= 1
    finish(c)
    assert c.nodes[NodeId("n3")].applied == 21


def test_5_3_log_replication_overwrites_uncommitted_divergent_entries() -> None:
    c = Cluster(5, seed=2)
    c.elect("n1")
    c.propose("n1", b"committed")
    c.stabilize()
    c.net.isolate("n1")
    for i in range(10):  # the old leader appends entries that can never commit
        c.propose("n1", f"lost{i}".encode())
    c.stabilize()
    c.run_until(lambda: (lead := c.leader()) is not None and lead.id != "n1", 300)
    new = c.leader()
    assert new is not None
    for i in range(3):
        c.propose(new.id, f"new{i}".encode())
    c.stabilize()
    finish(c)
    old = c.nodes[NodeId("n1")]
    assert old.c.role is Role.FOLLOWER
    assert not any(d == b"lost0" for _, _, d in old.sm.values())
    assert {b"committed", b"new0", b"new2"} <= {d for _, d in c.acked.values()}


def test_5_3_log_replication_batches_and_pipelines() -> None:
    c = Cluster(3, seed=4, max_entries_per_msg=4, max_inflight=3)
    c.elect("n1")
    lead = c.nodes[NodeId("n1")]
    for i in range(40):
        lead.c.propose(f"x{i}".encode())
    c._process(lead)
    sent = [f.msg for f in sorted(c.net.queue)]
    appends = [m for m in sent if isinstance(m, AppendEntries) and m.to == "n2"]
    # One batch per message (capped at 4 entries), 3 in flight before any answer.
    assert [len(m.entries) for m in appends] == [4, 4, 4]
    c.stabilize()
    assert lead.applied == 41
    c.run(1)  # followers learn the commit index from the next heartbeat
    c.stabilize()
    assert all(n.applied == 41 for n in c.alive())
    finish(c)


def test_5_3_fast_backtracking_skips_a_whole_conflicting_term() -> None:
    # Every node restarts with a preset log and n1 campaigns at once: no lease reads, under
    # which a restarted node would first hold its vote for an election timeout.
    c = Cluster(3, seed=5, read_mode="read_index")
    c.preset("n1", 5, [1, 1, 5, 5], vote="n1")
    c.preset("n2", 5, [1, 1, 5, 5])
    c.preset("n3", 4, [1, 1] + [4] * 30)  # 30 entries of a term nobody else has
    c.elect("n1")
    rejects = 0
    for _ in range(1000):
        m = c.net.pop_due(None)
        if m is None:
            break
        if m.frm == "n3" and type(m).__name__ == "AppendResponse" and not m.success:  # type: ignore[attr-defined]
            rejects += 1
        c.deliver(m)
    assert rejects <= 3
    assert c.nodes[NodeId("n3")].c.log.last_index == 5
    finish(c)


# ---------------------------------------------------------------------------- 5.4
def test_5_4_1_election_restriction_stale_log_cannot_win() -> None:
    c = Cluster(3, seed=6)
    c.elect("n1")
    c.net.isolate("n3")
    for i in range(5):
        c.propose("n1", f"v{i}".encode())
    c.stabilize()
    c.crash("n1")
    c.net.recover()
    # n3 (stale log) times out first, but n2 refuses its vote (§5.4.1).
    c.campaign("n3")
    c.stabilize()
    assert c.nodes[NodeId("n3")].c.role is not Role.LEADER
    c.run_until(lambda: c.leader() is not None, 300)
    lead = c.leader()
    assert lead is not None and lead.id == "n2"
    finish(c)


def test_5_4_2_commit_previous_term_figure_8() -> None:
    """Figure 8: S1 (term 4) holds an entry of term 2 on a majority; it must not count it
    committed until an entry of term 4 is on a majority too."""
    # Preset logs, then an immediate campaign: no lease (restarted voters would hold off).
    c = Cluster(5, seed=8, max_entries_per_msg=1, read_mode="read_index")
    c.preset("n1", 4, [1, 2], vote="n1")
    c.preset("n2", 4, [1, 2])
    c.preset("n3", 4, [1])
    c.preset("n4", 4, [1])
    c.preset("n5", 4, [1, 3])
    c.net.isolate("n5")
    c.campaign("n1")
    s1 = c.nodes[NodeId("n1")]
    seen_term2_on_majority = False
    for _ in range(10_000):
        m = c.net.pop_due(None)
        if m is None:
            break
        c.deliver(m)
        holders = [n for n in c.alive() if n.c.log.term(2) == 2]
        noop_holders = [n for n in c.alive() if n.c.log.term(3) == 5]
        if len(holders) >= 3 and len(noop_holders) < 3:
            seen_term2_on_majority = True
            assert s1.c.log.commit < 2, "committed an old-term entry by counting replicas"
    assert seen_term2_on_majority
    assert s1.c.role is Role.LEADER and s1.c.term == 5 and s1.c.log.commit == 3
    finish(c)


# ---------------------------------------------------------------------------- 6
def test_6_membership_learner_promote_and_remove_leader() -> None:
    c = Cluster(3, seed=9)
    c.elect("n1")
    for i in range(10):
        c.propose("n1", f"v{i}".encode())
    c.stabilize()
    lead = c.nodes[NodeId("n1")]
    c.add_node("n4")
    lead.c.propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, NodeId("n4")))
    c._process(lead)
    c.run(20)
    n4 = c.nodes[NodeId("n4")]
    assert n4.applied == lead.c.log.commit  # caught up as a learner
    assert NodeId("n4") in n4.c.conf.learners
    lead.c.propose_conf_change(ConfChange(ConfChangeOp.ADD_VOTER, NodeId("n4")))
    with pytest.raises(ProposalDropped):  # one change at a time
        lead.c.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, NodeId("n2")))
    c._process(lead)
    c.run(10)
    assert n4.c.conf.voters == {"n1", "n2", "n3", "n4"}
    # Remove the leader itself: it steps down once the change commits.
    lead.c.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, NodeId("n1")))
    c._process(lead)
    c.run(100)
    new = c.leader()
    assert new is not None and new.id != "n1"
    assert lead.c.role is Role.FOLLOWER
    c.propose(new.id, b"after")
    c.run(10)
    finish(c)
    assert c.members() == {"n2", "n3", "n4"}


def test_6_membership_removed_node_does_not_disrupt() -> None:
    c = Cluster(3, seed=10)
    c.elect("n1")
    c.net.isolate("n3")  # n3 never learns it was removed
    c.nodes[NodeId("n1")].c.propose_conf_change(ConfChange(ConfChangeOp.REMOVE, NodeId("n3")))
    c._process(c.nodes[NodeId("n1")])
    c.run(20)
    c.net.recover()
    term = c.nodes[NodeId("n1")].c.term
    c.run(200)
    assert c.leader() is c.nodes[NodeId("n1")] and c.nodes[NodeId("n1")].c.term == term
    c.check_invariants()


# ---------------------------------------------------------------------------- 7
@pytest.mark.parametrize("faulty", [False, True])
def test_7_log_compaction_snapshot_in_chunks_to_lagging_follower(faulty: bool) -> None:
    c = Cluster(
        3,
        seed=11,
        snapshot_every=10,
        snapshot_keep=2,
        snapshot_chunk_bytes=50,
        snapshot_window_chunks=2,
    )
    c.elect("n1")
    c.crash("n3")
    for i in range(60):
        c.propose("n1", f"value-{i}".encode())
        c.stabilize()
    assert c.nodes[NodeId("n1")].c.log.snapshot.index > 40
    chunks: list[InstallSnapshot] = []
    orig = c.net.send

    def spy(m: object, now: int) -> None:
        if isinstance(m, InstallSnapshot):
            chunks.append(m)
        orig(m, now)  # type: ignore[arg-type]

    c.net.send = spy  # type: ignore[method-assign]
    if faulty:
        c.net.drop(0.3)
        c.net.duplicate(0.3)
        c.net.delay(3)
    c.restart("n3")
    c.run(200)
    c.net.send = orig  # type: ignore[method-assign]
    assert len({m.offset for m in chunks}) > 5  # really chunked
    finish(c)
    n3 = c.nodes[NodeId("n3")]
    assert n3.c.log.snapshot.index > 40 and n3.sm == c.nodes[NodeId("n1")].sm


# ---------------------------------------------------------------------------- 8
def test_8_client_interaction_read_index_leader_and_follower() -> None:
    c = Cluster(3, seed=12)
    c.elect("n1")
    c.propose("n1", b"x")
    c.stabilize()
    lead, f = c.nodes[NodeId("n1")], c.nodes[NodeId("n2")]
    assert lead.c.read_index(b"r1")
    c._process(lead)
    assert not lead.read_states  # needs a heartbeat round first
    c.stabilize()
    assert [(r.index, r.context) for r, _ in lead.read_states] == [(2, b"r1")]
    assert f.c.read_index(b"r2")
    c._process(f)
    c.stabilize()
    assert [(r.index, r.context) for r, _ in f.read_states] == [(2, b"r2")]


def test_8_client_interaction_read_index_needs_quorum() -> None:
    c = Cluster(3, seed=13)
    c.elect("n1")
    c.net.isolate("n1")
    lead = c.nodes[NodeId("n1")]
    lead.c.read_index(b"r")
    c._process(lead)
    c.run(5)
    assert not lead.read_states  # a deposed leader must not answer reads


def test_8_client_interaction_read_index_new_leader_waits_for_own_commit() -> None:
    c = Cluster(3, seed=14)
    c.elect("n1")
    c.propose("n1", b"x")
    c.stabilize()
    c.net.isolate("n1")
    for _ in range(10):  # n3's lease on n1 expires
        c.tick("n3")
    c.campaign("n2")
    for _ in range(100):  # deliver until n2 wins, but not its noop's acks
        if c.nodes[NodeId("n2")].c.role is Role.LEADER:
            break
        m = c.net.pop_due(None)
        if m is None:
            break
        c.deliver(m)
    n2 = c.nodes[NodeId("n2")]
    assert n2.c.role is Role.LEADER and n2.c.log.commit < n2.c.log.last_index
    n2.c.read_index(b"r")
    c._process(n2)
    assert not n2.read_states
    c.stabilize()
    assert [(r.index, r.context) for r, _ in n2.read_states] == [(n2.c.log.last_index, b"r")]
    assert n2.c.log.term(n2.read_states[0][0].index) == n2.c.term


def test_vote_requests_carry_log_position() -> None:
    c = Cluster(3, seed=15)
    c.campaign("n1")
    msgs = [m.msg for m in c.net.queue]
    assert all(isinstance(m, RequestVote) and m.pre_vote for m in msgs)
