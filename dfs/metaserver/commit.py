"""The committer: the single-node form of the Raft driver.

``propose(command)`` hands a command to the one driver task and waits for its outcome.  The
driver collects every proposal pending at that moment into a batch, appends them to the log as
entries of the current term, fsyncs once in a worker thread (group commit: one fsync for the
whole batch, and proposals arriving meanwhile form the next batch), applies the entries in
index order to the ``Namespace``, then resolves each proposer with its result or ``FsError``.
A command is therefore acknowledged only after its log record is durable.  With one node the
leader is its own majority, so "durable here" is "committed"; a later issue replaces the
"append + fsync" step with "persist, replicate, wait for a majority".

Every ``snapshot_every`` applied entries it writes a snapshot and compacts the log.

Startup (``Committer.recover``): load the newest snapshot, replay every log entry after it
(entries whose command failed originally fail again identically: the state machine is
deterministic), then ``run`` starts a new term (hard state saved before anything is proposed
in it) and commits a no-op as its first entry, as a Raft leader does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from dfs.errors import FsError, Unavailable
from dfs.metaserver.namespace import Namespace
from dfs.metaserver.raftlog import DEFAULT_SEGMENT_BYTES, HardState, LogEntry, RaftLog
from dfs.metaserver.snapshot import Snapshot, SnapshotStore
from dfs.types import ChunkId, LogIndex, NodeId, Term

logger = logging.getLogger(__name__)

#: Called by the driver after each successfully applied live entry, in log order:
#: ``(command, result, chunk ids freed by it)``.  Must not block or raise.  Not called
#: during startup replay (soft state is rebuilt from chunkserver registrations instead).
ApplyListener = Callable[[dict[str, Any], Any, list[ChunkId]], None]

#: Most proposals appended as one batch (bounds the size of one write and one apply run).
MAX_BATCH = 4096


@dataclass(eq=False)
class _Proposal:
    command: dict[str, Any]
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


@dataclass
class CommitterStatistics:
    term: int
    commit_index: int
    applied_index: int
    snapshot_index: int
    proposals: int
    batches: int
    fsyncs: int
    failed_commands: int


class Committer:
    """Owns the namespace's mutations: only the driver task calls ``Namespace.apply``."""

    def __init__(
        self,
        *,
        node_id: str,
        namespace: Namespace,
        log: RaftLog,
        snapshots: SnapshotStore,
        snapshot_every: int,
        snapshot_index: int,
    ) -> None:
        """Use ``Committer.recover``; ``namespace`` must already reflect every log entry."""
        self.node_id = NodeId(node_id)
        self.namespace = namespace
        self.log = log
        self.snapshots = snapshots
        self.snapshot_every = snapshot_every
        self.snapshot_index = snapshot_index
        self.applied_index = int(log.last_index)
        self.commit_index = self.applied_index
        self.term = Term(log.load_hard_state().term)
        self.listeners: list[ApplyListener] = []
        self._pending: list[_Proposal] = []
        self._wake = trio.Event()
        self._running = False
        self._failed: BaseException | None = None
        self._proposals = 0
        self._batches = 0
        self._failed_commands = 0

    # ------------------------------------------------------------------ startup
    @classmethod
    def recover(
        cls,
        data_dir: Path,
        *,
        node_id: str,
        snapshot_every: int,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> Committer:
        """Load the newest snapshot and replay the log after it.  Blocking (worker thread).

        Raises ``LogCorrupt``/``CorruptFile``/``SnapshotCorrupt`` when the files are damaged.
        """
        snapshots = SnapshotStore(data_dir / "snapshots")
        snap = snapshots.load_newest()
        ns = Namespace()
        snap_index = snap_term = 0
        if snap is not None:
            ns.restore(snap.state)
            snap_index, snap_term = snap.index, snap.term
        log = RaftLog.open(
            data_dir / "log",
            snapshot_index=snap_index,
            snapshot_term=snap_term,
            segment_bytes=segment_bytes,
        )
        replayed = 0
        for entry in log.entries(snap_index + 1):
            # A command that failed when first applied fails the same way again.
            with contextlib.suppress(FsError):
                ns.apply(entry.command)
            replayed += 1
        ns.take_freed_chunks()
        logger.info(
            "recovered: snapshot index %d, replayed %d entries, last index %d",
            snap_index,
            replayed,
            log.last_index,
        )
        return cls(
            node_id=node_id,
            namespace=ns,
            log=log,
            snapshots=snapshots,
            snapshot_every=snapshot_every,
            snapshot_index=snap_index,
        )

    # ------------------------------------------------------------------ API
    def add_listener(self, listener: ApplyListener) -> None:
        self.listeners.append(listener)

    async def propose(self, command: dict[str, Any]) -> Any:
        """Commit ``command`` and return its result; raise its FsError if it failed.

        The command is durable in the log before this returns.  If the caller is cancelled
        after proposing, the command may still be committed and applied.
        """
        if self._failed is not None or not self._running:
            raise Unavailable("metadata log is not running")
        proposal = _Proposal(command)
        self._pending.append(proposal)
        self._wake.set()
        await proposal.done.wait()
        if proposal.error is not None:
            raise proposal.error
        return proposal.result

    def statistics(self) -> CommitterStatistics:
        return CommitterStatistics(
            term=self.term,
            commit_index=self.commit_index,
            applied_index=self.applied_index,
            snapshot_index=self.snapshot_index,
            proposals=self._proposals,
            batches=self._batches,
            fsyncs=self.log.statistics()["fsyncs"],
            failed_commands=self._failed_commands,
        )

    # ------------------------------------------------------------------ driver
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The driver task: become leader of a new term, then commit batches until cancelled."""
        new_term = Term(self.term + 1)
        await trio.to_thread.run_sync(self.log.save_hard_state, HardState(new_term, self.node_id))
        self.term = new_term
        logger.info("leader of term %d (single node), last index %d", new_term, self.log.last_index)
        self._running = True
        # Raft §8: a new leader commits an entry of its own term first.
        self._pending.insert(0, _Proposal({"op": "noop"}))
        self._wake.set()
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._pending:
                    batch = self._pending[:MAX_BATCH]
                    del self._pending[:MAX_BATCH]
                    await self._commit(batch)
                    if self.applied_index - self.snapshot_index >= self.snapshot_every:
                        await self.take_snapshot()
        except BaseException as exc:
            self._failed = exc
            for p in self._pending:
                p.error = Unavailable("metadata log stopped")
                p.done.set()
            self._pending.clear()
            raise
        finally:
            self._running = False
            self.log.close()

    async def _commit(self, batch: list[_Proposal]) -> None:
        first = self.log.last_index + 1
        entries = [LogEntry(self.term, LogIndex(first + i), p.command) for i, p in enumerate(batch)]
        try:
            await trio.to_thread.run_sync(self._persist, entries)
        except BaseException:
            # The log's state is unknown after a failed write or fsync (fsync errors are not
            # retryable); stop rather than acknowledge anything more.
            for p in batch:
                p.error = Unavailable("metadata log write failed")
                p.done.set()
            logger.critical("metadata log write failed; the committer stops", exc_info=True)
            raise
        self._batches += 1
        self._proposals += len(batch)
        self.commit_index = entries[-1].index
        for p, entry in zip(batch, entries, strict=True):
            try:
                p.result = self.namespace.apply(entry.command)
            except FsError as exc:
                p.error = exc
                self._failed_commands += 1
            else:
                freed = self.namespace.take_freed_chunks()
                for listener in self.listeners:
                    listener(entry.command, p.result, freed)
            self.applied_index = entry.index
            p.done.set()

    def _persist(self, entries: list[LogEntry]) -> None:
        self.log.append(entries)
        self.log.sync()

    async def take_snapshot(self) -> None:
        """Snapshot the applied state and compact the log up to it.

        Encoding runs in a worker thread; that is safe because only this driver task mutates
        the namespace and it is waiting here (handlers in the trio thread only read).
        """
        index = self.applied_index
        term = self.log.term_at(index)

        def work() -> None:
            state = self.namespace.snapshot_state()
            self.snapshots.save(Snapshot(index, term, state))
            self.log.compact(index, term)

        await trio.to_thread.run_sync(work)
        self.snapshot_index = index
