"""``RaftCore``: Raft as a pure, synchronous, deterministic state machine.

The core never does I/O and never reads a clock: the caller (a "driver") feeds it

* ``tick()`` at a fixed interval (time is counted in ticks),
* ``step(message)`` for every message received from a peer,
* ``propose(command)``, ``propose_conf_change(change)``, ``read_index(ctx)``,
  ``transfer_leadership(to)`` for local requests, and ``compact(index, data)`` after the
  application took a snapshot,

and after any of these collects a ``Ready`` with ``ready()`` (when ``has_ready()``), carries
it out, and acknowledges it with ``advance(ready)``.  See ``Ready`` for the exact contract.
The only randomness (election timeout jitter) comes from the injected ``random.Random``, so
one seed reproduces one run exactly.

Roles are not loops: each role binds its own ``_step_role`` and ``_tick_role`` functions
(``_become_follower`` / ``_become_pre_candidate`` / ``_become_candidate`` /
``_become_leader``), and the common term and vote rules run in ``step`` before delegating.

Features: PreVote and CheckQuorum (a node rejoining after a partition cannot disrupt a
leader that still has a quorum), pipelined and batched replication with fast conflict
backtracking, the Figure 8 commit rule, snapshots sent in flow-controlled chunks, ReadIndex and
lease-based reads, leadership transfer (TimeoutNow), single-server membership changes that take
effect when appended (dissertation §4.1), with learners, and a leader that writes its log in
parallel with replicating it (dissertation §10.2.1).

**Parallel leader writes.**  A leader's AppendEntries for new entries leave in the same Ready
that hands the entries out for persisting, before they are durable (``Ready.early_messages``).
This is safe because the leader counts itself towards a commit quorum only for entries of a
Ready that was advanced (hence durable): an entry it sent and then lost in a crash is committed
only if a quorum of *other* voters holds it durably, and then every future leader holds it.
Followers still persist before they acknowledge, and a changed term or vote is durable before
any message of that term leaves (a Ready that changes either sends nothing early).

**Commit propagation.**  A leader does not broadcast a new commit index on its own: followers
learn it from the next AppendEntries or heartbeat (within ``heartbeat_tick``).  Only the leader
serves reads, so a follower applying a little later costs nothing, and a write costs one
message round instead of two.

**Lease reads** (``read_mode = LEASE``, dissertation §6.4.1).  Every heartbeat broadcast is a
numbered round (``readonly``).  The leader answers ``read_index`` at once, without messages,
while it holds a lease: it committed an entry of its term, it sent no TimeoutNow in this term,
and a quorum of voters (itself included) acknowledged heartbeats that it sent fewer than
``lease_ticks = election_tick - lease_margin_ticks`` of its own ticks ago.  Otherwise the read
waits for a heartbeat round as in ReadIndex.

Why no other leader can exist meanwhile: a voter that acknowledged a heartbeat received it after
the leader sent it and reset its election timer then; from then on it neither campaigns nor
grants a (pre-)vote until it has counted ``election_tick`` ticks of its own (the CheckQuorum vote
refusal, which lease mode therefore requires; TimeoutNow elections are exempt, hence no lease
after sending one), and a restarted node with a term holds its vote for ``election_tick`` ticks
(it may have acknowledged a heartbeat just before it crashed).  Any new leader needs a vote
from that quorum.

*Clock assumption.*  Let ``T`` be the nominal tick interval and ``r >= 0`` the drift bound.
(a) No node counts more than ``floor(d * (1 + r) / T) + 1`` ticks in any real-time span ``d``
(no clock runs fast by more than a factor ``1 + r``); (b) a leader counts at least
``floor(d / T)`` ticks in any span ``d`` (it never falls behind: a driver that missed ticks,
e.g. during a long fsync, replays them before it steps anything; a follower may lag, which
only delays its elections).  Then a voter grants a vote at the earliest
``(election_tick - 1) * T / (1 + r)`` after it received a heartbeat, and the leader stops
using that heartbeat less than ``lease_ticks * T`` after sending it.  Safe when
``lease_ticks <= (election_tick - 1) / (1 + r)``: with ``election_tick = 10`` and the default
margin of 2 ticks (``lease_ticks = 8``), tick rates may differ by up to 12.5 %.  The read mode
must be the same on every member.  A lease read is served at the commit index known when the
lease was checked; applying up to it and answering later is still linearizable.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dfs.raft.log import MemoryLog
from dfs.raft.messages import (
    AppendEntries,
    AppendResponse,
    Command,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    Snapshot,
    SnapshotMeta,
    SnapshotResponse,
    TimeoutNow,
    VoteResponse,
)
from dfs.raft.progress import Progress, ProgressState
from dfs.raft.readonly import ReadOnly, ReadState
from dfs.types import LogIndex, NodeId, Term

logger = logging.getLogger(__name__)


class Role(StrEnum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotLeader(Exception):
    """A leader-only request reached a node that is not the leader; ``leader`` is a hint."""

    def __init__(self, leader: NodeId | None) -> None:
        super().__init__(f"not the leader (leader hint: {leader})")
        self.leader = leader


class ProposalDropped(Exception):
    """The leader refuses the proposal right now (transfer or membership change pending)."""


class ReadMode(StrEnum):
    #: Serve reads at once while the leader holds a lease (see the module docstring).
    LEASE = "lease"
    #: Confirm leadership with a heartbeat round for every batch of reads (ReadIndex).
    READ_INDEX = "read_index"


@dataclass(frozen=True, slots=True)
class Config:
    id: NodeId
    #: Followers start an election after ``[election_tick, 2 * election_tick)`` silent ticks.
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    #: Unacknowledged AppendEntries per follower in REPLICATE state (pipelining window).
    max_inflight: int = 64
    #: Cap on the entries carried by one AppendEntries (at least one entry is always sent).
    max_bytes_per_msg: int = 1 << 20
    max_entries_per_msg: int = 1024
    snapshot_chunk_bytes: int = 1 << 20
    #: Chunks sent beyond the last one the follower acknowledged.
    snapshot_window_chunks: int = 4
    #: How the leader confirms that it still leads before answering ``read_index``.
    read_mode: ReadMode = ReadMode.LEASE
    #: A lease lasts ``election_tick - lease_margin_ticks`` ticks after the heartbeat that
    #: renewed it was sent (none at all if that is < 1; see the clock assumption).
    lease_margin_ticks: int = 2

    @property
    def lease_ticks(self) -> int:
        return self.election_tick - self.lease_margin_ticks

    def validate(self) -> None:
        if not self.id:
            raise ValueError("node id must be non-empty")
        if self.heartbeat_tick < 1 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 1 <= heartbeat_tick < election_tick")
        if self.max_inflight < 1 or self.max_bytes_per_msg < 1 or self.max_entries_per_msg < 1:
            raise ValueError("replication limits must be positive")
        if self.snapshot_chunk_bytes < 1 or self.snapshot_window_chunks < 1:
            raise ValueError("snapshot chunking limits must be positive")
        if self.read_mode not in tuple(ReadMode):
            raise ValueError(f"unknown read mode {self.read_mode!r}")
        if self.read_mode == ReadMode.LEASE and not self.check_quorum:
            raise ValueError("lease reads need check_quorum (its vote refusal is the lease)")
        if self.lease_margin_ticks < 1:
            raise ValueError("lease_margin_ticks must be >= 1")


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth telling the driver about (for routing and metrics)."""

    leader: NodeId | None
    role: Role


@dataclass(frozen=True, slots=True)
class Ready:
    """Work for the driver.  Handle the fields strictly in this order, then ``advance``:

    1. **Send** ``early_messages`` first: they may leave before and while the state below is
       persisted (a leader's AppendEntries, heartbeats, snapshot chunks and read answers, in a
       Ready that changes neither term nor vote: the leader writes its log in parallel with
       replicating it).  They promise nothing about this node's disk.
    2. **Persist** (and fsync): ``snapshot`` if set (the leader's snapshot: save it durably,
       discard the whole log, restore the state machine from ``snapshot.data``); then
       ``entries``: if the first entry's index is ``<=`` the last index in the durable log,
       first truncate the log from that index (a follower dropping a conflicting suffix), then
       append them all; then ``hard_state`` if set.  ``must_sync`` says whether an fsync is
       needed at all.
    3. **Send** ``messages`` (only now: a vote or an acknowledgement in them promises that the
       state above is durable).  Sends may be lost; the core retries on its own.
    4. **Apply** ``committed_entries`` to the state machine in order (NOOP and CONF entries
       carry no application command; CONF already took effect inside the core when it was
       appended).  A proposal returned as ``(term, index)`` succeeded iff the entry applied
       at ``index`` has that ``term``.  ``committed_entries`` may include entries from
       ``entries`` above, which is why persisting comes first.
    5. **Serve** ``read_states``: a read with that context is linearizable once the state
       machine applied up to its ``index``.
    6. Call ``advance(ready)``: only then does the leader count the entries as its own durable
       copies towards a commit quorum.

    No other method of the core may be called between ``ready()`` and ``advance()`` (the
    driver buffers incoming messages meanwhile).  A crash before ``advance`` is fine, also one
    after step 1 with any prefix of step 2 on disk: on restart, pass the durable state to
    ``RaftCore``; what was not persisted is as if it never happened (nobody relied on it).
    """

    soft_state: SoftState | None
    hard_state: HardState | None
    snapshot: Snapshot | None
    entries: tuple[Entry, ...]
    early_messages: tuple[Message, ...]
    messages: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]

    @property
    def must_sync(self) -> bool:
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None


#: Leader messages that may leave before the Ready's state is durable (see ``Ready``).
_EARLY_KINDS = (AppendEntries, Heartbeat, InstallSnapshot, ReadIndexResponse)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    match: LogIndex
    next: LogIndex
    state: ProgressState
    is_learner: bool
    recent_active: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: NodeId
    role: Role
    term: Term
    vote: NodeId | None
    leader: NodeId | None
    commit: LogIndex
    applied: LogIndex
    last_index: LogIndex
    snapshot_index: LogIndex
    conf_state: ConfState
    #: Leader only: replication state of every member (the leader included).
    progress: dict[NodeId, PeerStatus] = field(default_factory=dict)
    #: Leader only: a read now would be answered by the lease, without messages.
    lease: bool = False
    #: A (pre-)vote request of a higher term would be ignored now (CheckQuorum: this node
    #: heard from a leader within ``election_tick`` ticks, or restarted within that).
    refuses_votes: bool = False


@dataclass
class _SnapshotReceive:
    key: tuple[NodeId, Term, SnapshotMeta]
    buf: bytearray


class RaftCore:
    """See the module docstring.  Construct with the node's durable state on every start:

    ``hard_state``, ``snapshot`` (the newest one, with its data) and ``entries`` (every entry
    after it) as last persisted from Ready; ``applied`` is the index the state machine
    reflects at start (the snapshot's index if it is rebuilt from the snapshot, which is
    the default).  ``conf_state`` is the initial membership of the cluster (it is not in the
    log): every node, including one added later, passes the same one on every start.  It is
    used only when there is no snapshot; membership changes in the log apply on top of it.
    """

    def __init__(
        self,
        config: Config,
        rng: random.Random,
        *,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
        applied: int | None = None,
        conf_state: ConfState | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.id = config.id
        self._rng = rng
        hs = hard_state or HardState()
        if snapshot is None:
            snapshot = Snapshot(SnapshotMeta(conf_state=conf_state or ConfState()))
        self._snapshot = snapshot
        self.log = MemoryLog(
            snapshot.meta,
            entries,
            commit=hs.commit,
            applied=snapshot.meta.index if applied is None else applied,
        )
        self.term = hs.term
        self.vote = hs.vote
        self.leader: NodeId | None = None
        self.role = Role.FOLLOWER
        self.conf = snapshot.meta.conf_state
        self.conf_index = snapshot.meta.index
        self._recompute_conf()
        self.prs: dict[NodeId, Progress] = {}
        self._votes: dict[NodeId, bool] = {}
        self.election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_tick
        self.transferee: NodeId | None = None
        self._readonly = ReadOnly()
        self._pending_reads: list[tuple[bytes, NodeId]] = []
        self._snap_recv: _SnapshotReceive | None = None
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._bcast_pending = False
        self._heartbeat_pending = False
        #: Ticks since this core was built: the clock of the lease.
        self._clock = 0
        #: This leader sent TimeoutNow in its term: the lease is gone for good.
        self._lease_void = False
        #: Ticks left during which a restarted node refuses votes (see the module docstring:
        #: it may have acknowledged a heartbeat just before it crashed).
        self._vote_hold = (
            config.election_tick if config.read_mode == ReadMode.LEASE and hs.term > 0 else 0
        )
        self._prev_hard = HardState(self.term, self.vote, self.log.commit)
        self._prev_soft = SoftState(None, Role.FOLLOWER)
        self._in_ready: Ready | None = None
        self._in_ready_applied = self.log.applied
        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        self._become_follower(self.term, None)

    # ================================================================== public API
    def tick(self) -> None:
        """Advance logical time by one tick (election timeouts, heartbeats, CheckQuorum,
        leases).  Under lease reads a leader must be ticked for every tick interval that
        passed (see the clock assumption in the module docstring)."""
        self._check_idle()
        self._clock += 1
        if self._vote_hold:
            self._vote_hold -= 1
        self._tick()

    def step(self, m: Message) -> None:
        """Handle a message from a peer (any order, duplicates and stale ones are fine)."""
        self._check_idle()
        if m.to != self.id:
            raise ValueError(f"message for {m.to} stepped into {self.id}")
        if m.term > self.term:
            if isinstance(m, RequestVote) and self._refuses_votes() and not m.transfer:
                # We heard from a leader recently: a disruptive candidate (a node back from a
                # partition) must not depose it (dissertation §4.2.3), and the leader's read
                # lease relies on this refusal.
                return
            if isinstance(m, RequestVote) and m.pre_vote:
                pass  # a PreVote changes nothing here
            elif isinstance(m, VoteResponse) and m.pre_vote and m.granted:
                pass  # a granted PreVote carries the term we would campaign in
            else:
                lead = m.frm if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot) else None
                self._become_follower(m.term, lead)
        elif m.term < self.term:
            if isinstance(m, AppendEntries | Heartbeat) and (
                self.config.check_quorum or self.config.pre_vote
            ):
                # A stale leader (e.g. back from a partition, whose term we passed without
                # it) learns our term and steps down.
                self._send(
                    AppendResponse(
                        frm=self.id, to=m.frm, term=self.term, index=LogIndex(0), success=False
                    )
                )
            elif isinstance(m, RequestVote) and m.pre_vote:
                self._send(
                    VoteResponse(
                        frm=self.id, to=m.frm, term=self.term, pre_vote=True, granted=False
                    )
                )
            return
        if isinstance(m, RequestVote):
            self._handle_vote_request(m)
            return
        self._step(m)

    def propose(self, command: Command) -> tuple[Term, LogIndex]:
        """Append ``command`` (leader only); returns ``(term, index)`` of its entry.  It is
        committed iff the entry applied at ``index`` has ``term``.  Raises NotLeader or
        ProposalDropped."""
        self._check_idle()
        self._check_can_propose()
        return self._append_local(EntryKind.NORMAL, command)

    def propose_conf_change(self, change: ConfChange) -> tuple[Term, LogIndex]:
        """Propose a single-server membership change (leader only).  It takes effect on each
        node as soon as the entry is appended there.  Refused (ProposalDropped) while an
        earlier change is uncommitted or before this leader committed an entry of its own
        term; ValueError for a change that makes no sense (e.g. removing the last voter)."""
        self._check_idle()
        self._check_can_propose()
        if self.conf_index > self.log.commit:
            raise ProposalDropped("a membership change is still pending")
        if not self._committed_in_term():
            raise ProposalDropped("the leader has not yet committed an entry of its term")
        new = self.conf.apply(change)
        if new == self.conf:
            raise ValueError(f"{change} does not change the membership")
        if not new.voters:
            raise ValueError("cannot remove the last voter")
        if (
            change.op is ConfChangeOp.REMOVE
            and change.node not in self.conf.voters | self.conf.learners
        ):
            raise ValueError(f"{change.node} is not a member")
        return self._append_local(EntryKind.CONF, change.to_dict())

    def read_index(self, context: bytes) -> bool:
        """Request a linearizable read; ``context`` must be unique among pending reads.  The
        answer comes back as a ``ReadState`` in a later Ready (in the very next one, with no
        messages, on a leader holding a lease).  Returns False if the request was dropped (no
        known leader); the driver retries.  Pending reads are dropped without notice if
        leadership changes, so the driver also retries after a timeout."""
        self._check_idle()
        if self.role is Role.LEADER:
            self._leader_read(context, self.id)
            return True
        if self.leader is None:
            return False
        self._send(ReadIndexRequest(frm=self.id, to=self.leader, term=self.term, context=context))
        return True

    def transfer_leadership(self, to: NodeId) -> None:
        """Hand leadership to voter ``to`` (leader only): stop taking proposals, bring ``to``
        up to date, then tell it to campaign at once (TimeoutNow).  Abandoned after an
        election timeout."""
        self._check_idle()
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if to in (self.id, self.transferee):
            return
        if to not in self.conf.voters:
            raise ValueError(f"{to} is not a voter")
        self.transferee = to
        self.election_elapsed = 0
        pr = self.prs[to]
        if pr.match == self.log.last_index:
            self._send_timeout_now(to)
        else:
            self._replicate(to, allow_empty=True)

    def compact(self, index: int, data: bytes) -> Snapshot:
        """The application durably saved a snapshot ``data`` of its state at ``index`` (which
        it has applied): drop the log up to there, and use the snapshot for followers that
        are too far behind.  Returns the snapshot with its metadata (index, term, membership
        as of ``index``): the driver keeps that metadata with the snapshot, then compacts its
        durable log itself."""
        self._check_idle()
        if index <= self.log.snapshot.index:
            return self._snapshot
        term = self.log.term(index)
        if term is None or index > self.log.applied:
            raise ValueError(f"cannot compact to {index}: applied only {self.log.applied}")
        meta = SnapshotMeta(LogIndex(index), term, self._conf_at(index))
        self.log.compact(meta)
        self._snapshot = Snapshot(meta, data)
        return self._snapshot

    def has_ready(self) -> bool:
        self._check_idle()
        self._flush()
        log, hard, soft = self.log, self._prev_hard, self._prev_soft
        return bool(
            self._msgs
            or self._read_states
            or log.pending_snapshot is not None
            or log.unstable_from <= log.last_index
            or log.commit > log.applied
            or (self.term, self.vote, log.commit) != (hard.term, hard.vote, hard.commit)
            or self.leader != soft.leader
            or self.role is not soft.role
        )

    def lease_remaining(self) -> int:
        """On a leader holding a read lease: for how many more ticks it holds (a read is
        answered by the lease until that many further ticks have passed); else 0.  A pure
        query, also allowed between ``ready()`` and ``advance()``: a driver may answer reads
        itself, at the commit index, until that many tick intervals after its latest tick
        (see the clock assumption in the module docstring)."""
        if self.role is not Role.LEADER or not self._committed_in_term():
            return 0
        return max(0, self._lease_end() - self._clock)

    def ready(self) -> Ready:
        """Collect the pending work (see ``Ready``).  Call ``advance`` when it is done."""
        self._check_idle()
        self._flush()
        log = self.log
        hard = self._hard_state()
        soft = self._soft_state()
        start = log.applied + 1
        if log.pending_snapshot is not None:
            start = max(start, log.pending_snapshot.meta.index + 1)
        committed = tuple(log.slice(start, log.commit + 1)) if log.commit >= start else ()
        early: list[Message] = []
        late: list[Message] = self._msgs
        prev = self._prev_hard
        if self.role is Role.LEADER and (hard.term, hard.vote) == (prev.term, prev.vote):
            # Term and vote are durable (handed out in an advanced Ready): the leader's own
            # messages of this term need nothing from this Ready's disk write.
            late = []
            for m in self._msgs:
                (early if isinstance(m, _EARLY_KINDS) and m.term == self.term else late).append(m)
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != prev else None,
            snapshot=log.pending_snapshot,
            entries=tuple(log.unstable_entries()),
            early_messages=tuple(early),
            messages=tuple(late),
            committed_entries=committed,
            read_states=tuple(self._read_states),
        )
        self._msgs = []
        self._read_states = []
        self._prev_hard, self._prev_soft = hard, soft
        self._in_ready = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """Acknowledge that ``rd`` was carried out (persisted, sent, applied)."""
        if rd is not self._in_ready:
            raise RuntimeError("advance() must be given the Ready returned by ready()")
        self._in_ready = None
        log = self.log
        if rd.snapshot is not None:
            log.pending_snapshot = None
            log.applied = LogIndex(max(log.applied, rd.snapshot.meta.index))
        if rd.entries:
            last = rd.entries[-1]
            log.unstable_from = LogIndex(max(log.unstable_from, last.index + 1))
            if log.term(last.index) == last.term:
                log.stable = LogIndex(max(log.stable, last.index))
        if rd.committed_entries:
            log.applied = LogIndex(max(log.applied, rd.committed_entries[-1].index))
        if self.role is Role.LEADER and rd.entries:
            # The entries are durable here now: only from this point on do they count for
            # the leader's own vote towards a commit quorum.
            me = self.prs.get(self.id)
            if me is not None:
                me.maybe_update(log.stable)
            self._maybe_commit(serve_by_lease=False)

    def status(self) -> Status:
        progress = {
            n: PeerStatus(pr.match, pr.next, pr.state, pr.is_learner, pr.recent_active)
            for n, pr in self.prs.items()
        }
        return Status(
            id=self.id,
            role=self.role,
            term=self.term,
            vote=self.vote,
            leader=self.leader,
            commit=self.log.commit,
            applied=self.log.applied,
            last_index=self.log.last_index,
            snapshot_index=self.log.snapshot.index,
            conf_state=self.conf,
            progress=progress if self.role is Role.LEADER else {},
            lease=self.lease_remaining() > 0,
            refuses_votes=self._refuses_votes(),
        )

    # ================================================================== roles
    def _reset(self, term: Term) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader = None
        self.election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self.config.election_tick + self._rng.randrange(
            self.config.election_tick
        )
        self.transferee = None
        self._votes = {}
        self.prs = {}
        self._readonly = ReadOnly()
        self._pending_reads = []
        self._heartbeat_pending = False
        self._bcast_pending = False
        self._lease_void = False

    def _become_follower(self, term: Term, leader: NodeId | None) -> None:
        self._reset(term)
        self.leader = leader
        self.role = Role.FOLLOWER
        self._step = self._step_follower
        self._tick = self._tick_election

    def _become_pre_candidate(self) -> None:
        # PreVote changes neither term nor vote: a node that cannot win disturbs no one.
        self._reset(self.term)
        self.role = Role.PRE_CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election

    def _become_candidate(self) -> None:
        self._reset(Term(self.term + 1))
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._step = self._step_candidate
        self._tick = self._tick_election

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.leader = self.id
        self.role = Role.LEADER
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        self._sync_progress()
        me = self.prs.get(self.id)
        if me is not None:
            me.maybe_update(self.log.stable)
            me.become_replicate()
        logger.debug("%s: leader of term %d", self.id, self.term)
        # §8: commit an entry of our own term first; it also commits everything before it.
        self._append_local(EntryKind.NOOP, b"")

    def _refuses_votes(self) -> bool:
        return self.config.check_quorum and (
            (self.leader is not None and self.election_elapsed < self.config.election_tick)
            or self._vote_hold > 0
        )

    def _promotable(self) -> bool:
        return self.id in self.conf.voters

    def _campaign(self, *, pre_vote: bool, transfer: bool = False) -> None:
        if not self._promotable():
            return
        if pre_vote:
            self._become_pre_candidate()
            vote_term = Term(self.term + 1)
        else:
            self._become_candidate()
            vote_term = self.term
        if self._record_vote(self.id, granted=True):
            return
        for v in sorted(self.conf.voters):
            if v != self.id:
                self._send(
                    RequestVote(
                        frm=self.id,
                        to=v,
                        term=vote_term,
                        pre_vote=pre_vote,
                        transfer=transfer,
                        last_log_index=self.log.last_index,
                        last_log_term=self.log.last_term,
                    )
                )

    def _record_vote(self, frm: NodeId, *, granted: bool) -> bool:
        """Tally a vote; on a decision change role and return True."""
        self._votes.setdefault(frm, granted)
        voters = self.conf.voters
        yes = sum(1 for v, g in self._votes.items() if g and v in voters)
        no = sum(1 for v, g in self._votes.items() if not g and v in voters)
        q = _quorum(voters)
        if yes >= q:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(pre_vote=False)
            else:
                self._become_leader()
            return True
        if no > len(voters) - q:
            self._become_follower(self.term, None)
            return True
        return False

    # ================================================================== ticks
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self._promotable() and self.election_elapsed >= self._randomized_timeout:
            self.election_elapsed = 0
            self._campaign(pre_vote=self.config.pre_vote)

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.config.election_tick:
            self.election_elapsed = 0
            if self.config.check_quorum:
                active = sum(
                    1
                    for v in self.conf.voters
                    if v == self.id or (v in self.prs and self.prs[v].recent_active)
                )
                if active < _quorum(self.conf.voters):
                    logger.debug("%s: lost contact with a quorum, stepping down", self.id)
                    self._become_follower(self.term, None)
                    return
                for n, pr in self.prs.items():
                    pr.recent_active = n == self.id
            self.transferee = None  # a transfer that did not finish in time is abandoned
        if self._heartbeat_elapsed >= self.config.heartbeat_tick:
            self._heartbeat_elapsed = 0
            self._heartbeat_pending = True

    # ================================================================== steps
    def _handle_vote_request(self, m: RequestVote) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote is None and self.leader is None)
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            self._send(
                VoteResponse(frm=self.id, to=m.frm, term=m.term, pre_vote=m.pre_vote, granted=True)
            )
            if not m.pre_vote:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(
                VoteResponse(
                    frm=self.id, to=m.frm, term=self.term, pre_vote=m.pre_vote, granted=False
                )
            )

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self.election_elapsed = 0
            self.leader = m.frm
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self.election_elapsed = 0
            self.leader = m.frm
            self.log.commit_to(min(m.commit, self.log.last_index))
            self._send(HeartbeatResponse(frm=self.id, to=m.frm, term=self.term, context=m.context))
        elif isinstance(m, InstallSnapshot):
            self.election_elapsed = 0
            self.leader = m.frm
            self._handle_snapshot(m)
        elif isinstance(m, TimeoutNow):
            logger.debug("%s: TimeoutNow from %s, campaigning", self.id, m.frm)
            self._campaign(pre_vote=False, transfer=True)
        elif isinstance(m, ReadIndexResponse):
            self._read_states.append(ReadState(m.index, m.context))

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
            # Someone won this term (§5.2).
            self._become_follower(self.term, m.frm)
            self._step_follower(m)
        elif isinstance(m, VoteResponse) and m.pre_vote == (self.role is Role.PRE_CANDIDATE):
            self._record_vote(m.frm, granted=m.granted)

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, ReadIndexRequest):
            if m.frm in self.prs:
                self._leader_read(m.context, m.frm)
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        if isinstance(m, AppendResponse):
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif isinstance(m, HeartbeatResponse):
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.is_paused():
                pr.inflights.popleft()  # a response may have been lost: let one more through
            if pr.state is ProgressState.SNAPSHOT:
                if not pr.snap_progressed:
                    pr.snap_sent = pr.snap_acked  # resend what was not acknowledged
                    pr.snap_done_sent = False
                pr.snap_progressed = False
                self._send_snapshot_chunks(m.frm, pr)
            elif pr.match < self.log.last_index:
                self._replicate(m.frm, allow_empty=True)
            if m.context is not None and m.frm in self.conf.voters:
                self._readonly.ack(m.frm, m.context)
                self._release_reads()
        elif isinstance(m, SnapshotResponse):
            pr.recent_active = True
            if pr.state is ProgressState.SNAPSHOT and m.index == pr.pending_snapshot:
                # Only progress sends more: answering every (possibly duplicated) response
                # with a resend would multiply traffic.  Lost chunks are resent on the next
                # heartbeat response instead.
                if m.next_offset < pr.snap_acked and not pr.snap_progressed:
                    # No progress for a heartbeat interval and the follower holds less than
                    # it acknowledged (it restarted): resume from what it holds.  (Early
                    # reordered acks also report less, hence the progress condition.)
                    pr.snap_acked = pr.snap_sent = m.next_offset
                    pr.snap_done_sent = False
                elif m.next_offset > pr.snap_acked:
                    pr.snap_acked = m.next_offset
                    pr.snap_sent = max(pr.snap_sent, pr.snap_acked)
                    pr.snap_progressed = True
                else:
                    return
                self._send_snapshot_chunks(m.frm, pr)

    # ------------------------------------------------------------------ replication
    def _handle_append(self, m: AppendEntries) -> None:
        log = self.log
        prev_index, prev_term, entries = m.prev_index, m.prev_term, m.entries
        if prev_index < log.commit:
            # Entries up to our commit index match the leader's: skip them (they may also be
            # compacted here), keep the rest.
            keep = [e for e in entries if e.index > log.commit]
            if not keep:
                self._send(
                    AppendResponse(
                        frm=self.id, to=m.frm, term=self.term, index=log.commit, success=True
                    )
                )
                return
            prev_index = log.commit
            prev_term = entries[len(entries) - len(keep) - 1].term
            entries = tuple(keep)
        result = log.maybe_append(prev_index, prev_term, m.commit, entries)
        if result is not None:
            last_new, truncated = result
            if any(e.kind is EntryKind.CONF for e in entries) or (
                truncated is not None and truncated <= self.conf_index
            ):
                self._recompute_conf()
            self._send(
                AppendResponse(frm=self.id, to=m.frm, term=self.term, index=last_new, success=True)
            )
            return
        if prev_index > log.last_index:
            hint_index, hint_term = LogIndex(log.last_index + 1), None
        else:
            hint_term = log.term(prev_index)
            hint_index = log.first_index_of_term_at(prev_index)
        self._send(
            AppendResponse(
                frm=self.id,
                to=m.frm,
                term=self.term,
                index=prev_index,
                success=False,
                conflict_index=hint_index,
                conflict_term=hint_term,
            )
        )

    def _handle_append_response(self, m: AppendResponse, pr: Progress) -> None:
        if not m.success:
            if m.index == 0 and m.conflict_index == 0:
                return  # a bare term notice from a node with a higher term (handled above)
            hint = m.conflict_index
            if m.conflict_term is not None:
                j = self.log.last_index_of_term(m.conflict_term, m.index)
                if j is not None:
                    hint = LogIndex(j + 1)
            if pr.maybe_decr_to(m.index, hint):
                self._replicate(m.frm, allow_empty=True)
            return
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            if pr.match >= pr.pending_snapshot:
                pr.become_replicate()
        else:
            pr.free_inflights_to(m.index)
        # A new commit index travels with the next append or heartbeat (module docstring).
        self._maybe_commit(serve_by_lease=True)
        if self.role is not Role.LEADER:
            return  # the commit was our own removal: we stepped down
        self._replicate(m.frm, allow_empty=False)
        if self.transferee == m.frm and pr.match == self.log.last_index:
            self._send_timeout_now(m.frm)

    def _replicate(self, to: NodeId, *, allow_empty: bool) -> None:
        """Send what ``to`` is missing: several messages in a row while it is in REPLICATE
        state (pipelining), bounded by the inflight window."""
        pr = self.prs[to]
        for _ in range(self.config.max_inflight + 1):
            if not self._send_append(to, pr, allow_empty=allow_empty):
                return
            allow_empty = False
            if pr.state is not ProgressState.REPLICATE or pr.next > self.log.last_index:
                return

    def _send_append(self, to: NodeId, pr: Progress, *, allow_empty: bool) -> bool:
        if pr.is_paused():
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None and prev <= self.log.snapshot.index:
            pr.become_snapshot(self._snapshot)
            self._send_snapshot_chunks(to, pr)
            return True
        if prev_term is None:
            # next is beyond our log (stale optimism): probe from the end.
            pr.next = LogIndex(self.log.last_index + 1)
            prev, prev_term = self.log.last_index, self.log.last_term
        ents = self.log.slice(
            prev + 1,
            self.log.last_index + 1,
            max_bytes=self.config.max_bytes_per_msg,
            max_entries=self.config.max_entries_per_msg,
        )
        if not ents and not allow_empty:
            return False
        self._send(
            AppendEntries(
                frm=self.id,
                to=to,
                term=self.term,
                prev_index=LogIndex(prev),
                prev_term=prev_term,
                entries=tuple(ents),
                commit=self.log.commit,
            )
        )
        pr.sent_entries(ents[-1].index if ents else None)
        return True

    def _send_snapshot_chunks(self, to: NodeId, pr: Progress) -> None:
        snap = pr.snapshot
        if snap is None:
            return
        size = self.config.snapshot_chunk_bytes
        window = size * self.config.snapshot_window_chunks
        total = len(snap.data)
        for _ in range(self.config.snapshot_window_chunks):
            if pr.snap_done_sent or pr.snap_sent - pr.snap_acked >= window:
                return
            off = pr.snap_sent
            chunk = snap.data[off : off + size]
            done = off + len(chunk) >= total
            self._send(
                InstallSnapshot(
                    frm=self.id,
                    to=to,
                    term=self.term,
                    meta=snap.meta,
                    offset=off,
                    data=chunk,
                    done=done,
                )
            )
            pr.snap_sent = off + len(chunk)
            pr.snap_done_sent = done

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        log = self.log
        if m.meta.index <= log.commit:
            self._snap_recv = None
            self._send(
                AppendResponse(
                    frm=self.id, to=m.frm, term=self.term, index=log.commit, success=True
                )
            )
            return
        recv = self._snap_recv
        # Chunks of one transfer come from one leader in one term (two leaders' encodings of
        # the same state need not be byte-identical).
        key = (m.frm, m.term, m.meta)
        if m.offset == 0 and (recv is None or recv.key != key):
            recv = self._snap_recv = _SnapshotReceive(key, bytearray())
        have = len(recv.buf) if recv is not None and recv.key == key else 0
        if recv is None or recv.key != key or m.offset != have:
            self._send(
                SnapshotResponse(
                    frm=self.id, to=m.frm, term=self.term, index=m.meta.index, next_offset=have
                )
            )
            return
        recv.buf += m.data
        if not m.done:
            self._send(
                SnapshotResponse(
                    frm=self.id,
                    to=m.frm,
                    term=self.term,
                    index=m.meta.index,
                    next_offset=len(recv.buf),
                )
            )
            return
        self._snap_recv = None
        snap = Snapshot(m.meta, bytes(recv.buf))
        if log.match_term(m.meta.index, m.meta.term):
            # We already hold that entry: just commit up to it, keep the log after it.
            log.commit_to(m.meta.index)
        else:
            logger.debug("%s: installing snapshot at %d", self.id, m.meta.index)
            log.restore(snap)
            self._snapshot = snap
            self.conf = m.meta.conf_state
            self.conf_index = m.meta.index
        self._send(
            AppendResponse(frm=self.id, to=m.frm, term=self.term, index=m.meta.index, success=True)
        )

    def _maybe_commit(self, *, serve_by_lease: bool) -> bool:
        """§5.3/§5.4.2: commit the largest index a quorum of voters holds, but only if it is
        of the current term (Figure 8); earlier entries are committed along with it.
        ``serve_by_lease``: whether reads waiting for this leader's first commit may use the
        lease (only when the clock is current: not inside ``advance``, which runs after the
        driver's disk write, however long that took)."""
        voters = self.conf.voters
        if not voters:
            return False
        matches = sorted((self.prs[v].match if v in self.prs else 0 for v in voters), reverse=True)
        mci = matches[_quorum(voters) - 1]
        if mci <= self.log.commit or self.log.term(mci) != self.term:
            return False
        self.log.commit_to(mci)
        self._after_commit(serve_by_lease)
        return True

    def _after_commit(self, serve_by_lease: bool) -> None:
        if self._pending_reads and self._committed_in_term():
            pending, self._pending_reads = self._pending_reads, []
            for ctx, requester in pending:
                self._leader_read(ctx, requester, use_lease=serve_by_lease)
        if self.id not in self.conf.voters and self.log.commit >= self.conf_index:
            # Our own removal is committed: hand over to an up-to-date voter and step down.
            self._bcast_append()
            for v in sorted(self.conf.voters):
                pr = self.prs.get(v)
                if pr is not None and pr.match == self.log.last_index:
                    self._send_timeout_now(v)
                    break
            self._become_follower(self.term, None)

    def _committed_in_term(self) -> bool:
        return self.log.term(self.log.commit) == self.term

    def _bcast_append(self) -> None:
        for n in sorted(self.prs):
            if n != self.id:
                self._replicate(n, allow_empty=True)

    def _bcast_heartbeat(self, context: int) -> None:
        for n in sorted(self.prs):
            if n != self.id:
                pr = self.prs[n]
                self._send(
                    Heartbeat(
                        frm=self.id,
                        to=n,
                        term=self.term,
                        commit=LogIndex(min(pr.match, self.log.commit)),
                        context=context,
                    )
                )

    def _flush(self) -> None:
        """Deferred broadcasts: every proposal since the last Ready goes out in one batch."""
        if self.role is not Role.LEADER:
            return
        if self._bcast_pending:
            self._bcast_pending = False
            self._bcast_append()
        if self._heartbeat_pending:
            # One numbered round per Ready however many ticks and reads asked for one.
            self._heartbeat_pending = False
            rnd = self._readonly.start_round(self._clock, self.config.election_tick)
            self._bcast_heartbeat(rnd)

    # ------------------------------------------------------------------ reads
    def _leader_read(self, context: bytes, requester: NodeId, *, use_lease: bool = True) -> None:
        if not self._committed_in_term():
            # A new leader does not know the commit index until it committed in its term.
            self._pending_reads.append((context, requester))
            return
        voters = self.conf.voters
        if _quorum(voters) <= (1 if self.id in voters else 0) or (
            use_lease and self._lease_holds()
        ):
            self._serve_read(self.log.commit, context, requester)
            return
        self._readonly.add(self.log.commit, context, requester)
        self._heartbeat_pending = True

    def _lease_holds(self) -> bool:
        """See "Lease reads" in the module docstring."""
        return self._clock < self._lease_end()

    def _lease_end(self) -> int:
        """The first tick at which the lease no longer holds."""
        if self.config.read_mode != ReadMode.LEASE or self._lease_void:
            return _NO_LEASE
        voters = self.conf.voters
        if voters == {self.id}:
            return self._clock + 1  # nobody else can be elected: renewed every tick
        start = self._readonly.lease_start(voters, self.id, _quorum(voters), self._clock)
        return start + self.config.lease_ticks

    def _release_reads(self) -> None:
        for req in self._readonly.release(self.conf.voters, self.id, _quorum(self.conf.voters)):
            self._serve_read(req.index, req.context, req.requester)

    def _serve_read(self, index: LogIndex, context: bytes, requester: NodeId) -> None:
        if requester == self.id:
            self._read_states.append(ReadState(index, context))
        else:
            self._send(
                ReadIndexResponse(
                    frm=self.id, to=requester, term=self.term, index=index, context=context
                )
            )

    # ------------------------------------------------------------------ membership
    def _recompute_conf(self) -> None:
        conf, index = self.log.snapshot.conf_state, self.log.snapshot.index
        for e in self.log.conf_entries():
            assert isinstance(e.data, dict)
            conf, index = conf.apply(ConfChange.from_dict(e.data)), e.index
        changed = conf != self.conf
        self.conf, self.conf_index = conf, index
        if changed:
            logger.debug("%s: membership now %s (entry %d)", self.id, conf, index)
            if self.role is Role.LEADER:
                self._sync_progress()
                if self._maybe_commit(serve_by_lease=False):
                    self._bcast_pending = True

    def _conf_at(self, index: int) -> ConfState:
        conf = self.log.snapshot.conf_state
        for e in self.log.conf_entries():
            if e.index > index:
                break
            assert isinstance(e.data, dict)
            conf = conf.apply(ConfChange.from_dict(e.data))
        return conf

    def _sync_progress(self) -> None:
        members = self.conf.voters | self.conf.learners
        for n in list(self.prs):
            if n not in members:
                del self.prs[n]
        for n in sorted(members):
            if n not in self.prs:
                self.prs[n] = Progress(
                    next=LogIndex(self.log.last_index + 1), max_inflight=self.config.max_inflight
                )
            self.prs[n].is_learner = n in self.conf.learners

    # ------------------------------------------------------------------ helpers
    def _append_local(self, kind: EntryKind, data: Command) -> tuple[Term, LogIndex]:
        entry = Entry(self.term, LogIndex(self.log.last_index + 1), kind, data)
        self.log.append([entry])
        if kind is EntryKind.CONF:
            self._recompute_conf()
        self._bcast_pending = True
        return entry.term, entry.index

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if self.transferee is not None:
            raise ProposalDropped(f"leadership is being transferred to {self.transferee}")

    def _check_idle(self) -> None:
        if self._in_ready is not None:
            raise RuntimeError("call advance() before using the core again")

    def _send(self, m: Message) -> None:
        self._msgs.append(m)

    def _send_timeout_now(self, to: NodeId) -> None:
        # The transferee's election ignores the voters' lease refusal: from now on this
        # leader can never be sure no other leader exists in its term.
        self._lease_void = True
        self._send(TimeoutNow(frm=self.id, to=to, term=self.term))

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.commit)

    def _soft_state(self) -> SoftState:
        return SoftState(self.leader, self.role)


#: ``_lease_end`` when there is no lease at all.
_NO_LEASE = -(1 << 62)


def _quorum(voters: frozenset[NodeId]) -> int:
    return len(voters) // 2 + 1


def describe(m: Message) -> str:
    """A compact one-line rendering of a message (for logs and test transcripts)."""
    d: dict[str, Any] = m.to_dict()
    kind = d.pop("type")
    frm, to, term = d.pop("frm"), d.pop("to"), d.pop("term")
    if "entries" in d:
        d["entries"] = [f"{e['term']}/{e['index']}" for e in d["entries"]]
    if "meta" in d:
        d["meta"] = f"{d['meta']['term']}/{d['meta']['index']}"
    if "data" in d and isinstance(d["data"], bytes):
        d["data"] = len(d["data"])
    rest = " ".join(f"{k}={v}" for k, v in d.items())
    return f"{frm}->{to} {kind} t{term} {rest}".rstrip()
