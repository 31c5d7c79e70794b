"""Durable state of one Raft node on top of ``RaftLog`` and ``SnapshotStore``.

This module maps the pure core's types (``dfs.raft``) to the metaserver's files and back, so
that the driver (``dfs.metaserver.raftnode``) only moves data:

* **Log entries.**  A NORMAL entry's command dict is stored as is, so the log stays readable by
  the single-node ``Committer`` and a data directory written by the ``Committer`` opens here
  unchanged.  The core's own entries carry the reserved key ``"_raft"`` and ``"op": "noop"``
  (a reader that does not know them applies a no-op): ``{"op": "noop", "_raft": "noop"}``,
  ``{"op": "noop", "_raft": "conf", "change": ConfChange.to_dict()}`` and, for a NORMAL entry
  whose data is bytes, ``{"op": "noop", "_raft": "bytes", "data": b}``.  Application commands
  must therefore not use the key ``"_raft"``.
* **Snapshots.**  ``SnapshotStore`` keeps ``(index, term, state)``; here ``state`` is the
  envelope ``msgpack {"raft": 1, "conf": ConfState.to_dict(), "namespace": bytes}`` so the
  membership as of the snapshot survives a restart in the same atomically written file.  A
  bare namespace state (written by the ``Committer``) is read with the initial membership.
  The core's ``Snapshot.data`` (what a leader ships to followers) is the namespace state only.
* **Hard state.**  Term and vote go to ``RaftLog``'s hard state file, written only when one
  of them changed (each write is an fsync).  The commit index is not persisted (optional for
  Raft safety): a restarted node restores its snapshot and re-applies its log entries once a
  leader tells it what is committed.

Every method that touches files blocks: call it from a worker thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from dfs.metaserver.durable import CorruptFile
from dfs.metaserver.raftlog import DEFAULT_SEGMENT_BYTES, LogEntry, RaftLog
from dfs.metaserver.raftlog import HardState as LogHardState
from dfs.metaserver.snapshot import Snapshot as StoredSnapshot
from dfs.metaserver.snapshot import SnapshotStore
from dfs.raft import ConfState, Entry, EntryKind, HardState, Ready, Snapshot, SnapshotMeta
from dfs.types import LogIndex, Term

logger = logging.getLogger(__name__)

#: Reserved command key marking entries that belong to Raft, not to the namespace.
RAFT_KEY = "_raft"
_ENVELOPE_VERSION = 1


def entry_to_record(e: Entry) -> LogEntry:
    """The core's entry as a ``RaftLog`` record (see the module docstring)."""
    if e.kind is EntryKind.NORMAL:
        if isinstance(e.data, dict):
            return LogEntry(e.term, e.index, e.data)
        return LogEntry(e.term, e.index, {"op": "noop", RAFT_KEY: "bytes", "data": e.data})
    if e.kind is EntryKind.NOOP:
        return LogEntry(e.term, e.index, {"op": "noop", RAFT_KEY: "noop"})
    return LogEntry(e.term, e.index, {"op": "noop", RAFT_KEY: "conf", "change": e.data})


def record_to_entry(r: LogEntry) -> Entry:
    """Inverse of ``entry_to_record``; a record without ``"_raft"`` is a NORMAL command."""
    tag = r.command.get(RAFT_KEY)
    if tag is None:
        return Entry(r.term, r.index, EntryKind.NORMAL, r.command)
    if tag == "noop":
        return Entry(r.term, r.index, EntryKind.NOOP, b"")
    if tag == "conf":
        return Entry(r.term, r.index, EntryKind.CONF, dict(r.command["change"]))
    if tag == "bytes":
        return Entry(r.term, r.index, EntryKind.NORMAL, bytes(r.command["data"]))
    raise CorruptFile(f"log entry {r.index}: unknown raft tag {tag!r}")


def encode_snapshot_state(conf: ConfState, namespace_state: bytes) -> bytes:
    payload: bytes = msgpack.packb(
        {"raft": _ENVELOPE_VERSION, "conf": conf.to_dict(), "namespace": namespace_state},
        use_bin_type=True,
    )
    return payload


def decode_snapshot_state(state: bytes, initial: ConfState) -> tuple[ConfState, bytes]:
    """``(membership, namespace state)`` of a stored snapshot (legacy: bare namespace)."""
    try:
        data = msgpack.unpackb(state, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptFile(f"snapshot state does not decode: {exc!r}") from exc
    if isinstance(data, dict) and "raft" in data:
        if data["raft"] != _ENVELOPE_VERSION:
            raise CorruptFile(f"unknown raft snapshot envelope {data['raft']!r}")
        try:
            return ConfState.from_dict(data["conf"]), bytes(data["namespace"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFile(f"malformed raft snapshot envelope: {exc!r}") from exc
    return initial, state


@dataclass
class Recovered:
    """Everything a node needs to rebuild its core and state machine at start."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]


@dataclass
class PersistStats:
    fsyncs: int = 0
    persisted_readies: int = 0
    entries_written: int = 0
    truncations: int = 0
    snapshots_installed: int = 0
    snapshots_taken: int = 0


class RaftStorage:
    """The node's log, hard state and snapshots.  One caller at a time (the driver)."""

    def __init__(self, data_dir: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.data_dir = data_dir
        self._segment_bytes = segment_bytes
        self.snapshots = SnapshotStore(data_dir / "snapshots")
        self.log: RaftLog | None = None
        self._saved = LogHardState()
        self.stats = PersistStats()

    def _require_log(self) -> RaftLog:
        if self.log is None:
            raise RuntimeError("RaftStorage.recover() was not called")
        return self.log

    def recover(self, initial: ConfState) -> Recovered:
        """Open the files: the newest snapshot, the log after it, the hard state."""
        stored = self.snapshots.load_newest()
        snapshot: Snapshot | None = None
        snap_index = snap_term = 0
        if stored is not None:
            conf, ns_state = decode_snapshot_state(stored.state, initial)
            snap_index, snap_term = stored.index, stored.term
            meta = SnapshotMeta(LogIndex(snap_index), Term(snap_term), conf)
            snapshot = Snapshot(meta, ns_state)
        self.log = RaftLog.open(
            self.data_dir / "log",
            snapshot_index=snap_index,
            snapshot_term=snap_term,
            segment_bytes=self._segment_bytes,
        )
        self._saved = self.log.load_hard_state()
        entries = [record_to_entry(r) for r in self.log.entries(snap_index + 1)]
        hs = HardState(self._saved.term, self._saved.voted_for, LogIndex(0))
        return Recovered(hs, snapshot, entries)

    @property
    def last_index(self) -> int:
        return int(self._require_log().last_index)

    def needs_persist(self, rd: Ready) -> bool:
        """Whether ``rd`` has anything for the disk (a Ready that only moves the commit index
        has not: the commit index is not persisted)."""
        hs = rd.hard_state
        return (
            rd.snapshot is not None
            or bool(rd.entries)
            or (hs is not None and (hs.term, hs.vote) != (self._saved.term, self._saved.voted_for))
        )

    def persist(self, rd: Ready) -> None:
        """Step 1 of a Ready: snapshot, entries (truncating a conflicting suffix), hard
        state, then one fsync covering all of it."""
        log = self._require_log()
        synced = False
        if rd.snapshot is not None:
            self._install_snapshot(log, rd.snapshot)
        if rd.entries:
            first = rd.entries[0].index
            if first <= log.last_index:
                log.truncate_suffix(first)  # durable on return
                self.stats.truncations += 1
            log.append([entry_to_record(e) for e in rd.entries])
            log.sync()
            self.stats.fsyncs += 1
            self.stats.entries_written += len(rd.entries)
            synced = True
        hs = rd.hard_state
        if hs is not None and (hs.term, hs.vote) != (self._saved.term, self._saved.voted_for):
            self._saved = LogHardState(hs.term, hs.vote)
            log.save_hard_state(self._saved)  # atomic write, fsynced
            self.stats.fsyncs += 1
            synced = True
        if synced or rd.snapshot is not None:
            self.stats.persisted_readies += 1

    def _install_snapshot(self, log: RaftLog, snap: Snapshot) -> None:
        meta = snap.meta
        self.snapshots.save(
            StoredSnapshot(meta.index, meta.term, encode_snapshot_state(meta.conf_state, snap.data))
        )
        # The core discards its whole log for a leader's snapshot; so does the disk.
        if log.last_index > meta.index and log.first_index <= log.last_index:
            log.truncate_suffix(log.first_index)
        log.compact(meta.index, meta.term)
        self.stats.snapshots_installed += 1
        self.stats.fsyncs += 1

    def save_local_snapshot(self, snap: Snapshot) -> None:
        """A snapshot this node took of its own applied state: save it, then drop the log
        segments it covers."""
        log = self._require_log()
        meta = snap.meta
        self.snapshots.save(
            StoredSnapshot(meta.index, meta.term, encode_snapshot_state(meta.conf_state, snap.data))
        )
        log.compact(meta.index, meta.term)
        self.stats.snapshots_taken += 1
        self.stats.fsyncs += 1

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def log_statistics(self) -> dict[str, Any]:
        return self._require_log().statistics() if self.log is not None else {}
