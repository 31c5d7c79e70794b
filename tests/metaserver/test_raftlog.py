"""The durable log and snapshot files: round trips, torn tails, corruption, compaction."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from dfs.metaserver.durable import CorruptFile
from dfs.metaserver.raftlog import HardState, LogCorrupt, LogEntry, RaftLog, encode_record
from dfs.metaserver.snapshot import Snapshot, SnapshotStore
from dfs.types import LogIndex, NodeId, Term

pytestmark = pytest.mark.unit


def entry(index: int, term: int = 1, **extra: object) -> LogEntry:
    return LogEntry(Term(term), LogIndex(index), {"op": "noop", "i": index, **extra})


def fill(directory: Path, n: int, *, segment_bytes: int = 1 << 20, start: int = 1) -> RaftLog:
    log = RaftLog.open(directory, segment_bytes=segment_bytes, snapshot_index=start - 1)
    # one append per entry: a segment rotates only between appends
    for i in range(start, start + n):
        log.append([entry(i, term=1 + i // 4)])
    log.sync()
    return log


def indexes(log: RaftLog) -> list[int]:
    return [e.index for e in log.entries(0)]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


# ---------------------------------------------------------------- round trips
def test_append_sync_reopen(tmp_path: Path) -> None:
    log = fill(tmp_path, 10)
    assert (log.first_index, log.last_index, log.last_term) == (1, 10, 3)
    log.close()
    again = RaftLog.open(tmp_path)
    assert list(again.entries(1)) == [entry(i, term=1 + i // 4) for i in range(1, 11)]
    assert again.term_at(5) == 2
    assert [e.index for e in again.entries(4, 7)] == [4, 5, 6]
    again.append([entry(11, term=3)])
    again.sync()
    again.close()
    assert indexes(RaftLog.open(tmp_path)) == list(range(1, 12))


def test_group_commit_counts_one_fsync_per_sync(tmp_path: Path) -> None:
    log = RaftLog.open(tmp_path)
    log.append([entry(1), entry(2)])
    log.append([entry(3)])
    log.sync()
    assert log.statistics()["fsyncs"] == 1


def test_append_refuses_gaps_and_term_regressions(tmp_path: Path) -> None:
    log = fill(tmp_path, 3)
    with pytest.raises(ValueError, match="cannot follow"):
        log.append([entry(5)])
    with pytest.raises(ValueError, match="cannot follow"):
        log.append([entry(4, term=0)])
    assert log.last_index == 3


def test_segments_rotate_and_read_back(tmp_path: Path) -> None:
    log = fill(tmp_path, 50, segment_bytes=200)
    for i in range(51, 61):  # one append per entry: rotation between appends
        log.append([entry(i, term=20)])
    log.sync()
    log.close()
    assert len(segments(tmp_path)) > 3
    again = RaftLog.open(tmp_path, segment_bytes=200)
    assert indexes(again) == list(range(1, 61))


def test_hard_state_round_trip(tmp_path: Path) -> None:
    log = RaftLog.open(tmp_path)
    assert log.load_hard_state() == HardState()
    log.save_hard_state(HardState(Term(7), NodeId("m1")))
    assert RaftLog.open(tmp_path).load_hard_state() == HardState(Term(7), NodeId("m1"))
    (tmp_path / "hardstate").write_bytes(b"DFHS" + b"\0" * 20)
    with pytest.raises(LogCorrupt):
        RaftLog.open(tmp_path).load_hard_state()


# ---------------------------------------------------------------- torn tails
def _last_record_span(directory: Path, n: int) -> tuple[Path, int, int]:
    seg = segments(directory)[-1]
    size = seg.stat().st_size
    last = len(encode_record(entry(n, term=1 + n // 4)))
    return seg, size - last, size


def test_torn_tail_at_every_offset_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "src"
    fill(src, 6).close()
    seg, start, size = _last_record_span(src, 6)
    for cut in range(start, size):
        work = tmp_path / f"cut{cut}"
        shutil.copytree(src, work)
        wseg = work / seg.name
        with open(wseg, "r+b") as f:
            f.truncate(cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dfs.metaserver.raftlog"):
            log = RaftLog.open(work)
        assert indexes(log) == [1, 2, 3, 4, 5], cut
        assert wseg.stat().st_size == start
        torn = [r for r in caplog.records if "torn tail" in r.getMessage()]
        assert len(torn) == (1 if cut > start else 0)
        # the log goes on after recovery
        log.append([entry(6, term=2)])
        log.sync()
        log.close()
        assert indexes(RaftLog.open(work)) == [1, 2, 3, 4, 5, 6]
        shutil.rmtree(work)


@pytest.mark.parametrize("where", ["header", "payload", "last byte"])
def test_checksum_failing_last_record_is_dropped(tmp_path: Path, where: str) -> None:
    fill(tmp_path, 6).close()
    seg, start, size = _last_record_span(tmp_path, 6)
    pos = {"header": start + 6, "payload": start + 14, "last byte": size - 1}[where]
    data = bytearray(seg.read_bytes())
    data[pos] ^= 0x40
    seg.write_bytes(bytes(data))
    assert indexes(RaftLog.open(tmp_path)) == [1, 2, 3, 4, 5]


def test_zero_filled_tail_is_dropped(tmp_path: Path) -> None:
    fill(tmp_path, 4).close()
    seg = segments(tmp_path)[-1]
    with open(seg, "ab") as f:
        f.write(b"\0" * 4096)
    assert indexes(RaftLog.open(tmp_path)) == [1, 2, 3, 4]
    assert seg.stat().st_size < 4096


def test_corruption_in_the_middle_stops_startup(tmp_path: Path) -> None:
    fill(tmp_path, 6).close()
    seg = segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    rec = len(encode_record(entry(1)))
    data[rec + 15] ^= 0x01  # inside record 2's payload
    seg.write_bytes(bytes(data))
    with pytest.raises(LogCorrupt, match="followed by valid records"):
        RaftLog.open(tmp_path)
    assert seg.read_bytes() == bytes(data)  # nothing was truncated


def test_corruption_in_an_older_segment_stops_startup(tmp_path: Path) -> None:
    fill(tmp_path, 30, segment_bytes=200).close()
    first = segments(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF  # the last record of a segment that is not the newest
    first.write_bytes(bytes(data))
    with pytest.raises(LogCorrupt):
        RaftLog.open(tmp_path, segment_bytes=200)


def test_missing_segment_is_a_gap(tmp_path: Path) -> None:
    fill(tmp_path, 30, segment_bytes=200).close()
    segments(tmp_path)[1].unlink()
    with pytest.raises(LogCorrupt, match="expected"):
        RaftLog.open(tmp_path, segment_bytes=200)


# ---------------------------------------------------------------- compaction, truncation
def test_compact_drops_whole_covered_segments(tmp_path: Path) -> None:
    log = fill(tmp_path, 40, segment_bytes=200)
    before = segments(tmp_path)
    t25 = log.term_at(25)
    log.compact(25, t25)
    after = segments(tmp_path)
    assert len(after) < len(before)
    assert (log.first_index, log.term_at(25)) == (26, t25)
    assert indexes(log) == list(range(26, 41))
    log.close()
    again = RaftLog.open(tmp_path, snapshot_index=25, snapshot_term=7, segment_bytes=200)
    assert (again.first_index, again.last_index, again.term_at(25)) == (26, 40, 7)
    assert indexes(again) == list(range(26, 41))


def test_compact_forgets_the_index_of_a_kept_segment(tmp_path: Path) -> None:
    """One big segment: its file stays, but only the records after the snapshot stay indexed
    in memory (it grew by 16 bytes a record for as long as the segment lived)."""
    log = fill(tmp_path, 100)
    (seg,) = segments(tmp_path)
    log.compact(90, log.term_at(90))
    assert segments(tmp_path) == [seg]
    assert len(log._segments[0].offsets) == len(log._segments[0].terms) == 10
    assert (log.first_index, log.last_index) == (91, 100)
    assert indexes(log) == list(range(91, 101))
    with pytest.raises(KeyError):
        log.term_at(89)
    with pytest.raises(ValueError, match="compacted"):
        log.truncate_suffix(90)
    log.truncate_suffix(96)  # offsets in the file are still right
    log.append([entry(96, term=40)])
    log.sync()
    log.close()
    again = RaftLog.open(tmp_path, snapshot_index=90, snapshot_term=23)
    assert len(again._segments[0].offsets) == 6
    assert (again.first_index, again.term_at(90), again.term_at(96)) == (91, 23, 40)
    assert [e.index for e in again.entries(91)] == [91, 92, 93, 94, 95, 96]
    again.close()
    # Opened without the snapshot, the whole segment is there again.
    assert indexes(RaftLog.open(tmp_path)) == list(range(1, 97))


def test_compact_everything_then_continue(tmp_path: Path) -> None:
    log = fill(tmp_path, 10)
    log.compact(10, 3)
    assert segments(tmp_path) == []
    assert (log.first_index, log.last_index, log.last_term) == (11, 10, 3)
    log.append([entry(11, term=4)])
    log.sync()
    log.close()
    again = RaftLog.open(tmp_path, snapshot_index=10, snapshot_term=3)
    assert indexes(again) == [11]
    assert again.term_at(10) == 3


def test_log_starting_after_the_snapshot_is_refused(tmp_path: Path) -> None:
    log = fill(tmp_path, 10)
    log.compact(10, 3)
    log.append([entry(11, term=4)])
    log.sync()
    log.close()
    with pytest.raises(LogCorrupt, match="snapshot ends at 5"):
        RaftLog.open(tmp_path, snapshot_index=5, snapshot_term=1)


def test_truncate_suffix(tmp_path: Path) -> None:
    log = fill(tmp_path, 30, segment_bytes=200)
    log.truncate_suffix(12)
    assert log.last_index == 11
    log.append([entry(12, term=9)])
    log.sync()
    log.close()
    again = RaftLog.open(tmp_path, segment_bytes=200)
    assert indexes(again) == list(range(1, 13))
    assert again.term_at(12) == 9


# ---------------------------------------------------------------- snapshots
def test_snapshot_store(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    assert store.load_newest() is None
    store.save(Snapshot(5, 1, b"five"))
    store.save(Snapshot(9, 2, b"nine"))
    assert store.load_newest() == Snapshot(9, 2, b"nine")
    assert len(list(tmp_path.glob("snapshot-*"))) == 1
    (tmp_path / "snapshot-00000000000000000010.snap.tmp").write_bytes(b"partial")
    assert store.load_newest() == Snapshot(9, 2, b"nine")
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_snapshot_is_refused(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    path = store.save(Snapshot(3, 1, b"state" * 100))
    data = bytearray(path.read_bytes())
    data[-10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFile, match="checksum"):
        store.load_newest()
