"""A deterministic simulated Raft cluster: RaftCore nodes, a faulty in-process network, crashes.

Everything random (network faults, election jitter, the scenario itself) derives from one
seed, so a failing run replays exactly; ``Cluster.fail`` puts the seed in every failure.

Time is discrete.  ``step_time()`` finishes the disk writes due by now, ticks every live node
(once, or at its ``tick_rates`` rate: a fast clock ticks more often), then delivers every
message due by now (a message sent at time t is due at ``t + 1 + delay``).  ``stabilize()``
delivers messages without ticking until the network is quiet, for scripted scenarios.

Each node plays the driver of ``Ready``: early messages go out at once, then the write to its
``Storage`` (the disk), then the other messages, apply, advance.  A node with a ``disk_delay``
keeps a Ready's write running for that many steps, as the real driver does while its fsync
runs in a thread: meanwhile it buffers incoming messages and counts missed ticks, and replays
both (ticks first) when the write completes.  ``crash()`` loses whatever was never written:
a write still running leaves only a prefix of its steps (snapshot, each entry, hard state) on
disk, the way an unsynced page cache can.  ``restart()`` rebuilds the core from that storage
and the state machine from its snapshot.

Invariants (``check_invariants``): election safety (one leader per term), log matching,
leader completeness, state machine safety (checked at every apply), every index a leader
commits is durable on a quorum of voters (checked whenever a leader's commit index moves),
and in ``check_acked`` that every acknowledged proposal is applied on every live member.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from dfs.raft import (
    Command,
    Config,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    NotLeader,
    ProposalDropped,
    RaftCore,
    ReadState,
    Ready,
    Role,
    Snapshot,
    message_from_dict,
)
from dfs.types import LogIndex, NodeId, Term


class InvariantViolation(AssertionError):
    pass


@dataclass
class Storage:
    """What survives a crash."""

    hard: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)


@dataclass
class SimNode:
    id: NodeId
    storage: Storage = field(default_factory=Storage)
    core: RaftCore | None = None
    #: The state machine: index -> (term, kind, data) of every applied entry.
    sm: dict[int, tuple[int, str, Command]] = field(default_factory=dict)
    applied: int = 0
    read_states: list[tuple[ReadState, int]] = field(default_factory=list)
    #: Proposals made here awaiting their outcome: (term, index) -> data.
    pending: dict[tuple[int, int], Command] = field(default_factory=dict)
    restarts: int = 0
    #: Steps each disk write takes (0: it completes at once).
    disk_delay: int = 0
    #: A Ready whose early messages went out and whose disk write is still running.
    writing: Ready | None = None
    write_done_at: int = 0
    #: What arrives while a write runs (the driver buffers it) and the ticks it missed.
    inbox: list[Message] = field(default_factory=list)
    missed_ticks: int = 0
    #: Commit index the durability invariant was last checked at.
    checked_commit: int = 0

    @property
    def alive(self) -> bool:
        return self.core is not None

    @property
    def c(self) -> RaftCore:
        assert self.core is not None, f"{self.id} is down"
        return self.core


@dataclass(order=True)
class _InFlight:
    due: int
    seq: int
    msg: Message = field(compare=False)


class Network:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.cuts: set[frozenset[NodeId]] = set()
        self.isolated: set[NodeId] = set()
        self.drop_p = 0.0
        self.dup_p = 0.0
        self.max_delay = 0
        self.queue: list[_InFlight] = []
        self._seq = 0
        self.sent = 0
        self.delivered = 0

    def cut(self, a: str, b: str) -> None:
        self.cuts.add(frozenset((NodeId(a), NodeId(b))))

    def isolate(self, n: str) -> None:
        self.isolated.add(NodeId(n))

    def drop(self, p: float) -> None:
        self.drop_p = p

    def duplicate(self, p: float) -> None:
        self.dup_p = p

    def delay(self, max_delay: int) -> None:
        """Each message takes 1 + randint(0, max_delay) steps: reorders messages too."""
        self.max_delay = max_delay

    def recover(self) -> None:
        self.cuts.clear()
        self.isolated.clear()
        self.drop_p = self.dup_p = 0.0
        self.max_delay = 0

    def blocked(self, a: NodeId, b: NodeId) -> bool:
        return a in self.isolated or b in self.isolated or frozenset((a, b)) in self.cuts

    def send(self, m: Message, now: int) -> None:
        self.sent += 1
        if self.blocked(m.frm, m.to) or (self.drop_p and self.rng.random() < self.drop_p):
            return
        # Every message crosses the wire as a plain dict, as msgpack would carry it.
        m = message_from_dict(msgpack.unpackb(msgpack.packb(m.to_dict()), raw=False))
        copies = 2 if self.dup_p and self.rng.random() < self.dup_p else 1
        for _ in range(copies):
            delay = self.rng.randint(0, self.max_delay) if self.max_delay else 0
            self._seq += 1
            heapq.heappush(self.queue, _InFlight(now + 1 + delay, self._seq, m))

    def pop_due(self, now: int | None) -> Message | None:
        """The next message due by ``now`` (any, if None) that may still pass."""
        for _ in range(len(self.queue)):
            if not self.queue or (now is not None and self.queue[0].due > now):
                return None
            m = heapq.heappop(self.queue).msg
            if not self.blocked(m.frm, m.to):
                self.delivered += 1
                return m
        return None


def encode_sm(sm: dict[int, tuple[int, str, Command]]) -> bytes:
    return bytes(msgpack.packb([[i, t, k, d] for i, (t, k, d) in sorted(sm.items())]))


def decode_sm(data: bytes) -> dict[int, tuple[int, str, Command]]:
    return {i: (t, k, d) for i, t, k, d in msgpack.unpackb(data, raw=False)} if data else {}


class Cluster:
    def __init__(
        self,
        n: int | Iterable[str] = 3,
        *,
        seed: int = 0,
        voters: Iterable[str] | None = None,
        snapshot_every: int | None = None,
        snapshot_keep: int = 5,
        **config: Any,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        ids = [f"n{i}" for i in range(1, n + 1)] if isinstance(n, int) else list(n)
        self.ids = [NodeId(i) for i in ids]
        self.initial = ConfState(frozenset(NodeId(v) for v in (voters or ids)))
        self.config = config
        self.snapshot_every = snapshot_every
        self.snapshot_keep = snapshot_keep
        self.net = Network(random.Random(self.rng.getrandbits(64)))
        self.now = 0
        self.nodes: dict[NodeId, SimNode] = {}
        #: Election safety: term -> its one leader.
        self.leaders: dict[int, NodeId] = {}
        #: State machine safety: index -> (term, kind, data) applied anywhere.
        self.applied: dict[int, tuple[int, str, Command]] = {}
        #: Leader completeness: index -> smallest term of any node when it applied it.
        self.apply_term: dict[int, int] = {}
        #: Acknowledged proposals: index -> (term, data).
        self.acked: dict[int, tuple[int, Command]] = {}
        self.failed_proposals = 0
        #: Ticks per step of a node whose clock runs fast or slow (default 1).
        self.tick_rates: dict[NodeId, float] = {}
        self._tick_acc: dict[NodeId, float] = {}
        #: Largest index of an acknowledged proposal, and for each read asked through
        #: ``read`` that index as of the moment it was asked (linearizability: the read's
        #: index must be at least that).
        self.max_acked = 0
        self.reads: dict[bytes, int] = {}
        for i in self.ids:
            self.add_node(i)

    # ------------------------------------------------------------------ nodes
    def add_node(self, i: str, *, conf_state: ConfState | None = None) -> SimNode:
        node = SimNode(NodeId(i))
        self.nodes[node.id] = node
        if node.id not in self.ids:
            self.ids.append(node.id)
        # A node joining later also starts from the cluster's initial membership (which is
        # not in the log); the log tells it the rest.
        self._start(node, conf_state if conf_state is not None else self.initial)
        return node

    def _start(self, node: SimNode, conf: ConfState) -> None:
        st = node.storage
        node.sm = decode_sm(st.snapshot.data) if st.snapshot else {}
        node.applied = st.snapshot.meta.index if st.snapshot else 0
        node.pending.clear()
        node.writing = None
        node.inbox.clear()
        node.missed_ticks = 0
        node.checked_commit = 0
        node.core = RaftCore(
            Config(id=node.id, **self.config),
            random.Random(self.rng.getrandbits(64)),
            hard_state=st.hard,
            snapshot=st.snapshot,
            entries=list(st.entries),
            conf_state=conf,
        )
        self._process(node)

    def crash(self, i: str, *, keep: int | None = None) -> None:
        """Lose everything that was not written.  A disk write still running leaves the
        first ``keep`` of its steps on disk (default: a random number of them)."""
        node = self.nodes[NodeId(i)]
        if node.writing is not None:
            steps = _write_steps(node.writing)
            if keep is None:
                keep = self.rng.randint(0, steps)
            self._persist(node, node.writing, upto=min(keep, steps))
            node.writing = None
        node.inbox.clear()
        node.core = None
        node.pending.clear()

    def restart(self, i: str) -> None:
        node = self.nodes[NodeId(i)]
        if node.alive:
            return
        node.restarts += 1
        conf = self.initial
        self._start(node, conf)

    def preset(self, i: str, term: int, terms: list[int], *, vote: str | None = None) -> None:
        """Crash ``i`` and restart it with a durable log whose entry k+1 has ``terms[k]``
        (for building the paper's figures)."""
        node = self.nodes[NodeId(i)]
        self.crash(i)
        node.storage = Storage(
            HardState(Term(term), NodeId(vote) if vote else None),
            None,
            [
                Entry(Term(t), LogIndex(k + 1), EntryKind.NORMAL, f"t{t}-{k + 1}".encode())
                for k, t in enumerate(terms)
            ],
        )
        self.restart(i)

    def alive(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.alive]

    # ------------------------------------------------------------------ driving
    def _process(self, node: SimNode) -> None:
        """The driver loop for one node: Ready -> early sends -> write -> send -> apply ->
        advance; a slow disk leaves the Ready half done until ``_finish_write``."""
        core = node.c
        for _ in range(100):
            if node.writing is not None:
                return
            self._check_election_safety(node)
            if not core.has_ready():
                return
            rd = core.ready()
            for m in rd.early_messages:
                self.net.send(m, self.now)
            if node.disk_delay and _needs_disk(rd, node.storage):
                node.writing = rd
                node.write_done_at = self.now + node.disk_delay
                return
            self._complete(node, rd)
        raise InvariantViolation(self.fail(f"{node.id}: Ready loop did not settle"))

    def _complete(self, node: SimNode, rd: Ready) -> None:
        """Everything of ``rd`` after the early sends."""
        self._persist(node, rd)
        for m in rd.messages:
            self.net.send(m, self.now)
        for e in rd.committed_entries:
            self._apply(node, e)
        for r in rd.read_states:
            node.read_states.append((r, self.now))
            need = self.reads.pop(r.context, 0)
            if r.index < need:
                raise InvariantViolation(
                    self.fail(
                        f"stale read {r.context!r} on {node.id}: index {r.index}, but {need} "
                        "was acknowledged before it was asked"
                    )
                )
        node.c.advance(rd)
        self._maybe_snapshot(node)
        self._check_commit_durable(node)

    def _persist(self, node: SimNode, rd: Ready, upto: int | None = None) -> None:
        """Write ``rd`` to the node's storage, or only its first ``upto`` write steps (in the
        order the real storage writes them: snapshot, entries, hard state)."""
        st = node.storage
        left = _write_steps(rd) if upto is None else upto
        if rd.snapshot is not None:
            if left < 1:
                return
            left -= 1
            st.snapshot = rd.snapshot
            st.entries = []
            node.sm = decode_sm(rd.snapshot.data)
            node.applied = rd.snapshot.meta.index
        if rd.entries:
            first = rd.entries[0].index
            st.entries = [e for e in st.entries if e.index < first]
            st.entries.extend(rd.entries[:left])
            left -= min(left, len(rd.entries))
        if rd.hard_state is not None and left >= 1:
            st.hard = rd.hard_state

    def _finish_write(self, node: SimNode) -> None:
        """The running disk write completes: finish the Ready, replay the ticks missed
        meanwhile, then step what arrived meanwhile (as the real driver does)."""
        rd, node.writing = node.writing, None
        assert rd is not None
        self._complete(node, rd)
        core = node.c
        ticks, node.missed_ticks = node.missed_ticks, 0
        for _ in range(ticks):
            core.tick()
        inbox, node.inbox = node.inbox, []
        for m in inbox:
            core.step(m)
        self._process(node)

    def finish_writes(self) -> None:
        """Complete every running disk write now (for scripted scenarios)."""
        for _ in range(100):
            busy = [n for n in self.alive() if n.writing is not None]
            if not busy:
                return
            for node in busy:
                if node.writing is not None:
                    self._finish_write(node)
        raise InvariantViolation(self.fail("disk writes did not settle"))

    def _apply(self, node: SimNode, e: Entry) -> None:
        if e.index != node.applied + 1:
            raise InvariantViolation(self.fail(f"{node.id} applied {e.index} after {node.applied}"))
        rec = (int(e.term), e.kind.value, e.data)
        prev = self.applied.setdefault(e.index, rec)
        if prev != rec:
            raise InvariantViolation(
                self.fail(f"state machine safety: {node.id} applied {rec} at {e.index}, not {prev}")
            )
        self.apply_term[e.index] = min(self.apply_term.get(e.index, 1 << 60), node.c.term)
        node.sm[e.index] = rec
        node.applied = e.index
        data = node.pending.pop((e.term, e.index), None)
        if data is not None:
            self.acked[e.index] = (e.term, data)
            self.max_acked = max(self.max_acked, e.index)
        for key in [k for k in node.pending if k[1] <= e.index]:
            del node.pending[key]  # overwritten by another leader's entry: failed
            self.failed_proposals += 1

    def _maybe_snapshot(self, node: SimNode) -> None:
        if self.snapshot_every is None:
            return
        core = node.c
        base = core.log.snapshot.index
        if node.applied - base < self.snapshot_every + self.snapshot_keep:
            return
        index = node.applied - self.snapshot_keep
        data = encode_sm({i: v for i, v in node.sm.items() if i <= index})
        snap = core.compact(index, data)
        node.storage.snapshot = snap
        node.storage.entries = [e for e in node.storage.entries if e.index > index]

    def _check_commit_durable(self, node: SimNode) -> None:
        """A leader's commit index is durable on a quorum of voters: whatever a leader sent
        before its own write finished, it must not have counted itself for it."""
        core = node.c
        commit = int(core.log.commit)
        if core.role is not Role.LEADER or commit <= node.checked_commit:
            return
        node.checked_commit = commit
        term = core.log.term(commit)
        holders = [v for v in core.conf.voters if self._durable(v, commit, term)]
        if len(holders) < len(core.conf.voters) // 2 + 1:
            raise InvariantViolation(
                self.fail(
                    f"{node.id} committed {commit} (term {term}) durable only on {sorted(holders)}"
                )
            )

    def _durable(self, i: NodeId, index: int, term: int | None) -> bool:
        other = self.nodes.get(i)
        if other is None:
            return False
        st = other.storage
        if st.snapshot is not None and st.snapshot.meta.index >= index:
            return True
        base = st.snapshot.meta.index if st.snapshot is not None else 0
        k = index - base - 1
        return 0 <= k < len(st.entries) and st.entries[k].term == term

    def _check_election_safety(self, node: SimNode) -> None:
        core = node.c
        if core.role is Role.LEADER:
            other = self.leaders.setdefault(core.term, node.id)
            if other != node.id:
                raise InvariantViolation(
                    self.fail(f"election safety: {other} and {node.id} both lead term {core.term}")
                )

    def deliver(self, m: Message) -> None:
        node = self.nodes.get(m.to)
        if node is None or not node.alive:
            return
        if node.writing is not None:
            node.inbox.append(m)
            return
        node.c.step(m)
        self._process(node)

    def tick(self, i: str) -> None:
        node = self.nodes[NodeId(i)]
        if node.writing is not None:
            node.missed_ticks += 1
            return
        node.c.tick()
        self._process(node)

    def step_time(self) -> None:
        self.now += 1
        for node in self.alive():
            if node.writing is not None and node.write_done_at <= self.now:
                self._finish_write(node)
        for node in self.alive():
            acc = self._tick_acc.get(node.id, 0.0) + self.tick_rates.get(node.id, 1.0)
            ticks = int(acc)
            self._tick_acc[node.id] = acc - ticks
            for _ in range(ticks):
                if node.alive:
                    self.tick(node.id)
        for _ in range(100_000):
            m = self.net.pop_due(self.now)
            if m is None:
                break
            self.deliver(m)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step_time()

    def run_until(self, pred: Callable[[], bool], max_steps: int = 1000) -> int:
        for n in range(max_steps):
            if pred():
                return n
            self.step_time()
        if pred():
            return max_steps
        raise InvariantViolation(self.fail(f"condition not reached in {max_steps} steps"))

    def stabilize(self, max_messages: int = 100_000) -> None:
        """Deliver messages (and their consequences) until the network is quiet; no ticks."""
        for _ in range(max_messages):
            m = self.net.pop_due(None)
            if m is None:
                return
            self.deliver(m)
        raise InvariantViolation(self.fail("network did not quiesce"))

    def campaign(self, i: str) -> None:
        """Make ``i`` time out now (ticks until it starts a (pre-)campaign)."""
        node = self.nodes[NodeId(i)]
        for _ in range(10 * node.c.config.election_tick):
            if node.c.role in (Role.PRE_CANDIDATE, Role.CANDIDATE, Role.LEADER):
                return
            self.tick(i)
        raise InvariantViolation(self.fail(f"{i} never campaigned"))

    def elect(self, i: str) -> None:
        self.campaign(i)
        self.stabilize()
        if self.nodes[NodeId(i)].c.role is not Role.LEADER:
            raise InvariantViolation(self.fail(f"{i} did not become leader"))

    # ------------------------------------------------------------------ clients
    def leader(self) -> SimNode | None:
        best: SimNode | None = None
        for node in self.alive():
            if node.c.role is Role.LEADER and (best is None or node.c.term > best.c.term):
                best = node
        return best

    def propose(self, i: str, data: Command) -> tuple[Term, LogIndex] | None:
        node = self.nodes[NodeId(i)]
        if node.writing is not None:
            return None  # the driver is busy with a Ready (a real one would queue it)
        try:
            term, index = node.c.propose(data)
        except (NotLeader, ProposalDropped):
            return None
        node.pending[(term, index)] = data
        self._process(node)
        return term, index

    def read(self, i: str, context: bytes) -> bool:
        """Ask node ``i`` for a linearizable read (checked when its ReadState comes out)."""
        node = self.nodes[NodeId(i)]
        if not node.alive or node.writing is not None or not node.c.read_index(context):
            return False
        self.reads[context] = self.max_acked
        self._process(node)
        return True

    def propose_at_leader(self, data: Command) -> tuple[Term, LogIndex] | None:
        lead = self.leader()
        return None if lead is None else self.propose(lead.id, data)

    # ------------------------------------------------------------------ invariants
    def fail(self, what: str) -> str:
        return f"{what} [seed={self.seed} time={self.now}]"

    def members(self) -> set[NodeId]:
        lead = self.leader()
        conf = lead.c.conf if lead is not None else self.initial
        return set(conf.voters | conf.learners)

    def converged(self) -> bool:
        lead = self.leader()
        if lead is None or lead.c.log.term(lead.c.log.commit) != lead.c.term:
            return False
        last = lead.c.log.last_index
        return all(
            self.nodes[m].alive
            and self.nodes[m].c.log.commit == last
            and self.nodes[m].applied == last
            for m in self.members()
        )

    def heal_and_converge(self, max_steps: int = 2000) -> None:
        self.net.recover()
        for node in list(self.nodes.values()):
            if not node.alive:
                self.restart(node.id)
        self.run_until(self.converged, max_steps)

    def logs(self) -> dict[NodeId, dict[int, Entry]]:
        out: dict[NodeId, dict[int, Entry]] = {}
        for node in self.nodes.values():
            if node.alive:
                log = node.c.log
                out[node.id] = {i: log.entry(i) for i in range(log.first_index, log.last_index + 1)}
            else:
                out[node.id] = {e.index: e for e in node.storage.entries}
        return out

    def check_invariants(self) -> None:
        logs = self.logs()
        ids = sorted(logs)
        # Log matching (§5.3): same index and term => same entry and same prefix.
        for a_pos, a in enumerate(ids):
            for b in ids[a_pos + 1 :]:
                la, lb = logs[a], logs[b]
                common = sorted(set(la) & set(lb), reverse=True)
                matched = False
                for i in common:
                    if not matched and la[i].term == lb[i].term:
                        matched = True
                    if matched and la[i] != lb[i]:
                        raise InvariantViolation(
                            self.fail(f"log matching: {a} and {b} differ at {i} below a match")
                        )
        # Leader completeness (§5.4): an entry committed before term T is in T's leader's log.
        for node in self.alive():
            core = node.c
            if core.role is not Role.LEADER:
                continue
            for i, (term, _, _) in self.applied.items():
                if self.apply_term[i] >= core.term or i <= core.log.snapshot.index:
                    continue
                if core.log.term(i) != term:
                    raise InvariantViolation(
                        self.fail(f"leader completeness: {node.id} (term {core.term}) lacks {i}")
                    )
        # Applied prefixes agree with the global record (state machine safety).
        for node in self.alive():
            for i in range(node.c.log.snapshot.index + 1, node.applied + 1):
                if node.sm.get(i) != self.applied.get(i):
                    raise InvariantViolation(self.fail(f"{node.id} state machine differs at {i}"))

    def check_acked(self) -> None:
        """Every acknowledged proposal is applied on every live member."""
        for i in sorted(self.members()):
            node = self.nodes[i]
            if not node.alive:
                continue
            for index, (term, data) in self.acked.items():
                got = node.sm.get(index)
                if got is None or got[0] != term or got[2] != data:
                    raise InvariantViolation(
                        self.fail(f"acknowledged proposal {index} missing on {i}: {got}")
                    )

    def terms(self) -> dict[NodeId, int]:
        return {n.id: n.c.term for n in self.alive()}


def _needs_disk(rd: Ready, st: Storage) -> bool:
    """Whether the real storage writes anything for ``rd`` (it does not persist the commit
    index, so a Ready that only moves it costs no disk write)."""
    hs = rd.hard_state
    return (
        rd.snapshot is not None
        or bool(rd.entries)
        or (hs is not None and (hs.term, hs.vote) != (st.hard.term, st.hard.vote))
    )


def _write_steps(rd: Ready) -> int:
    """How many separate steps writing ``rd`` takes (see ``Cluster._persist``)."""
    return (rd.snapshot is not None) + len(rd.entries) + (rd.hard_state is not None)


def entry_kinds(entries: Iterable[Entry]) -> list[str]:
    return [e.kind.value if e.kind is not EntryKind.NORMAL else repr(e.data) for e in entries]
