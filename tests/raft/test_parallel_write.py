"""The leader writes its log in parallel with replicating it (dissertation §10.2.1): its
AppendEntries leave before its own fsync, it counts itself towards a commit only for entries
it made durable, and a crash between the two loses nothing that was committed."""

from __future__ import annotations

import random

import pytest

from dfs.raft import Config, ConfState, Entry, RaftCore
from dfs.raft.messages import AppendEntries, AppendResponse, RequestVote
from dfs.types import LogIndex, NodeId, Term
from tests.raft.sim import Cluster, SimNode

pytestmark = pytest.mark.sim


def test_10_2_1_appends_leave_before_the_leaders_write_and_count_only_after() -> None:
    c = Cluster(3, seed=41)
    c.elect("n1")
    c.stabilize()
    lead = c.nodes[NodeId("n1")]
    _, index = lead.c.propose(b"x")
    rd = lead.c.ready()
    assert [e.index for e in rd.entries] == [index]
    early = [m for m in rd.early_messages if isinstance(m, AppendEntries)]
    assert sorted(m.to for m in early) == ["n2", "n3"]
    assert all([e.index for e in m.entries] == [index] for m in early)
    assert not any(isinstance(m, AppendEntries) for m in rd.messages)
    # Handed out, not yet durable: the leader does not count its own copy.
    assert lead.c.status().progress[lead.id].match == index - 1
    for m in rd.early_messages:
        c.net.send(m, c.now)
    c._complete(lead, rd)  # write, then the rest of the Ready, then advance
    assert lead.c.status().progress[lead.id].match == index
    assert lead.c.log.commit == index - 1  # its own durable copy alone is not a quorum
    c.stabilize()
    assert lead.c.log.commit == index and lead.sm[index][2] == b"x"


def test_10_2_1_votes_and_acknowledgements_wait_for_the_write() -> None:
    ids = frozenset({NodeId("a"), NodeId("b"), NodeId("c")})
    cand = RaftCore(
        Config(id=NodeId("a"), pre_vote=False), random.Random(1), conf_state=ConfState(ids)
    )
    for _ in range(30):
        cand.tick()
        if cand.term:
            break
    rd = cand.ready()  # a new term and a vote for itself: nothing may leave before the write
    assert rd.hard_state is not None and rd.hard_state.vote == "a"
    assert rd.early_messages == () and all(isinstance(m, RequestVote) for m in rd.messages)

    follower = RaftCore(Config(id=NodeId("b")), random.Random(1), conf_state=ConfState(ids))
    entry = Entry(Term(1), LogIndex(1), data=b"e")
    follower.step(
        AppendEntries(
            frm=NodeId("a"),
            to=NodeId("b"),
            term=Term(1),
            prev_index=LogIndex(0),
            prev_term=Term(0),
            entries=(entry,),
            commit=LogIndex(0),
        )
    )
    rd = follower.ready()
    assert rd.entries == (entry,) and rd.early_messages == ()
    assert [type(m) for m in rd.messages] == [AppendResponse]


def writing(node: SimNode) -> bool:
    return node.writing is not None


def slow_leader(seed: int, *, isolate: str | None = None) -> tuple[Cluster, SimNode]:
    """n1 leads with a few acknowledged writes; from now on its disk is slow."""
    c = Cluster(3, seed=seed)
    c.elect("n1")
    for i in range(5):
        c.propose("n1", b"v%d" % i)
    c.stabilize()
    c.run(3)
    assert len(c.acked) == 5
    lead = c.nodes[NodeId("n1")]
    lead.disk_delay = 4
    if isolate is not None:
        c.net.isolate(isolate)
    return c, lead


def test_10_2_1_one_follower_and_the_leaders_unwritten_copy_commit_nothing() -> None:
    c, lead = slow_leader(40, isolate="n3")
    n2 = c.nodes[NodeId("n2")]
    proposed = c.propose("n1", b"y")
    assert proposed is not None and writing(lead)  # its write runs ...
    index = proposed[1]
    c.run(2)  # ... while n2 received, wrote and acknowledged y
    assert n2.c.log.term(index) == lead.c.term and n2.storage.entries[-1].data == b"y"
    assert writing(lead) and lead.inbox  # the acknowledgement waits
    assert max(n.c.log.commit for n in c.alive()) < index
    c.run(2)  # the write completes: now n1 and n2 both hold y durably
    assert not writing(lead) and lead.c.log.commit >= index
    assert c.acked[index] == (lead.c.term, b"y")


@pytest.mark.parametrize("keep", [0, 1, 2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_10_2_1_leader_crash_after_sending_before_its_fsync_loses_nothing(
    seed: int, keep: int
) -> None:
    """n1 sends y1, y2 to both followers, which write them; n1 crashes with only ``keep``
    steps of its own write on disk.  Every acknowledged write survives; y1 and y2 were on a
    quorum, so the next leader commits them and n1 gets them back."""
    c, lead = slow_leader(seed)
    lead.c.propose(b"y1")
    lead.c.propose(b"y2")
    c._process(lead)
    assert lead.writing is not None and len(lead.writing.entries) == 2
    c.run(2)  # the followers write y1, y2 and answer; n1 is still writing
    assert lead.writing is not None
    c.crash("n1", keep=keep)
    held = [e.data for e in lead.storage.entries if e.data in (b"y1", b"y2")]
    assert held == [b"y1", b"y2"][:keep]  # the rest of its write was lost
    c.run(5)
    c.restart("n1")
    c.heal_and_converge()
    c.check_invariants()
    c.check_acked()
    datas = [d for _, _, d in lead.sm.values()]
    assert b"y1" in datas and b"y2" in datas
    assert all(b"v%d" % i in datas for i in range(5))


@pytest.mark.parametrize("seed", range(5))
def test_10_2_1_leader_crash_before_anyone_wrote_loses_only_unacknowledged(seed: int) -> None:
    c, lead = slow_leader(seed, isolate="n1")  # its appends never arrive
    lead.c.propose(b"lost")
    c._process(lead)
    c.crash("n1", keep=0)
    c.net.recover()
    c.restart("n1")
    c.heal_and_converge()
    c.check_invariants()
    c.check_acked()
    assert b"lost" not in [d for _, _, d in lead.sm.values()]


@pytest.mark.parametrize("batch", range(5))
def test_10_2_1_random_crashes_during_slow_leader_writes(batch: int) -> None:
    """Every disk is slow, a client writes at every step, and leaders crash in the middle of
    their writes (a random prefix of each reaches the disk).  Every commit is durable on a
    quorum when made, and every acknowledged write survives."""
    for seed in range(batch * 8, batch * 8 + 8):
        c = Cluster(3 if seed % 2 else 5, seed=seed)
        rng = c.rng
        for node in c.nodes.values():
            node.disk_delay = rng.choice([1, 2, 3])
        down: dict[NodeId, int] = {}
        for k in range(300):
            c.propose_at_leader(b"%d-%d" % (seed, k))
            lead = c.leader()
            if lead is not None and lead.writing is not None and rng.random() < 0.03:
                c.crash(lead.id)
                down[lead.id] = k + rng.randint(1, 15)
            for i, until in list(down.items()):
                if k >= until:
                    c.restart(i)
                    del down[i]
            c.step_time()
        c.check_invariants()
        c.heal_and_converge()
        c.check_invariants()
        c.check_acked()
        assert len(c.acked) >= 20, f"seed={seed}: too few writes went through"
