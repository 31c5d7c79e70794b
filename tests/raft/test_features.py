"""PreVote, CheckQuorum, leadership transfer, crash recovery."""

from __future__ import annotations

import pytest

from dfs.raft import ProposalDropped, Role
from dfs.types import NodeId
from tests.raft.sim import Cluster

pytestmark = pytest.mark.sim


def test_prevote_rejoining_node_does_not_raise_the_term() -> None:
    c = Cluster(3, seed=20)
    c.elect("n1")
    c.net.isolate("n3")
    c.run(200)  # n3 keeps timing out, but PreVote never wins, so its term stays
    assert c.nodes[NodeId("n3")].c.term == 1
    c.net.recover()
    c.run(50)
    assert c.leader() is c.nodes[NodeId("n1")]
    assert set(c.terms().values()) == {1}
    c.check_invariants()


def test_without_prevote_a_rejoining_node_disrupts_the_leader() -> None:
    """The contrast that motivates PreVote: the isolated node inflates its term."""
    c = Cluster(3, seed=21, pre_vote=False, check_quorum=False, read_mode="read_index")
    c.elect("n1")
    c.net.isolate("n3")
    c.run(200)
    assert c.nodes[NodeId("n3")].c.term > 5
    c.net.recover()
    c.run(100)
    assert c.nodes[NodeId("n1")].c.term > 1  # the stable leader was deposed
    c.check_invariants()


def test_check_quorum_isolated_leader_steps_down() -> None:
    c = Cluster(3, seed=22)
    c.elect("n1")
    c.net.isolate("n1")
    c.run(21)  # at most two election timeouts
    assert c.nodes[NodeId("n1")].c.role is Role.FOLLOWER
    c.run_until(lambda: c.leader() is not None, 200)
    lead = c.leader()
    assert lead is not None and lead.id != "n1"
    c.net.recover()
    c.run(20)
    assert c.leader() is lead
    c.check_invariants()


def test_check_quorum_leases_ignore_votes_from_a_partially_connected_node() -> None:
    c = Cluster(3, seed=23, pre_vote=False)
    c.elect("n1")
    c.net.cut("n1", "n3")  # n3 stops hearing from n1 but n2 still does
    c.run(100)
    # n3 campaigns with ever higher terms; n2 ignores it while n1's lease holds.
    assert c.nodes[NodeId("n2")].c.leader == "n1"
    c.check_invariants()


def test_leadership_transfer_to_a_lagging_follower() -> None:
    c = Cluster(3, seed=24)
    c.elect("n1")
    c.net.isolate("n3")
    for i in range(10):
        c.propose("n1", f"v{i}".encode())
    c.stabilize()
    c.net.recover()
    lead = c.nodes[NodeId("n1")]
    lead.c.transfer_leadership(NodeId("n3"))
    with pytest.raises(ProposalDropped):
        lead.c.propose(b"during transfer")
    c._process(lead)
    c.stabilize()
    assert c.leader() is c.nodes[NodeId("n3")]
    assert c.nodes[NodeId("n3")].c.term == 2
    c.heal_and_converge()
    c.check_invariants()
    c.check_acked()


def test_leadership_transfer_times_out_when_target_is_down() -> None:
    c = Cluster(3, seed=25)
    c.elect("n1")
    c.crash("n2")
    lead = c.nodes[NodeId("n1")]
    lead.c.transfer_leadership(NodeId("n2"))
    c._process(lead)
    c.run(15)
    assert lead.c.role is Role.LEADER and lead.c.transferee is None
    assert c.propose("n1", b"ok") is not None


@pytest.mark.parametrize("seed", range(10))
def test_crash_and_restart_loses_only_unpersisted_state(seed: int) -> None:
    c = Cluster(3, seed=seed)
    c.elect("n1")
    for i in range(30):
        c.propose_at_leader(f"v{i}".encode())
        c.step_time()
        if i % 7 == 3:
            victim = c.rng.choice(c.ids)
            c.crash(victim)
            c.run(3)
            c.restart(victim)
    c.heal_and_converge()
    c.check_invariants()
    c.check_acked()
