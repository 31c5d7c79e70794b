"""A small LRU cache of open file descriptors (data file + sidecar) of recently used chunks.

Thread-safe.  A handle is pinned while in use: eviction of a pinned handle only marks it, and
the last ``release`` closes its descriptors, so a chunk evicted by another thread's open never
loses its fds in the middle of an operation.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable


class ChunkFiles:
    """The two open descriptors of one chunk."""

    __slots__ = ("_evicted", "_users", "data_fd", "meta_fd")

    def __init__(self, data_fd: int, meta_fd: int) -> None:
        self.data_fd = data_fd
        self.meta_fd = meta_fd
        self._users = 0
        self._evicted = False

    def _close(self) -> None:
        for fd in (self.data_fd, self.meta_fd):
            # Nothing useful to do on failure: the fd is gone either way.
            with contextlib.suppress(OSError):
                os.close(fd)


class FdCache:
    """At most ``size`` idle chunks keep their descriptors open."""

    def __init__(self, size: int = 64) -> None:
        if size < 1:
            raise ValueError("fd cache size must be >= 1")
        self._size = size
        self._mu = threading.Lock()
        self._entries: OrderedDict[int, ChunkFiles] = OrderedDict()

    def acquire(self, chunk_id: int, opener: Callable[[], ChunkFiles]) -> ChunkFiles:
        """Pin the chunk's handle, opening it with ``opener`` on a miss.

        The caller must hold the chunk's lock (so two threads never open the same chunk at once)
        and must call ``release`` when done.
        """
        with self._mu:
            files = self._entries.get(chunk_id)
            if files is not None:
                self._entries.move_to_end(chunk_id)
                files._users += 1
                return files
        files = opener()  # outside the mutex: opening may block on the disk
        evicted: list[ChunkFiles] = []
        with self._mu:
            files._users = 1
            self._entries[chunk_id] = files
            while len(self._entries) > self._size:
                _, old = self._entries.popitem(last=False)
                old._evicted = True
                if old._users == 0:
                    evicted.append(old)
        for old in evicted:
            old._close()
        return files

    def acquire_cached(self, chunk_id: int) -> ChunkFiles | None:
        """Pin the chunk's handle if it is open already (never opens); ``None`` otherwise."""
        with self._mu:
            files = self._entries.get(chunk_id)
            if files is None:
                return None
            self._entries.move_to_end(chunk_id)
            files._users += 1
            return files

    def release(self, files: ChunkFiles) -> None:
        with self._mu:
            files._users -= 1
            close = files._evicted and files._users == 0
        if close:
            files._close()

    def discard(self, chunk_id: int) -> None:
        """Forget a chunk (deleted or replaced); its fds close once no one uses them."""
        with self._mu:
            files = self._entries.pop(chunk_id, None)
            if files is None:
                return
            files._evicted = True
            close = files._users == 0
        if close:
            files._close()

    def close_all(self) -> None:
        with self._mu:
            entries = list(self._entries.values())
            self._entries.clear()
            idle = []
            for files in entries:
                files._evicted = True
                if files._users == 0:
                    idle.append(files)
        for files in idle:
            files._close()

    def __len__(self) -> int:
        with self._mu:
            return len(self._entries)
