"""The background scrubber: finds and reports corrupt replicas once, paces itself, skips races."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

import pytest
import trio
import trio.testing

from dfs.chunkserver import layout
from dfs.chunkserver.scrub import MIB, Scrubber, _ranges
from dfs.chunkserver.store import ChunkStore
from dfs.config import ChunkserverConfig
from dfs.errors import ConfigError, Unavailable
from dfs.types import BLOCK_SIZE, ChunkId, ChunkVersion
from tests.chunkserver.cluster import running_cluster

pytestmark = pytest.mark.unit

T = TypeVar("T")
Ts = TypeVarTuple("Ts")
V = 3
#: Fast enough that pacing sleeps are negligible in real-clock tests.
FAST = 1e12


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed * 7 + (i >> 8)) & 0xFF for i in range(n))


def flip_byte(data_dir: Path, chunk_id: int, offset: int) -> None:
    path = layout.data_path(data_dir / "chunks", chunk_id)
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


class Reports:
    """A fake ``report_bad`` that records its calls (and can fail the first few)."""

    def __init__(self, fail: int = 0) -> None:
        self.calls: list[tuple[int, int, str]] = []
        self.fail = fail

    async def __call__(self, chunk_id: ChunkId, version: ChunkVersion, reason: str) -> None:
        await trio.lowlevel.checkpoint()
        if self.fail > 0:
            self.fail -= 1
            raise Unavailable("metaserver down")
        self.calls.append((chunk_id, version, reason))


async def inline(fn: Callable[[*Ts], T], /, *args: *Ts) -> T:
    """Run store calls on the event loop: no thread waits for MockClock to jump over."""
    await trio.lowlevel.checkpoint()
    return fn(*args)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChunkStore]:
    with ChunkStore(tmp_path) as s:
        yield s


async def test_corrupt_byte_reported_once_with_its_block(
    tmp_path: Path, store: ChunkStore, caplog: pytest.LogCaptureFixture
) -> None:
    for cid in (1, 2, 3):
        store.write(cid, V, 0, pattern(5 * BLOCK_SIZE + 100, seed=cid))
    flip_byte(tmp_path, 2, 3 * BLOCK_SIZE + 17)
    reports = Reports()
    scrubber = Scrubber(store, reports, rate=FAST, interval=1)
    with trio.fail_after(5):
        await scrubber.scrub_pass()
        await scrubber.scrub_pass()  # the second pass finds it again but does not re-report
    assert reports.calls == [(2, V, "scrub: checksum mismatch in block(s) 3")]
    stats = scrubber.statistics()
    assert stats.corrupt_found == 1
    assert stats.scrub_passes == 2
    assert stats.scrubbed_chunks == 6
    assert stats.scrubbed_bytes >= 6 * (5 * BLOCK_SIZE + 100)
    warnings = [r for r in caplog.records if r.name == "dfs.chunkserver.scrub"]
    assert len(warnings) == 1 and "0000000000000002" in warnings[0].getMessage()


async def test_clean_store_reports_nothing(store: ChunkStore) -> None:
    for cid in range(4):
        store.write(cid, V, 0, pattern(2 * BLOCK_SIZE, seed=cid))
    store.truncate(9, V, 0)  # an empty chunk is fine too
    reports = Reports()
    scrubber = Scrubber(store, reports, rate=FAST, interval=1)
    with trio.fail_after(5):
        await scrubber.scrub_pass()
    assert reports.calls == []
    stats = scrubber.statistics()
    assert (stats.scrubbed_chunks, stats.scrubbed_bytes) == (5, 4 * 2 * BLOCK_SIZE)
    assert stats.corrupt_found == 0


async def test_a_new_version_is_reported_again(tmp_path: Path, store: ChunkStore) -> None:
    store.write(7, V, 0, pattern(BLOCK_SIZE))
    flip_byte(tmp_path, 7, 5)
    reports = Reports()
    scrubber = Scrubber(store, reports, rate=FAST, interval=1)
    with trio.fail_after(5):
        await scrubber.scrub_pass()
        store.delete(7)
        store.write(7, V + 1, 0, pattern(2 * BLOCK_SIZE))
        flip_byte(tmp_path, 7, BLOCK_SIZE + 5)
        await scrubber.scrub_pass()
    assert [(c, v) for c, v, _ in reports.calls] == [(7, V), (7, V + 1)]
    assert reports.calls[1][2].endswith("block(s) 1")


async def test_failed_report_is_retried_next_pass(tmp_path: Path, store: ChunkStore) -> None:
    store.write(4, V, 0, pattern(BLOCK_SIZE))
    flip_byte(tmp_path, 4, 0)
    reports = Reports(fail=1)
    scrubber = Scrubber(store, reports, rate=FAST, interval=1)
    with trio.fail_after(5):
        await scrubber.scrub_pass()
        assert reports.calls == []
        await scrubber.scrub_pass()
        await scrubber.scrub_pass()
    assert [c for c, _, _ in reports.calls] == [4]
    stats = scrubber.statistics()
    assert (stats.corrupt_found, stats.reports_failed) == (1, 1)


async def test_rate_limits_virtual_time(store: ChunkStore, autojump_clock: Any) -> None:
    # 6 chunks of 1 MiB (one of them in two halves) at 2 MiB/s: 3 s per pass.
    for cid in range(5):
        store.write(cid, V, 0, pattern(MIB, seed=cid))
    store.write(5, V, 0, pattern(MIB // 2))
    store.write(6, V, 0, pattern(MIB // 2))
    scrubber = Scrubber(store, Reports(), rate=2 * MIB, interval=100, run_sync=inline)
    with trio.fail_after(10_000):
        start = trio.current_time()
        await scrubber.scrub_pass()
        assert math.isclose(trio.current_time() - start, 3.0, abs_tol=1e-6)
        # run(): passes are separated by the interval (and paced as before).
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scrubber.run)
            t0 = trio.current_time()
            assert await scrubber.wait_pass_done() == 2
            t1 = trio.current_time()
            assert await scrubber.wait_pass_done() == 3
            t2 = trio.current_time()
            nursery.cancel_scope.cancel()
    assert math.isclose(t1 - t0, 3.0, abs_tol=1e-6)
    assert math.isclose(t2 - t1, 100 + 3.0, abs_tol=1e-6)


async def test_chunks_deleted_during_a_pass_are_skipped(store: ChunkStore) -> None:
    for cid in range(1, 5):
        store.write(cid, V, 0, pattern(BLOCK_SIZE, seed=cid))

    async def deleting(fn: Callable[[*Ts], T], /, *args: *Ts) -> T:
        called: tuple[object, ...] = (fn, *args)
        if called == (store.verify, 1):
            store.delete(3)  # after the listing, before chunk 3's turn
        return await trio.to_thread.run_sync(fn, *args)

    reports = Reports()
    scrubber = Scrubber(store, reports, rate=FAST, interval=1, run_sync=deleting)
    with trio.fail_after(5):
        await scrubber.scrub_pass()
    assert reports.calls == []
    stats = scrubber.statistics()
    assert (stats.scrub_passes, stats.scrubbed_chunks) == (1, 3)


async def test_chunk_replaced_after_listing_is_not_reported(
    tmp_path: Path, store: ChunkStore
) -> None:
    # Listed at version V, then replaced by a (corrupt) version V + 1 before being verified:
    # verify sees bad blocks, but they are not those of the listed replica.
    store.write(8, V, 0, pattern(BLOCK_SIZE))

    async def replacing(fn: Callable[[*Ts], T], /, *args: *Ts) -> T:
        hook: object = fn
        if hook == store.verify:
            store.delete(8)
            store.write(8, V + 1, 0, pattern(BLOCK_SIZE, seed=1))
            flip_byte(tmp_path, 8, 9)
        return await trio.to_thread.run_sync(fn, *args)

    reports = Reports()
    scrubber = Scrubber(store, reports, rate=FAST, interval=1, run_sync=replacing)
    with trio.fail_after(5):
        await scrubber.scrub_pass()
    assert reports.calls == []
    assert scrubber.statistics().corrupt_found == 0


async def test_missing_data_file_is_reported(tmp_path: Path, store: ChunkStore) -> None:
    store.write(5, V, 0, pattern(3 * BLOCK_SIZE))
    store.close()  # no cached descriptor keeps the file alive
    layout.data_path(tmp_path / "chunks", 5).unlink()
    reports = Reports()
    scrubber = Scrubber(store, reports, rate=FAST, interval=1)
    with trio.fail_after(5):
        await scrubber.scrub_pass()
    assert reports.calls == [(5, V, "scrub: an I/O error")]


async def test_data_file_deleted_under_a_cached_descriptor_is_reported(
    tmp_path: Path, store: ChunkStore
) -> None:
    store.write(5, V, 0, pattern(3 * BLOCK_SIZE))
    assert store.read(5, V, 0, 10)  # its descriptor is cached now
    layout.data_path(tmp_path / "chunks", 5).unlink()
    reports = Reports()
    scrubber = Scrubber(store, reports, rate=FAST, interval=1)
    with trio.fail_after(5):
        await scrubber.scrub_pass()
    assert reports.calls == [(5, V, "scrub: an I/O error")]


def test_scrub_rate_zero_is_refused_by_the_scrubber(store: ChunkStore) -> None:
    # A chunkserver with scrub_rate = 0 starts no scrubber; the scrubber itself needs a rate.
    with pytest.raises(ValueError):
        Scrubber(store, Reports(), rate=0, interval=1)


@pytest.mark.parametrize(
    ("rate", "interval", "ok"),
    [
        (16.0, 3600.0, True),
        (0, 3600.0, True),  # off
        (0.5, 1, True),
        (-1, 3600.0, False),
        (math.nan, 3600.0, False),
        (math.inf, 3600.0, False),
        (True, 3600.0, False),
        ("16", 3600.0, False),
        (16.0, 0, False),
        (16.0, -5, False),
    ],
)
def test_config_validation(rate: Any, interval: Any, ok: bool) -> None:
    cfg = ChunkserverConfig(
        id="cs", listen="127.0.0.1:0", data_dir=Path("/x"), scrub_rate=rate, scrub_interval=interval
    )
    if ok:
        cfg.validate()
    else:
        with pytest.raises(ConfigError):
            cfg.validate()


def test_config_defaults() -> None:
    cfg = ChunkserverConfig(id="cs", listen="127.0.0.1:0", data_dir=Path("/x"))
    assert (cfg.scrub_rate, cfg.scrub_interval) == (16.0, 3600.0)


def test_ranges() -> None:
    assert _ranges([]) == ""
    assert _ranges([3]) == "3"
    assert _ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


async def test_chunkserver_scrubs_and_reports_to_the_metaserver(tmp_path: Path) -> None:
    # A corrupt replica already on disk when the chunkserver starts is found by its first pass.
    with ChunkStore(tmp_path / "cs0") as s:
        s.write(0xABC, V, 0, pattern(4 * BLOCK_SIZE))
    flip_byte(tmp_path / "cs0", 0xABC, 2 * BLOCK_SIZE)
    async with running_cluster(tmp_path, n=1) as cluster:
        await cluster.meta.wait_for(lambda: cluster.meta.reports, timeout=5)
        (report,) = cluster.meta.reports
        assert (report["id"], report["chunk_id"], report["version"]) == ("cs0", 0xABC, V)
        assert report["reason"] == "scrub: checksum mismatch in block(s) 2"
        stats = cluster.servers[0].statistics().scrub
        assert (stats.corrupt_found, stats.scrubbed_chunks) == (1, 1)


async def test_a_replica_replaced_by_a_good_copy_is_no_longer_listed_corrupt(
    tmp_path: Path, store: ChunkStore
) -> None:
    store.write(7, V, 0, pattern(2 * BLOCK_SIZE))
    flip_byte(tmp_path, 7, 5)
    reports = Reports()
    scrubber = Scrubber(store, reports, rate=FAST, interval=1)
    with trio.fail_after(5):
        await scrubber.scrub_pass()
    assert scrubber.corrupt() == [(7, V)]
    store.delete(7)  # the metaserver deletes the bad replica, a good copy comes back
    store.write(7, V, 0, pattern(2 * BLOCK_SIZE))
    with trio.fail_after(5):
        await scrubber.full_pass()
    assert scrubber.corrupt() == []
