"""The durable operation log, which is the Raft log: entries ``(term, index, command)``.

On disk: a directory of segment files ``<first index, 20 digits>.log``, each a sequence of
records ``[length u32 BE][xxh3-64 u64 BE of length bytes + payload][payload]`` where the
payload is msgpack ``[term, index, command]``.  Indexes are consecutive across segments and
terms never decrease.  The Raft hard state (current term, voted_for) lives in its own small
atomically replaced file ``hardstate``.

Durability contract: ``append`` writes records (page cache only); ``sync`` fsyncs, and covers
every record appended before it (group commit: the committer appends a whole batch of
proposals, then syncs once).  An entry may be acknowledged only after a ``sync`` that
followed its ``append``.

Recovery (``RaftLog.open``): a crash can leave the end of the newest segment torn (a record
cut short, garbage, or zeros).  Such an invalid record is truncated away with one warning, but
only when no valid record follows it: an invalid record with valid data after it is corruption
in the middle of the log, and ``LogCorrupt`` stops startup (silently dropping acknowledged
entries would break the guarantee).  The same holds for any invalid record in an older segment.

Every method here blocks on disk I/O: trio code calls them through ``trio.to_thread.run_sync``.
One caller at a time (the committer's driver task serialises access).
"""

from __future__ import annotations

import logging
import os
import struct
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import xxhash

from dfs.metaserver.durable import CorruptFile, atomic_write, fsync_dir, seal, unseal, write_all
from dfs.types import LogIndex, NodeId, Term

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">IQ")
_LEN = struct.Struct(">I")
#: Largest payload accepted; anything bigger is a corrupt length field.
MAX_RECORD = 64 * 1024 * 1024
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
_SUFFIX = ".log"
_HARDSTATE = "hardstate"
_HARDSTATE_MAGIC = b"DFHS"
#: msgpack fixarray of 3 elements: the first byte of every valid payload.
_PAYLOAD_START = 0x93


class LogCorrupt(Exception):
    """The log on disk is damaged beyond a torn tail; the message says where."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    term: Term
    index: LogIndex
    command: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HardState:
    """Raft's persistent per-node state besides the log."""

    term: Term = Term(0)  # noqa: RUF009 - NewType call is free
    voted_for: NodeId | None = None


@dataclass
class _Segment:
    #: Index of the first record still held (the file name's index until a compaction
    #: forgets the records before a snapshot, see ``RaftLog.compact``).
    first: int
    path: Path
    #: Byte offset of each record held; record i holds index ``first + i``.  Typed arrays (8
    #: bytes an entry), not lists of ints (about 36): a segment holds ~600,000 records.
    offsets: array[int] = field(default_factory=lambda: array("q"))
    terms: array[int] = field(default_factory=lambda: array("q"))
    size: int = 0

    @property
    def last(self) -> int:
        return self.first + len(self.offsets) - 1


def encode_record(entry: LogEntry) -> bytes:
    payload = msgpack.packb([entry.term, entry.index, entry.command], use_bin_type=True)
    length = _LEN.pack(len(payload))
    return _HEADER.pack(len(payload), xxhash.xxh3_64_intdigest(length + payload)) + payload


def _parse(data: bytes, off: int) -> tuple[int, int] | None:
    """``(start, end)`` of the payload of the record at ``off`` if it is intact, else None."""
    if off + _HEADER.size > len(data):
        return None
    length, digest = _HEADER.unpack_from(data, off)
    start = off + _HEADER.size
    end = start + length
    if not 3 <= length <= MAX_RECORD or end > len(data):
        return None
    if xxhash.xxh3_64_intdigest(data[off : off + _LEN.size] + data[start:end]) != digest:
        return None
    return start, end


def _valid_record_after(data: bytes, off: int) -> bool:
    """Whether any intact record starts somewhere after ``off`` (used to tell a torn tail
    from corruption in the middle).  Candidate payloads must start with 0x93, which keeps the
    scan fast over garbage or zeros."""
    pos = off + 1
    while True:
        hit = data.find(bytes([_PAYLOAD_START]), pos + _HEADER.size)
        if hit < 0:
            return False
        cand = hit - _HEADER.size
        if _parse(data, cand) is not None:
            return True
        pos = cand + 1


def _decode(payload: bytes, where: str) -> LogEntry:
    try:
        term, index, command = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise LogCorrupt(f"{where}: checksummed record does not decode: {exc!r}") from exc
    if not isinstance(term, int) or not isinstance(index, int) or not isinstance(command, dict):
        raise LogCorrupt(f"{where}: record has the wrong shape")
    return LogEntry(Term(term), LogIndex(index), command)


class RaftLog:
    """Segmented append-only log; see the module docstring for the contract."""

    def __init__(self, directory: Path, segment_bytes: int) -> None:
        """Use ``RaftLog.open``."""
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._segments: list[_Segment] = []
        self._fd: int | None = None
        self._dir_dirty = False
        #: Index and term of the entry just before the first one held (the snapshot's).
        self.prev_index = LogIndex(0)
        self.prev_term = Term(0)
        self._stats = {"fsyncs": 0, "appended": 0, "records_bytes": 0}

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        snapshot_index: int = 0,
        snapshot_term: int = 0,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> RaftLog:
        """Open (creating if needed) the log in ``directory`` and recover its torn tail.

        ``snapshot_index``/``snapshot_term`` describe the newest snapshot: when the log holds
        nothing after it, the next index is ``snapshot_index + 1``.  Raise LogCorrupt on
        corruption or a gap between the snapshot and the first entry held.
        """
        directory.mkdir(parents=True, exist_ok=True)
        log = cls(directory, segment_bytes)
        files = sorted(p for p in directory.iterdir() if p.name.endswith(_SUFFIX))
        for n, path in enumerate(files):
            try:
                first = int(path.name[: -len(_SUFFIX)])
            except ValueError:
                raise LogCorrupt(f"{path}: not a log segment name") from None
            if log._segments and not log._segments[-1].offsets:
                raise LogCorrupt(f"{log._segments[-1].path}: empty segment before {path}")
            seg = log._scan(path, first, is_last=n == len(files) - 1)
            if log._segments and seg.first != log._segments[-1].last + 1:
                raise LogCorrupt(f"{path}: starts at {seg.first}, expected {log.last_index + 1}")
            if not seg.offsets and n == len(files) - 1 and log._segments:
                path.unlink()  # created just before a crash, never written
                continue
            log._segments.append(seg)
        if log._segments and not log._segments[0].offsets:
            # Only an empty segment: its name still tells where the log starts.
            log._segments[0].path.unlink()
            log._segments.clear()
        if log._segments:
            first = log._segments[0].first
            if first > snapshot_index + 1:
                raise LogCorrupt(
                    f"{directory}: log starts at {first} but the snapshot ends at {snapshot_index}"
                )
            log.prev_index = LogIndex(first - 1)
            log.prev_term = Term(snapshot_term if first - 1 == snapshot_index else 0)
            if snapshot_index >= log.first_index:
                log.compact(snapshot_index, snapshot_term)
        else:
            log.prev_index = LogIndex(snapshot_index)
            log.prev_term = Term(snapshot_term)
        return log

    def _scan(self, path: Path, first: int, *, is_last: bool) -> _Segment:
        data = path.read_bytes()
        seg = _Segment(first, path)
        expect = first
        prev_term = self.last_term if self._segments else 0
        off = 0
        while off < len(data):
            rec = _parse(data, off)
            if rec is None:
                if is_last and not _valid_record_after(data, off):
                    logger.warning(
                        "log %s: dropping a torn tail of %d bytes at offset %d (crash mid-write)",
                        path,
                        len(data) - off,
                        off,
                    )
                    with open(path, "r+b") as f:
                        f.truncate(off)
                        os.fsync(f.fileno())
                    data = data[:off]
                    break
                raise LogCorrupt(
                    f"{path}: corrupt record at offset {off} followed by valid records; "
                    "refusing to start (restore this metaserver from a peer or a backup)"
                )
            start, end = rec
            entry = _decode(data[start:end], f"{path} offset {off}")
            if entry.index != expect or entry.term < prev_term:
                raise LogCorrupt(
                    f"{path} offset {off}: entry ({entry.term}, {entry.index}) after "
                    f"index {expect - 1} term {prev_term}"
                )
            seg.offsets.append(off)
            seg.terms.append(entry.term)
            prev_term = entry.term
            expect += 1
            off = end
        seg.size = len(data)
        return seg

    # ---------------------------------------------------------------- queries
    @property
    def first_index(self) -> LogIndex:
        """Index of the first entry held (``last_index + 1`` when empty)."""
        return LogIndex(self.prev_index + 1)

    @property
    def last_index(self) -> LogIndex:
        return LogIndex(self._segments[-1].last) if self._segments else self.prev_index

    @property
    def last_term(self) -> Term:
        return Term(self._segments[-1].terms[-1]) if self._segments else self.prev_term

    def term_at(self, index: int) -> Term:
        """Term of entry ``index`` (``prev_index`` allowed); KeyError if not held."""
        if index == self.prev_index:
            return self.prev_term
        seg, i = self._locate(index)
        return Term(seg.terms[i])

    def _locate(self, index: int) -> tuple[_Segment, int]:
        if not self.first_index <= index <= self.last_index:
            raise KeyError(index)
        for seg in reversed(self._segments):
            if index >= seg.first:
                return seg, index - seg.first
        raise KeyError(index)

    def entries(self, start: int, stop: int | None = None) -> Iterator[LogEntry]:
        """Entries with ``start <= index < stop`` (to the end when ``stop`` is None), from disk."""
        stop = self.last_index + 1 if stop is None else min(stop, self.last_index + 1)
        start = max(start, self.first_index)
        for seg in self._segments:
            if seg.last < start or seg.first >= stop:
                continue
            data = seg.path.read_bytes()
            for i in range(
                max(start, seg.first) - seg.first, min(stop - 1, seg.last) - seg.first + 1
            ):
                rec = _parse(data, seg.offsets[i])
                if rec is None:
                    raise LogCorrupt(f"{seg.path}: record {seg.first + i} changed on disk")
                yield _decode(data[rec[0] : rec[1]], f"{seg.path} record {seg.first + i}")

    def statistics(self) -> dict[str, int]:
        return {
            **self._stats,
            "segments": len(self._segments),
            "first_index": self.first_index,
            "last_index": self.last_index,
        }

    # ---------------------------------------------------------------- writing
    def append(self, entries: Sequence[LogEntry]) -> None:
        """Write ``entries`` (consecutive, after ``last_index``) to the page cache."""
        if not entries:
            return
        expect, term = self.last_index + 1, self.last_term
        for e in entries:
            if e.index != expect or e.term < term:
                raise ValueError(f"entry ({e.term}, {e.index}) cannot follow {expect - 1}")
            expect, term = e.index + 1, e.term
        seg = self._active_segment(entries[0].index)
        chunks: list[bytes] = []
        off = seg.size
        for e in entries:
            rec = encode_record(e)
            seg.offsets.append(off)
            seg.terms.append(e.term)
            chunks.append(rec)
            off += len(rec)
        buf = b"".join(chunks)
        assert self._fd is not None
        write_all(self._fd, buf)
        seg.size = off
        self._stats["appended"] += len(entries)
        self._stats["records_bytes"] += len(buf)

    def _active_segment(self, next_index: int) -> _Segment:
        if self._segments and self._fd is not None:
            seg = self._segments[-1]
            if seg.size < self.segment_bytes:
                return seg
            # Full: make it durable now (a later sync only covers the new segment), move on.
            os.fsync(self._fd)
            self._stats["fsyncs"] += 1
            os.close(self._fd)
            self._fd = None
        elif self._segments:
            # Reopened after a restart: keep appending to the newest segment if it has room.
            seg = self._segments[-1]
            if seg.size < self.segment_bytes:
                self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
                return seg
        path = self.directory / f"{next_index:020d}{_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        self._dir_dirty = True
        seg = _Segment(next_index, path)
        self._segments.append(seg)
        return seg

    def sync(self) -> None:
        """fsync: every record appended so far is durable when this returns."""
        if self._fd is not None:
            os.fsync(self._fd)
            self._stats["fsyncs"] += 1
        if self._dir_dirty:
            fsync_dir(self.directory)
            self._dir_dirty = False

    def truncate_suffix(self, index: int) -> None:
        """Drop entries ``>= index`` (Raft: a follower's conflicting entries).  Durable."""
        if index > self.last_index:
            return
        if index <= self.prev_index:
            raise ValueError(
                f"cannot truncate at {index}: entries up to {self.prev_index} are compacted"
            )
        self._close_fd()
        while self._segments and self._segments[-1].first >= index:
            self._segments.pop().path.unlink()
        if self._segments:
            seg = self._segments[-1]
            keep = index - seg.first
            seg.size = seg.offsets[keep]
            del seg.offsets[keep:]
            del seg.terms[keep:]
            with open(seg.path, "r+b") as f:
                f.truncate(seg.size)
                os.fsync(f.fileno())
        fsync_dir(self.directory)

    def compact(self, upto_index: int, upto_term: int) -> None:
        """Forget the entries ``<= upto_index`` (covered by a snapshot of that index and term).

        Segments holding only such entries are deleted.  The segment holding ``upto_index + 1``
        stays on disk entire, but forgets where its earlier records are, so that the memory
        of the index follows the entries since the snapshot, not the size of a segment (the
        records before it are skipped again when the log is reopened with the snapshot).
        """
        if upto_index >= self.last_index:
            self._reset(upto_index, upto_term)
            return
        if upto_index < self.first_index:
            return
        dropped = False
        while self._segments[0].last <= upto_index:  # the last segment holds last_index
            self._segments.pop(0).path.unlink()
            dropped = True
        seg = self._segments[0]
        forget = upto_index + 1 - seg.first
        del seg.offsets[:forget]
        del seg.terms[:forget]
        seg.first += forget
        self.prev_index, self.prev_term = LogIndex(upto_index), Term(upto_term)
        if dropped:
            fsync_dir(self.directory)

    def _reset(self, index: int, term: int) -> None:
        """Drop every segment; the log continues after ``(index, term)``."""
        self._close_fd()
        for seg in self._segments:
            seg.path.unlink()
        self._segments.clear()
        self.prev_index, self.prev_term = LogIndex(index), Term(term)
        fsync_dir(self.directory)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._close_fd()

    # ---------------------------------------------------------------- hard state
    def load_hard_state(self) -> HardState:
        path = self.directory / _HARDSTATE
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return HardState()
        try:
            term, voted_for = msgpack.unpackb(unseal(_HARDSTATE_MAGIC, blob, path), raw=False)
        except (CorruptFile, ValueError, TypeError) as exc:
            raise LogCorrupt(f"{path}: unreadable Raft hard state: {exc}") from exc
        return HardState(Term(term), NodeId(voted_for) if voted_for is not None else None)

    def save_hard_state(self, state: HardState) -> None:
        payload = msgpack.packb([state.term, state.voted_for], use_bin_type=True)
        atomic_write(self.directory / _HARDSTATE, seal(_HARDSTATE_MAGIC, payload))
        self._stats["fsyncs"] += 1
