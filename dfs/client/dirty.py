"""Dirty-data buffer of one file: written bytes that have not reached the chunkservers yet."""

from __future__ import annotations

import bisect
from collections.abc import Iterator


class DirtyBuffer:
    """Non-overlapping, sorted extents of unflushed data.

    Invariant: ``self._starts`` is sorted, extents never overlap or touch (touching extents are
    merged), and ``nbytes`` is the sum of their lengths.  A newer write always wins over older
    bytes at the same offsets.
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._data: list[bytearray] = []
        self.nbytes = 0

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __len__(self) -> int:
        return len(self._starts)

    def end(self) -> int:
        """One past the last dirty byte (0 when empty)."""
        if not self._starts:
            return 0
        return self._starts[-1] + len(self._data[-1])

    def add(self, offset: int, data: bytes) -> None:
        """Record ``data`` at ``offset``, overwriting older dirty bytes it overlaps."""
        if not data:
            return
        end = offset + len(data)
        # Fast path: sequential append to the last extent (the common case for cp, tar, dd).
        if self._starts and offset == self.end():
            self._data[-1] += data
            self.nbytes += len(data)
            return
        # Extents that overlap or touch [offset, end).
        i = bisect.bisect_left(self._starts, offset)
        if i > 0 and self._starts[i - 1] + len(self._data[i - 1]) >= offset:
            i -= 1
        j = i
        while j < len(self._starts) and self._starts[j] <= end:
            j += 1
        if i == j:
            self._starts.insert(i, offset)
            self._data.insert(i, bytearray(data))
            self.nbytes += len(data)
            return
        new_start = min(offset, self._starts[i])
        new_end = max(end, self._starts[j - 1] + len(self._data[j - 1]))
        merged = bytearray(new_end - new_start)
        for k in range(i, j):
            s = self._starts[k] - new_start
            merged[s : s + len(self._data[k])] = self._data[k]
            self.nbytes -= len(self._data[k])
        merged[offset - new_start : end - new_start] = data
        self._starts[i:j] = [new_start]
        self._data[i:j] = [merged]
        self.nbytes += len(merged)

    def take(self) -> list[tuple[int, bytearray]]:
        """Remove and return every extent, in offset order."""
        out = list(zip(self._starts, self._data, strict=True))
        self._starts, self._data, self.nbytes = [], [], 0
        return out

    def restore_under(self, extents: list[tuple[int, bytearray]]) -> None:
        """Put back extents that failed to flush, beneath any newer writes made meanwhile."""
        newer = self.take()
        for off, data in extents:
            self.add(off, bytes(data))
        for off, data in newer:
            self.add(off, bytes(data))

    def truncate(self, size: int) -> None:
        """Drop dirty bytes at or beyond ``size``."""
        keep = self.take()
        for off, data in keep:
            if off < size:
                self.add(off, bytes(data[: size - off]))

    def __iter__(self) -> Iterator[tuple[int, bytearray]]:
        return iter(zip(self._starts, self._data, strict=True))
