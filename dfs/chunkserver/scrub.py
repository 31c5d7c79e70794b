"""Scrubber: re-read and verify every chunk in the background; report corrupt replicas.

Silent corruption (bit rot, a misdirected write, a disk that returns garbage) is otherwise only
found when a client happens to read the damaged block.  The scrubber walks the store's chunks
in passes and verifies every block against its checksum, so a bad replica is reported to the
metaserver long before the other replicas might fail too (today the metaserver records it,
readers skip it, and ``dfs status`` counts it; repairing it from a good replica comes with
re-replication).

Contract:

* **Passes.**  Each pass verifies the chunks of a fresh ``list_chunks()``; a chunk deleted
  since the listing is skipped.  After a full pass the scrubber sleeps ``interval`` seconds.
  The first pass starts at a random position of the list (``rng``), so chunks at the end of
  the id order are not starved by restarts more frequent than a pass.
* **Pacing.**  At most ``rate`` bytes per second on average: after each chunk the scrubber
  sleeps until ``start + bytes / rate`` (``start``: when that chunk's verification began, or
  the previous chunk's budget end if that is later).  Credit is never saved up while idle, so
  a burst is at most one chunk (64 MiB, read at disk speed inside ``ChunkStore.verify``).
* **Locking.**  ``ChunkStore.verify`` runs in a worker thread and takes the chunk's lock per
  batch of blocks, the lock every write and truncate holds for its whole update, so each batch
  sees data and checksums of the same state and writers wait at most one batch.
* **No false reports.**  A chunk can change between the listing and the verification (it can
  be deleted and created again at another version, or a failed write can leave a block
  inconsistent until its retry).  So bad blocks are confirmed with a ``ChunkStore.read`` of
  the first bad blocks at the listed version before reporting: the read checks the version
  and the checksums under the chunk lock, atomically.  A clean or version-mismatched
  confirmation reports nothing; the next pass looks again.  (An I/O error reading the chunk
  is reported without confirmation: a concurrent write does not cause one.)
* **Full passes.**  ``full_pass`` verifies every chunk once at disk speed (no pacing) and
  returns a summary: the check after an unclean shutdown.  It shares the memory of reported
  replicas with the background passes, so a replica is not reported twice.
* **Copies in progress** (version 0, see ``dfs.chunkserver.store``) are skipped.
* **Reporting.**  Each corrupt replica is reported once per ``(chunk, version)`` through
  ``report_bad``, with a WARNING naming the bad blocks.  A failed report is retried on the next
  pass.  Memory of reported replicas is pruned to the chunks of the current listing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, TypeVarTuple

import trio

from dfs.chunkserver.service import ReportBad
from dfs.chunkserver.store import COPY_VERSION, ChunkStore
from dfs.errors import ChunkCorrupt, ChunkNotFound, DfsError, StaleChunkVersion
from dfs.types import BLOCK_SIZE, ChunkId, ChunkVersion

logger = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: Blocks re-read by the confirming ``read`` (bounds its memory to 1 MiB).
_CONFIRM_BLOCKS = 16
#: Bytes in a MiB (the unit of the ``scrub_rate`` setting).
MIB = 1 << 20


class RunSync(Protocol):
    """How blocking store calls run: ``trio.to_thread.run_sync`` (tests may run them inline)."""

    def __call__(self, fn: Callable[[*Ts], T], /, *args: *Ts) -> Awaitable[T]: ...


@dataclass
class ScrubStatistics:
    #: Bytes of chunk data verified (confirmation reads included).
    scrubbed_bytes: int = 0
    #: Chunks verified (a chunk deleted before it was verified is not counted).
    scrubbed_chunks: int = 0
    #: Full passes over the store completed.
    scrub_passes: int = 0
    #: Corrupt replicas found, once per (chunk, version).
    corrupt_found: int = 0
    #: Reports to the metaserver that failed (retried on the next pass).
    reports_failed: int = 0


@dataclass(frozen=True)
class FullPassResult:
    """What one ``Scrubber.full_pass`` found."""

    chunks: int
    bytes: int
    #: Corrupt replicas found (each reported through ``report_bad``).
    corrupt: int
    #: Seconds the pass took (trio clock).
    seconds: float


class Scrubber:
    """Verifies ``store`` forever at ``rate`` bytes/s; see the module docstring.

    ``rate`` must be > 0, or None for no pacing (a chunkserver with ``scrub_rate = 0`` creates
    an unpaced Scrubber only for ``full_pass`` and never runs it); ``interval`` is the pause in
    seconds after each full pass.
    """

    def __init__(
        self,
        store: ChunkStore,
        report_bad: ReportBad,
        *,
        rate: float | None,
        interval: float,
        report_timeout: float = 30.0,
        rng: random.Random | None = None,
        run_sync: RunSync = trio.to_thread.run_sync,
    ) -> None:
        if rate is not None and not rate > 0:
            raise ValueError("scrub rate must be > 0 (or None: unpaced)")
        if interval < 0:
            raise ValueError("scrub interval must be >= 0")
        self._store = store
        self._report_bad = report_bad
        self._rate = None if rate is None else float(rate)
        self._interval = interval
        self._report_timeout = report_timeout
        self._rng = rng or random.Random()
        self._run_sync = run_sync
        self._stats = ScrubStatistics()
        #: Corrupt replicas already counted (and logged) / already reported successfully.
        self._found: set[tuple[int, int]] = set()
        self._reported: set[tuple[int, int]] = set()
        #: End of the byte budget spent so far (trio time).
        self._ready_at = 0.0
        self._pass_done = trio.Event()

    def corrupt(self) -> list[tuple[int, int]]:
        """``(chunk, version)`` of the replicas found corrupt and still on disk."""
        return sorted(self._found)

    def statistics(self) -> ScrubStatistics:
        return ScrubStatistics(**vars(self._stats))

    async def wait_pass_done(self) -> int:
        """Wait until the pass under way (or the next one) completes; return the pass count."""
        await self._pass_done.wait()
        return self._stats.scrub_passes

    async def run(
        self,
        *,
        pause_first: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Scrub forever; ``pause_first``: the store was just verified (``full_pass``), so
        start with the pause instead of a pass."""
        logger.info(
            "scrubbing at %s, pausing %.0f s between passes",
            "full speed" if self._rate is None else f"{self._rate / MIB:.1f} MiB/s",
            self._interval,
        )
        task_status.started()
        first = True
        if pause_first:
            await trio.sleep(self._interval)
            first = False
        while True:
            await self.scrub_pass(randomize_start=first)
            first = False
            await trio.sleep(self._interval)

    async def full_pass(self) -> FullPassResult:
        """Verify every chunk once at full speed (no pacing); report corrupt replicas."""
        before = self.statistics()
        started = trio.current_time()
        await self.scrub_pass(paced=False)
        after = self.statistics()
        return FullPassResult(
            chunks=after.scrubbed_chunks - before.scrubbed_chunks,
            bytes=after.scrubbed_bytes - before.scrubbed_bytes,
            corrupt=after.corrupt_found - before.corrupt_found,
            seconds=trio.current_time() - started,
        )

    async def scrub_pass(self, *, randomize_start: bool = False, paced: bool = True) -> None:
        """Verify every chunk listed now, paced to the rate (unless ``paced`` is False)."""
        chunks = await self._run_sync(self._store.list_chunks)
        listed = {(int(c), int(v)) for c, v, _ in chunks}
        self._found &= listed
        self._reported &= listed
        chunks = [c for c in chunks if c[1] != COPY_VERSION]
        if randomize_start and chunks:
            k = self._rng.randrange(len(chunks))
            chunks = chunks[k:] + chunks[:k]
        for chunk_id, version, length in chunks:
            start = max(self._ready_at, trio.current_time())
            spent = await self._scrub_chunk(chunk_id, version, length)
            if paced and self._rate is not None:
                self._ready_at = start + spent / self._rate
                await trio.sleep_until(self._ready_at)
            else:
                await trio.lowlevel.checkpoint()
        self._stats.scrub_passes += 1
        self._pass_done.set()
        self._pass_done = trio.Event()
        logger.debug("scrub pass %d done: %d chunk(s)", self._stats.scrub_passes, len(chunks))

    async def _scrub_chunk(self, chunk_id: ChunkId, version: ChunkVersion, length: int) -> int:
        """Verify one chunk (confirm and report it when bad); return the bytes read."""
        try:
            bad = await self._run_sync(self._store.verify, chunk_id)
        except ChunkNotFound:
            logger.debug("chunk %016x deleted before it was scrubbed", chunk_id)
            return 0
        except ChunkCorrupt:  # an I/O error reading it: no block can be trusted
            bad = []
            io_error = True
        except DfsError as exc:
            logger.warning("scrubbing chunk %016x failed: %s", chunk_id, exc)
            return length
        else:
            io_error = False
        self._stats.scrubbed_chunks += 1
        self._stats.scrubbed_bytes += length
        if not bad and not io_error:
            # Healthy now: a replica found corrupt earlier was replaced by a good copy of the
            # same chunk and version; forget it, or it would be reported again (and a later
            # real corruption never).
            key = (int(chunk_id), int(version))
            self._found.discard(key)
            self._reported.discard(key)
            return length
        if io_error:  # the disk failed the read: not something a concurrent write causes
            await self._corrupt(chunk_id, version, [])
            return length
        confirmed, spent = await self._confirm(chunk_id, version, bad)
        if not confirmed:
            logger.info(
                "chunk %016x: block(s) %s failed verification but not on re-reading at version "
                "%d (changed meanwhile); not reported",
                chunk_id,
                bad,
                version,
            )
            return length + spent
        await self._corrupt(chunk_id, version, bad)
        return length + spent

    async def _confirm(self, chunk_id: int, version: int, bad: list[int]) -> tuple[bool, int]:
        """Whether the first of the ``bad`` blocks are still bad at ``version``; bytes read."""
        first = bad[0]
        last = min(bad[-1], first + _CONFIRM_BLOCKS - 1)
        offset, size = first * BLOCK_SIZE, (last - first + 1) * BLOCK_SIZE
        try:
            data = await self._run_sync(self._store.read, chunk_id, version, offset, size)
        except ChunkCorrupt:
            self._stats.scrubbed_bytes += size
            return True, size
        except (ChunkNotFound, StaleChunkVersion):
            return False, 0
        except DfsError as exc:
            logger.warning("re-reading chunk %016x failed: %s", chunk_id, exc)
            return False, size
        self._stats.scrubbed_bytes += len(data)
        return False, len(data)

    async def _corrupt(self, chunk_id: ChunkId, version: ChunkVersion, bad: list[int]) -> None:
        key = (int(chunk_id), int(version))
        where = f"block(s) {_ranges(bad)}" if bad else "an I/O error"
        reason = f"scrub: checksum mismatch in {where}" if bad else f"scrub: {where}"
        if key not in self._found:
            self._found.add(key)
            self._stats.corrupt_found += 1
            logger.warning(
                "scrub: chunk %016x version %d is corrupt: %s", chunk_id, version, reason
            )
        if key in self._reported:
            return
        try:
            with trio.move_on_after(self._report_timeout) as scope:
                await self._report_bad(chunk_id, version, reason)
        except DfsError as exc:
            self._stats.reports_failed += 1
            logger.warning("reporting corrupt chunk %016x failed: %s", chunk_id, exc)
            return
        if scope.cancelled_caught:
            self._stats.reports_failed += 1
            logger.warning("reporting corrupt chunk %016x timed out", chunk_id)
            return
        self._reported.add(key)


def _ranges(blocks: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3,7"``: a short reason even when a whole chunk is bad."""
    parts: list[str] = []
    i = 0
    while i < len(blocks):
        j = i
        while j + 1 < len(blocks) and blocks[j + 1] == blocks[j] + 1:
            j += 1
        parts.append(str(blocks[i]) if i == j else f"{blocks[i]}-{blocks[j]}")
        i = j + 1
    return ",".join(parts)
