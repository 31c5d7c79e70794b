"""DirtyBuffer against a bytearray model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dfs.client.dirty import DirtyBuffer

pytestmark = pytest.mark.unit


def materialise(buf: DirtyBuffer, size: int) -> tuple[bytearray, bytearray]:
    """The bytes and a mask of which bytes are dirty."""
    data, mask = bytearray(size), bytearray(size)
    for off, chunk in buf:
        data[off : off + len(chunk)] = chunk
        mask[off : off + len(chunk)] = b"\x01" * len(chunk)
    return data, mask


def check_invariants(buf: DirtyBuffer) -> None:
    prev_end = -1
    total = 0
    for off, chunk in buf:
        assert chunk, "empty extent"
        assert off > prev_end, "extents overlap or touch"
        prev_end = off + len(chunk)
        total += len(chunk)
    assert total == buf.nbytes


writes = st.lists(st.tuples(st.integers(0, 300), st.binary(min_size=0, max_size=60)), max_size=30)


@given(writes)
@settings(max_examples=300, deadline=None)
def test_newest_write_wins(ops: list[tuple[int, bytes]]) -> None:
    buf = DirtyBuffer()
    model, mask = bytearray(400), bytearray(400)
    for off, data in ops:
        buf.add(off, data)
        model[off : off + len(data)] = data
        mask[off : off + len(data)] = b"\x01" * len(data)
        check_invariants(buf)
    got, got_mask = materialise(buf, 400)
    assert got_mask == mask
    assert bytes(b for b, m in zip(got, mask, strict=True) if m) == bytes(
        b for b, m in zip(model, mask, strict=True) if m
    )


@given(writes, writes)
@settings(max_examples=200, deadline=None)
def test_restore_under_keeps_newer_writes(
    old: list[tuple[int, bytes]], new: list[tuple[int, bytes]]
) -> None:
    buf = DirtyBuffer()
    for off, data in old:
        buf.add(off, data)
    taken = buf.take()
    assert not buf and buf.nbytes == 0
    expected = DirtyBuffer()
    for off, data in old:
        expected.add(off, data)
    for off, data in new:
        buf.add(off, data)
        expected.add(off, data)
    buf.restore_under(taken)
    check_invariants(buf)
    assert materialise(buf, 400) == materialise(expected, 400)


@given(writes, st.integers(0, 400))
@settings(max_examples=200, deadline=None)
def test_truncate_drops_bytes_beyond(ops: list[tuple[int, bytes]], size: int) -> None:
    buf = DirtyBuffer()
    for off, data in ops:
        buf.add(off, data)
    _, before_mask = materialise(buf, 400)
    buf.truncate(size)
    check_invariants(buf)
    _, after_mask = materialise(buf, 400)
    assert after_mask[:size] == before_mask[:size]
    assert not any(after_mask[size:])
    assert buf.end() <= size


def test_sequential_appends_make_one_extent() -> None:
    buf = DirtyBuffer()
    for i in range(100):
        buf.add(i * 10, bytes([i]) * 10)
    assert len(buf) == 1
    assert buf.nbytes == 1000
    assert buf.end() == 1000
