"""The core's in-memory view of the Raft log: the newest snapshot's position plus every entry
after it, split into a stable prefix (handed to the caller in a ``Ready`` that was advanced,
hence durable) and an unstable suffix (not yet handed out).

Indexes: entries hold ``snapshot.index + 1 .. last_index``; ``term(i)`` is known for
``snapshot.index <= i <= last_index``.  Invariants: ``snapshot.index <= applied <= commit``,
``commit <= last_index``, and ``stable < unstable_from``.
"""

from __future__ import annotations

from collections.abc import Sequence

from dfs.raft.messages import Entry, EntryKind, Snapshot, SnapshotMeta, entry_size
from dfs.types import LogIndex, Term


class MemoryLog:
    def __init__(
        self, snapshot: SnapshotMeta, entries: Sequence[Entry], commit: int, applied: int
    ) -> None:
        self.snapshot = snapshot
        self._entries: list[Entry] = [e for e in entries if e.index > snapshot.index]
        for n, e in enumerate(self._entries):
            if e.index != snapshot.index + 1 + n:
                raise ValueError(f"entries are not consecutive after {snapshot.index}: {e.index}")
        self.commit = LogIndex(max(snapshot.index, min(commit, self.last_index)))
        self.applied = LogIndex(max(snapshot.index, min(applied, self.commit)))
        #: Every entry <= stable is durable (restart: all entries given are).
        self.stable = self.last_index
        #: First index not yet handed out in a Ready.
        self.unstable_from = LogIndex(self.last_index + 1)
        #: A snapshot received from the leader, to hand out in the next Ready.
        self.pending_snapshot: Snapshot | None = None

    # ------------------------------------------------------------------ queries
    @property
    def first_index(self) -> LogIndex:
        return LogIndex(self.snapshot.index + 1)

    @property
    def last_index(self) -> LogIndex:
        return LogIndex(self.snapshot.index + len(self._entries))

    @property
    def last_term(self) -> Term:
        return self._entries[-1].term if self._entries else self.snapshot.term

    def term(self, index: int) -> Term | None:
        """Term of entry ``index``; None when compacted away or beyond the end."""
        if index == self.snapshot.index:
            return self.snapshot.term
        if self.snapshot.index < index <= self.last_index:
            return self._entries[index - self.snapshot.index - 1].term
        return None

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.snapshot.index - 1]

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up to date as ours."""
        return last_term > self.last_term or (
            last_term == self.last_term and last_index >= self.last_index
        )

    def slice(
        self, lo: int, hi: int, *, max_bytes: int | None = None, max_entries: int | None = None
    ) -> list[Entry]:
        """Entries ``lo <= index < hi`` (lo must be > snapshot index), capped in total size
        (at least one entry is returned if any is in range) and count."""
        if lo <= self.snapshot.index:
            raise ValueError(f"entries from {lo} are compacted (snapshot {self.snapshot.index})")
        hi = min(hi, self.last_index + 1)
        if max_entries is not None:
            hi = min(hi, lo + max_entries)
        out = self._entries[lo - self.snapshot.index - 1 : hi - self.snapshot.index - 1]
        if max_bytes is None:
            return out
        size = 0
        for n, e in enumerate(out):
            size += entry_size(e)
            if size > max_bytes and n > 0:
                return out[:n]
        return out

    def conf_entries(self) -> list[Entry]:
        return [e for e in self._entries if e.kind is EntryKind.CONF]

    def first_index_of_term_at(self, index: int) -> LogIndex:
        """The first index (> snapshot index) of the run of entries sharing ``term(index)``."""
        t = self.term(index)
        i = index
        while i - 1 > self.snapshot.index and self.term(i - 1) == t:
            i -= 1
        return LogIndex(i)

    def last_index_of_term(self, term: int, upto: int) -> LogIndex | None:
        """The largest index ``<= upto`` holding ``term``, None if there is none (or it is
        compacted away).  Terms never decrease along the log, so the scan stops early."""
        i = min(upto, self.last_index)
        while i >= self.snapshot.index:
            t = self.term(i)
            if t is None or t < term:
                return None
            if t == term:
                return LogIndex(i)
            i -= 1
        return None

    def unstable_entries(self) -> list[Entry]:
        return self._entries[self.unstable_from - self.snapshot.index - 1 :]

    # ------------------------------------------------------------------ changes
    def append(self, entries: Sequence[Entry]) -> LogIndex | None:
        """Append ``entries`` (consecutive), truncating any conflicting suffix first.
        Return the truncation point (first index replaced) or None."""
        if not entries:
            return None
        first = entries[0].index
        if first <= self.commit:
            raise AssertionError(f"refusing to overwrite committed entry {first} <= {self.commit}")
        if first > self.last_index + 1:
            raise AssertionError(f"gap: appending {first} after {self.last_index}")
        truncated: LogIndex | None = None
        if first <= self.last_index:
            truncated = first
            del self._entries[first - self.snapshot.index - 1 :]
            self.unstable_from = LogIndex(min(self.unstable_from, first))
            self.stable = LogIndex(min(self.stable, first - 1))
        self._entries.extend(entries)
        return truncated

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, entries: Sequence[Entry]
    ) -> tuple[LogIndex, LogIndex | None] | None:
        """§5.3 AppendEntries receiver: None if the log does not hold ``(prev_index,
        prev_term)``; else append the entries that are new, advance commit, and return
        ``(last new index, truncation point or None)``."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = LogIndex(prev_index + len(entries))
        truncated = None
        for n, e in enumerate(entries):
            if not self.match_term(e.index, e.term):
                truncated = self.append(entries[n:])
                if truncated is None:
                    truncated = LogIndex(0)  # plain append, nothing replaced
                break
        self.commit_to(min(commit, last_new))
        return last_new, (truncated or None)

    def commit_to(self, index: int) -> bool:
        if index > self.commit:
            if index > self.last_index:
                raise AssertionError(f"commit {index} beyond last index {self.last_index}")
            self.commit = LogIndex(index)
            return True
        return False

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot`` (a follower installing the leader's)."""
        self.snapshot = snapshot.meta
        self._entries.clear()
        self.commit = snapshot.meta.index
        self.stable = snapshot.meta.index
        self.unstable_from = LogIndex(snapshot.meta.index + 1)
        self.pending_snapshot = snapshot

    def compact(self, meta: SnapshotMeta) -> None:
        """Drop entries ``<= meta.index`` (the application snapshotted there)."""
        if meta.index > self.applied:
            raise ValueError(f"cannot compact to {meta.index}: applied only {self.applied}")
        del self._entries[: meta.index - self.snapshot.index]
        self.snapshot = meta
