"""``RaftNode``: the trio driver of the pure ``RaftCore`` for the metaserver.

A drop-in replacement for the single-node ``Committer`` (same ``recover`` / ``run`` /
``propose`` / ``add_listener`` / ``statistics`` / ``namespace`` surface) that replicates the
namespace's command log over a Raft group of metaservers.

One driver task owns the core and the ``Namespace``; every other task only queues work for it
(inbound messages from the ``raft.message`` RPC, proposals, reads, requests) and wakes it.
Each round: wait for work or the next tick (``trio.sleep`` granularity, ``tick_interval``) ->
tick / step / propose into the core -> then, while the core has a ``Ready``, strictly in order:

1. **send early**: a leader's appends and heartbeats go to the ``PeerSender`` queues at once,
   so the followers write the entries while the leader writes them (dissertation §10.2.1;
   the core counts the leader's own copy only once it is durable);
2. **persist** (worker thread): a leader's snapshot, entries (truncating a conflicting suffix),
   term/vote; one fsync per Ready covers every proposal in it (group commit: proposals that
   arrive while a fsync runs form the next Ready);
3. **send** the rest (votes and acknowledgements promise the state just written); a
   ``PeerSender`` never blocks the driver;
4. **install** a received snapshot into the namespace, then **apply** committed entries in
   order; a proposer is resolved when the entry at its index applies: with the command's
   result or FsError if the term matches, with ``NotLeader`` if another leader's entry took
   its place;
5. **serve read states** (ReadIndex, or lease reads that had to wait), then ``advance``.

Reads (``read_barrier``) skip the driver altogether while the leader holds a lease and has
applied everything it knows to be committed: before every ``await`` the driver turns the
core's ``lease_remaining()`` ticks into a trio deadline on its tick grid.

Ticks follow a fixed grid of ``tick_interval``.  A leader replays every tick it missed (a long
fsync, a busy CPU; at most ``election_tick + 1``) before it steps anything: its read lease is
counted in its ticks and must not outlast real time (see the clock assumption in
``dfs.raft.core``).  So a leader stalled for more than an election timeout may step down
(CheckQuorum sees the replayed ticks before the answers that arrived meanwhile), which is
right: its followers may be electing a successor.  A follower that fell behind ticks once (a
slow follower clock only delays its elections).

After a round, every ``snapshot_every`` applied entries it snapshots the namespace
(``core.compact`` + ``SnapshotStore`` + ``RaftLog.compact``).  A new leader's no-op comes from
the core (``_become_leader`` appends it).

Startup (``RaftNode.recover``): the newest snapshot restores the namespace; log entries after
it are handed to the core but applied only once a leader reports them committed (the commit
index is not persisted, see ``raftstorage``).  As with the ``Committer``, apply listeners are
not called for entries that were already in the log at startup (soft state is rebuilt from
chunkserver registrations instead).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from dfs.errors import BadRequest, ConfigError, FsError, NotLeader, Unauthorized, Unavailable
from dfs.metaserver.commit import ApplyListener
from dfs.metaserver.namespace import Namespace
from dfs.metaserver.peers import RAFT_METHOD, PeerSender, RaftGroupConfig
from dfs.metaserver.raftlog import DEFAULT_SEGMENT_BYTES
from dfs.metaserver.raftstorage import RAFT_KEY, RaftStorage
from dfs.raft import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageDecodeError,
    ProposalDropped,
    RaftCore,
    ReadMode,
    Ready,
    Role,
    Snapshot,
    SoftState,
    message_from_dict,
)
from dfs.raft import NotLeader as CoreNotLeader
from dfs.rpc.client import RpcClientPool
from dfs.rpc.dispatch import Dispatcher
from dfs.security.identity import Peer, TlsFiles
from dfs.security.identity import Role as CertRole
from dfs.types import NodeId

logger = logging.getLogger(__name__)

#: Inbound messages buffered for the driver before new ones are dropped (Raft retries).
MAX_INBOX = 16384


@dataclass(eq=False)
class _Waiter:
    """A caller waiting for the driver: a proposal, a conf change, a read, a request."""

    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None

    def resolve(self, result: Any = None) -> None:
        self.result = result
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()

    async def wait(self) -> Any:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


@dataclass(eq=False)
class _Proposal(_Waiter):
    command: dict[str, Any] | None = None
    change: ConfChange | None = None


@dataclass(eq=False)
class _Read(_Waiter):
    context: bytes = b""
    index: int = 0


@dataclass
class RaftNodeStatistics:
    node_id: str
    role: str
    term: int
    leader: str | None
    leader_address: str | None
    commit_index: int
    applied_index: int
    snapshot_index: int
    last_index: int
    proposals: int
    failed_commands: int
    readies: int
    #: Readies that needed the disk (each is one group-committed write + fsync).
    batches: int
    fsyncs: int
    snapshots_taken: int
    snapshots_installed: int
    messages_received: int
    messages_sent: int
    messages_dropped: int
    read_barriers: int
    #: Read barriers answered by the leader's lease without the driver (also in read_barriers).
    lease_reads: int


class RaftNode:
    """See the module docstring.  Only the driver task calls ``Namespace.apply``."""

    def __init__(
        self,
        *,
        node_id: str,
        group: RaftGroupConfig,
        tls: TlsFiles,
        storage: RaftStorage,
        namespace: Namespace,
        core: RaftCore,
    ) -> None:
        """Use ``RaftNode.recover``."""
        self.node_id = NodeId(node_id)
        self.group = group
        self.namespace = namespace
        self.storage = storage
        self.core = core
        self._tls = tls
        self._addresses = group.addresses()
        self.listeners: list[ApplyListener] = []
        self._applied = int(core.log.applied)
        self._snapshot_index = int(core.log.snapshot.index)
        #: Entries up to here were in the log at startup: applying them is replay.
        self._replay_upto = int(core.log.last_index)
        self._inbox: deque[Message] = deque()
        self._proposals_in: deque[_Proposal] = deque()
        self._reads_in: deque[_Read] = deque()
        self._calls_in: deque[tuple[Callable[[], Any], _Waiter]] = deque()
        #: Proposals in the log awaiting apply: heap of (index, term, seq) and the waiters.
        self._waiting_heap: list[tuple[int, int, int]] = []
        self._waiting: dict[tuple[int, int, int], _Proposal] = {}
        self._seq = itertools.count()
        #: Reads handed to the core, by context; reads confirmed, waiting for apply.
        self._reads_pending: dict[bytes, _Read] = {}
        self._reads_confirmed: list[_Read] = []
        self._read_ids = itertools.count(1)
        self._snapshot_waiters: list[_Waiter] = []
        self._wake = trio.Event()
        self._running = False
        self._failed: BaseException | None = None
        self._senders: dict[NodeId, PeerSender] = {}
        self._pool: RpcClientPool | None = None
        self._nursery: trio.Nursery | None = None
        self._role = core.role
        self._leader: NodeId | None = core.leader
        self._leader_since: float | None = None
        #: trio time of the tick grid point the core's clock is at, and the time until which
        #: the lease answers reads (``read_barrier``); both kept by the driver.
        self._last_tick_at = 0.0
        self._lease_until = -math.inf
        self._stats = {
            "proposals": 0,
            "failed_commands": 0,
            "readies": 0,
            "received": 0,
            "inbox_dropped": 0,
            "unroutable": 0,
            "read_barriers": 0,
            "lease_reads": 0,
        }

    # ------------------------------------------------------------------ startup
    @classmethod
    def recover(
        cls,
        data_dir: Path,
        *,
        node_id: str,
        group: RaftGroupConfig,
        tls: TlsFiles,
        seed: int | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        read_mode: str = ReadMode.LEASE,
        join: bool = False,
    ) -> RaftNode:
        """Load snapshot, log and hard state from ``data_dir``.  Blocking (worker thread).

        ``read_mode``: ``"lease"`` (reads answered by the leader's lease while it holds one)
        or ``"read_index"`` (a heartbeat round before every batch of reads); the same on every
        member.  Raises ``LogCorrupt``/``CorruptFile``/``SnapshotCorrupt`` when the files are
        damaged, ``ConfigError`` for an unknown read mode.
        """
        group.validate()
        try:
            mode = ReadMode(read_mode)
        except ValueError:
            raise ConfigError(f"unknown Raft read mode {read_mode!r}") from None
        me = NodeId(node_id)
        if me not in group.addresses():
            raise ConfigError(f"metaserver {me!r} is not a member of its Raft group config")
        # A joining node starts in no configuration: it never campaigns, and learns the
        # group's membership from the leader's snapshot once it has been added.
        initial = ConfState() if join else ConfState(frozenset(m.id for m in group.members))
        storage = RaftStorage(data_dir, segment_bytes=segment_bytes)
        rec = storage.recover(initial)
        ns = Namespace()
        if rec.snapshot is not None:
            ns.restore(rec.snapshot.data)
        config = Config(
            id=me,
            election_tick=group.election_tick,
            heartbeat_tick=group.heartbeat_tick,
            read_mode=mode,
        )
        # Election jitter only; a fixed seed makes a node's timeouts reproducible in tests.
        rng = random.Random(seed if seed is not None else random.SystemRandom().getrandbits(64))
        core = RaftCore(
            config,
            rng,
            hard_state=rec.hard_state,
            snapshot=rec.snapshot,
            entries=rec.entries,
            conf_state=initial,
        )
        logger.info(
            "%s recovered: term %d, snapshot index %d, last index %d",
            me,
            core.term,
            core.log.snapshot.index,
            core.log.last_index,
        )
        return cls(
            node_id=node_id,
            group=group,
            tls=tls,
            storage=storage,
            namespace=ns,
            core=core,
        )

    # ------------------------------------------------------------------ queries
    def is_leader(self) -> bool:
        return self._running and self.core.role is Role.LEADER

    def leader_since(self) -> float | None:
        """``trio.current_time()`` when this node last became leader; None unless leading."""
        return self._leader_since if self.is_leader() else None

    def leader_id(self) -> NodeId | None:
        return self.core.leader

    def leader_address(self) -> str | None:
        """Address of the current leader as far as this node knows (None if unknown)."""
        leader = self.core.leader
        return None if leader is None else self.member_address(leader)

    def member_address(self, member: str) -> str | None:
        """The RPC address of ``member``: from the group config, or for a member added
        online from the replicated state (``Namespace.members``)."""
        return self._addresses.get(NodeId(member)) or self.namespace.members.get(member)

    def statistics(self) -> RaftNodeStatistics:
        core = self.core
        sent = sum(s.stats.sent for s in self._senders.values())
        dropped = sum(s.stats.dropped for s in self._senders.values())
        st = self.storage.stats
        return RaftNodeStatistics(
            node_id=self.node_id,
            role=core.role.value,
            term=int(core.term),
            leader=core.leader,
            leader_address=self.leader_address(),
            commit_index=int(core.log.commit),
            applied_index=self._applied,
            snapshot_index=self._snapshot_index,
            last_index=int(core.log.last_index),
            proposals=self._stats["proposals"],
            failed_commands=self._stats["failed_commands"],
            readies=self._stats["readies"],
            batches=st.persisted_readies,
            fsyncs=st.fsyncs,
            snapshots_taken=st.snapshots_taken,
            snapshots_installed=st.snapshots_installed,
            messages_received=self._stats["received"],
            messages_sent=sent,
            messages_dropped=dropped + self._stats["inbox_dropped"] + self._stats["unroutable"],
            read_barriers=self._stats["read_barriers"],
            lease_reads=self._stats["lease_reads"],
        )

    def _not_leader(self) -> NotLeader:
        addr = self.leader_address()
        return NotLeader(
            f"{self.node_id} is not the metadata leader" + (f"; try {addr}" if addr else ""),
            leader=addr,
        )

    def _check_running(self) -> None:
        if self._failed is not None or not self._running:
            raise Unavailable("metadata Raft node is not running")

    # ------------------------------------------------------------------ API
    def add_listener(self, listener: ApplyListener) -> None:
        """``listener(command, result, freed chunks)`` after each successful live apply, on
        every node (leader and followers), in log order.  Must not block or raise."""
        self.listeners.append(listener)

    async def propose(self, command: dict[str, Any]) -> Any:
        """Replicate ``command``; return its result once committed and applied here, or raise
        its FsError.  ``NotLeader`` (``details["leader"]``: the leader's address if known)
        when this node is not the leader or the entry was replaced by another leader's (it
        was not committed: safe to retry elsewhere).  ``Unavailable`` when the node stops or
        the outcome cannot be known.  A cancelled caller's command may still commit."""
        self._check_running()
        if RAFT_KEY in command:
            raise ValueError(f"commands must not use the reserved key {RAFT_KEY!r}")
        if self.core.role is not Role.LEADER:
            raise self._not_leader()
        p = _Proposal(command=command)
        self._proposals_in.append(p)
        self._wake.set()
        return await p.wait()

    async def propose_conf_change(self, change: ConfChange) -> None:
        """Pass a single-server membership change to the core (leader only); returns once it
        is committed and applied here.  A new member's address must be in the group config
        (``extra_addresses``) for messages to reach it."""
        self._check_running()
        if self.core.role is not Role.LEADER:
            raise self._not_leader()
        p = _Proposal(change=change)
        self._proposals_in.append(p)
        self._wake.set()
        await p.wait()

    async def read_barrier(self) -> None:
        """Return once this node (the leader) has applied everything committed before the
        call, and is sure that it still leads: at once while it holds a read lease (and has
        applied all it knows committed), else after a heartbeat round (ReadIndex).
        ``NotLeader`` on a follower or when leadership is lost meanwhile."""
        self._check_running()
        if self.core.role is not Role.LEADER:
            raise self._not_leader()
        if trio.current_time() < self._lease_until and self._applied >= self.core.log.commit:
            self._stats["read_barriers"] += 1
            self._stats["lease_reads"] += 1
            return
        r = _Read(context=b"%s/%d" % (self.node_id.encode(), next(self._read_ids)))
        self._reads_in.append(r)
        self._wake.set()
        await r.wait()
        self._stats["read_barriers"] += 1

    async def transfer_leadership(self, to: str) -> None:
        """Ask the core to hand leadership to voter ``to`` (leader only).  Returns once the
        transfer started; watch ``leader_id()`` for the outcome (abandoned after an election
        timeout).  ``NotLeader`` on a follower, ``ValueError`` for a non-voter."""
        self._check_running()
        await self._call(lambda: self.core.transfer_leadership(NodeId(to)))

    async def take_snapshot(self) -> None:
        """Snapshot the applied state and compact the log now (the driver does it)."""
        self._check_running()
        w = _Waiter()
        self._snapshot_waiters.append(w)
        self._wake.set()
        await w.wait()

    async def _call(self, fn: Callable[[], Any]) -> Any:
        w = _Waiter()
        self._calls_in.append((fn, w))
        self._wake.set()
        return await w.wait()

    # ------------------------------------------------------------------ RPC
    def register(self, dispatcher: Dispatcher) -> None:
        """Add ``raft.message`` (metaserver role only) to ``dispatcher``."""
        dispatcher.register(RAFT_METHOD, self._rpc_message, roles=[CertRole.METASERVER])

    async def _rpc_message(self, peer: Peer, params: dict[str, Any]) -> None:
        """A batch of messages from one peer: ``{"from": id, "messages": [dict, ...]}``.
        Queued for the driver and answered at once (the answer says nothing about them)."""
        frm = params.get("from")
        raw = params.get("messages")
        if not isinstance(frm, str) or not isinstance(raw, list):
            raise BadRequest("raft.message needs 'from' (str) and 'messages' (list)")
        if peer.name != frm:
            raise Unauthorized(f"certificate {peer.name!r} may not send as {frm!r}")
        msgs: list[Message] = []
        for d in raw:
            try:
                m = message_from_dict(d)
            except MessageDecodeError as exc:
                raise BadRequest(f"bad raft message: {exc}") from exc
            if m.frm != frm or m.to != self.node_id:
                raise BadRequest(f"raft message {m.frm}->{m.to} in a batch {frm}->{self.node_id}")
            msgs.append(m)
        if not self._running:
            raise Unavailable("metadata Raft node is not running")
        room = MAX_INBOX - len(self._inbox)
        if room < len(msgs):
            self._stats["inbox_dropped"] += len(msgs) - max(room, 0)
            msgs = msgs[: max(room, 0)]
        self._inbox.extend(msgs)
        self._stats["received"] += len(msgs)
        self._wake.set()

    def _send(self, m: Message) -> None:
        sender = self._senders.get(m.to)
        if sender is None:
            sender = self._start_sender(m.to)
        if sender is None:
            self._stats["unroutable"] += 1
            logger.debug("raft: no address for %s; message dropped", m.to)
            return
        sender.push(m)

    def _start_sender(self, peer: NodeId) -> PeerSender | None:
        address = self.member_address(peer)
        if address is None or self._pool is None or self._nursery is None or peer == self.node_id:
            return None
        sender = PeerSender(
            self.node_id,
            peer,
            address,
            self._pool,
            timeout=self.group.send_timeout,
            max_queued=self.group.max_queued_messages,
            max_batch_bytes=self.group.max_batch_bytes,
        )
        self._senders[peer] = sender
        self._nursery.start_soon(sender.run, name=f"raft-sender-{peer}")
        return sender

    # ------------------------------------------------------------------ driver
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the core until cancelled (then every waiter gets ``Unavailable``)."""
        try:
            async with (
                RpcClientPool(
                    self._tls,
                    name=self.node_id,
                    expect_roles=[CertRole.METASERVER],
                    connect_timeout=self.group.send_timeout,
                ) as pool,
                trio.open_nursery() as nursery,
            ):
                self._pool, self._nursery = pool, nursery
                for member in self.group.members:
                    if member.id != self.node_id:
                        self._start_sender(member.id)
                self._running = True
                await self._drive(task_status)
        except BaseException as exc:
            self._failed = exc
            raise
        finally:
            self._running = False
            self._lease_until = -math.inf
            self._fail_all(Unavailable("metadata Raft node stopped"))
            self._pool = self._nursery = None
            self.storage.close()

    def _fail_all(self, error: Unavailable) -> None:
        waiters: list[_Waiter] = [*self._proposals_in, *self._reads_in]
        waiters += [w for _fn, w in self._calls_in]
        waiters += [*self._waiting.values(), *self._reads_pending.values()]
        waiters += [*self._reads_confirmed, *self._snapshot_waiters]
        for w in waiters:
            if not w.done.is_set():
                w.fail(error)
        self._proposals_in.clear()
        self._reads_in.clear()
        self._calls_in.clear()
        self._waiting.clear()
        self._waiting_heap.clear()
        self._reads_pending.clear()
        self._reads_confirmed.clear()
        self._snapshot_waiters.clear()

    async def _drive(self, task_status: trio.TaskStatus[None]) -> None:
        interval = self.group.tick_interval
        self._last_tick_at = trio.current_time()
        next_tick = self._last_tick_at + interval
        task_status.started()
        core = self.core
        while True:
            with trio.move_on_at(next_tick):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            if now >= next_tick:
                missed = int((now - next_tick) // interval) + 1
                next_tick += missed * interval
                self._last_tick_at = next_tick - interval
                # See the module docstring: a leader never lets its ticks fall behind (after
                # election_tick + 1 of them any lease has run out anyway); others tick once.
                if core.role is Role.LEADER:
                    missed = min(missed, self.group.election_tick + 1)
                else:
                    missed = 1
                for _ in range(missed):
                    core.tick()
            self._feed()
            while core.has_ready():
                rd = core.ready()
                self._update_lease()
                await self._handle_ready(rd)
                core.advance(rd)
            self._update_lease()
            if self._snapshot_waiters or (
                self._applied - self._snapshot_index >= self.group.snapshot_every
            ):
                await self._snapshot()

    def _update_lease(self) -> None:
        """Before the driver awaits anything: until when may ``read_barrier`` trust the
        lease?  Until the grid point at which the core's clock would reach the end of it."""
        left = self.core.lease_remaining()
        self._lease_until = (
            self._last_tick_at + left * self.group.tick_interval if left else -math.inf
        )

    def _feed(self) -> None:
        """Hand everything queued by other tasks to the core (it is idle here)."""
        core = self.core
        while self._inbox:
            m = self._inbox.popleft()
            try:
                core.step(m)
            except ValueError:
                logger.warning("raft: %s refused message %s", self.node_id, m, exc_info=True)
        while self._calls_in:
            fn, w = self._calls_in.popleft()
            try:
                w.resolve(fn())
            except CoreNotLeader:
                w.fail(self._not_leader())
            except (ProposalDropped, ValueError) as exc:
                w.fail(exc)
        while self._proposals_in:
            p = self._proposals_in.popleft()
            try:
                if p.change is not None:
                    term, index = core.propose_conf_change(p.change)
                else:
                    assert p.command is not None
                    term, index = core.propose(p.command)
            except CoreNotLeader:
                p.fail(self._not_leader())
                continue
            except ProposalDropped as exc:
                p.fail(Unavailable(f"proposal dropped: {exc}"))
                continue
            except ValueError as exc:
                p.fail(exc)
                continue
            key = (int(index), int(term), next(self._seq))
            heapq.heappush(self._waiting_heap, key)
            self._waiting[key] = p
            self._stats["proposals"] += 1
        while self._reads_in:
            r = self._reads_in.popleft()
            if core.role is not Role.LEADER:
                r.fail(self._not_leader())
                continue
            core.read_index(r.context)
            self._reads_pending[r.context] = r

    async def _handle_ready(self, rd: Ready) -> None:
        self._stats["readies"] += 1
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        # 1. the leader's appends leave now: the followers write while we do
        for m in rd.early_messages:
            self._send(m)
        # 2. persist (one fsync for everything in this Ready: group commit)
        if rd.must_sync and self.storage.needs_persist(rd):
            try:
                await trio.to_thread.run_sync(self.storage.persist, rd)
            except BaseException:
                # The log's state is unknown after a failed write or fsync; stop.
                logger.critical("%s: Raft log write failed; the node stops", self.node_id)
                raise
        # 3. send the rest (only now: votes and acks promise durable state)
        for m in rd.messages:
            self._send(m)
        # 4. install a leader's snapshot, apply committed entries
        if rd.snapshot is not None:
            self._install(rd.snapshot)
        for e in rd.committed_entries:
            self._apply(e)
        # 5. read states
        for rs in rd.read_states:
            r = self._reads_pending.pop(rs.context, None)
            if r is not None:
                r.index = int(rs.index)
                self._reads_confirmed.append(r)
        self._release_reads()

    def _on_soft_state(self, soft: SoftState) -> None:
        if soft.role is not self._role or soft.leader != self._leader:
            logger.info(
                "raft: %s is %s in term %d (leader %s)",
                self.node_id,
                soft.role.value,
                self.core.term,
                soft.leader,
            )
        if soft.role is not Role.LEADER and self._reads_pending:
            # The core drops unconfirmed reads when leadership changes.
            error = self._not_leader()
            for r in self._reads_pending.values():
                r.fail(error)
            self._reads_pending.clear()
        if soft.role is not Role.LEADER and self._role is Role.LEADER and self._waiting:
            # Proposals of the old term may still commit under the next leader, or vanish:
            # say so now rather than leave the callers waiting for an entry that may never
            # apply here.  A client with a session retries them safely.
            lost = Unavailable(
                f"{self.node_id} lost the leadership; the outcome is unknown", outcome="unknown"
            )
            for p in self._waiting.values():
                p.fail(lost)
            self._waiting.clear()
            self._waiting_heap.clear()
        if soft.role is Role.LEADER and self._role is not Role.LEADER:
            self._leader_since = trio.current_time()
        self._role, self._leader = soft.role, soft.leader

    def _install(self, snap: Snapshot) -> None:
        index = int(snap.meta.index)
        self.namespace.restore(snap.data)
        self.namespace.take_freed_chunks()
        self._applied = max(self._applied, index)
        self._snapshot_index = max(self._snapshot_index, index)
        logger.info("raft: %s installed the leader's snapshot at index %d", self.node_id, index)
        # Proposals covered by the snapshot: their entries are gone, outcome unknown.
        while self._waiting_heap and self._waiting_heap[0][0] <= index:
            key = heapq.heappop(self._waiting_heap)
            p = self._waiting.pop(key)
            p.fail(Unavailable("outcome unknown: replaced by a snapshot", outcome="unknown"))

    def _apply(self, e: Entry) -> None:
        index = int(e.index)
        if index <= self._applied:
            return
        if index != self._applied + 1:
            raise RuntimeError(f"{self.node_id}: applying {index} after {self._applied}")
        mine: _Proposal | None = None
        while self._waiting_heap and self._waiting_heap[0][0] <= index:
            key = heapq.heappop(self._waiting_heap)
            p = self._waiting.pop(key)
            if key[0] == index and key[1] == e.term and mine is None:
                mine = p
            else:
                p.fail(self._not_leader())  # another leader's entry took its place
        result: Any = None
        error: BaseException | None = None
        if e.kind is EntryKind.NORMAL and isinstance(e.data, dict):
            command = e.data
            try:
                result = self.namespace.apply(command)
            except FsError as exc:
                error = exc
                self._stats["failed_commands"] += 1
            else:
                freed = self.namespace.take_freed_chunks()
                if index > self._replay_upto:
                    for listener in self.listeners:
                        listener(command, result, freed)
        self._applied = index
        if mine is not None:
            if error is not None:
                mine.fail(error)
            else:
                mine.resolve(result)

    def _release_reads(self) -> None:
        if not self._reads_confirmed:
            return
        keep: list[_Read] = []
        for r in self._reads_confirmed:
            if r.index <= self._applied:
                r.resolve()
            else:
                keep.append(r)
        self._reads_confirmed = keep

    async def _snapshot(self) -> None:
        index = self._applied
        waiters, self._snapshot_waiters = self._snapshot_waiters, []
        if index > self._snapshot_index:
            # Encoding in a worker thread is safe: only this task mutates the namespace and
            # it waits here (handlers in the trio thread only read).
            state = await trio.to_thread.run_sync(self.namespace.snapshot_state)
            snap = self.core.compact(index, state)
            await trio.to_thread.run_sync(self.storage.save_local_snapshot, snap)
            self._snapshot_index = index
            logger.info("raft: %s snapshot at index %d", self.node_id, index)
        for w in waiters:
            w.resolve()
