"""The task dump an operator gets with kill -USR1: every task, nested, with its frames."""

from __future__ import annotations

import logging
import os
import signal

import pytest
import trio

from dfs.observability.taskdump import (
    count_tasks,
    describe_current_task,
    dump_on_signals,
    format_task_tree,
)

pytestmark = pytest.mark.unit


async def _waits_for_ever(event: trio.Event, ready: trio.Event) -> None:
    undo = describe_current_task(lambda: "the answer is 42")
    ready.set()
    try:
        await event.wait()
    finally:
        undo()


async def test_tree_names_nested_tasks_and_where_they_wait() -> None:
    event, ready = trio.Event(), trio.Event()
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as inner:
            inner.start_soon(_waits_for_ever, event, ready)
            await ready.wait()
            dump = format_task_tree()
            lines = dump.splitlines()
            mine = next(i for i, line in enumerate(lines) if "_waits_for_ever" in line)
            assert "(the answer is 42)" in lines[mine]
            assert lines[mine].startswith("  ")  # under its parent
            frames = lines[mine + 1 : mine + 6]
            assert any("test_taskdump.py" in f and "_waits_for_ever" in f for f in frames)
            assert any("wait" in f for f in frames)
            assert count_tasks() >= 2
            event.set()
        outer.cancel_scope.cancel()
    assert "the answer is 42" not in format_task_tree()


async def test_sigusr1_logs_the_dump(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with trio.open_nursery() as nursery:
        await nursery.start(dump_on_signals)
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        with trio.fail_after(5):
            while "memory dump on SIGUSR2" not in caplog.text or "task dump" not in caplog.text:
                await trio.sleep(0.02)
        assert "dump_on_signals" in caplog.text
        nursery.cancel_scope.cancel()


def test_memory_dump_names_what_grew() -> None:
    import tracemalloc

    from dfs.observability.taskdump import MemoryDumper

    class Leak:
        pass

    dumper = MemoryDumper()
    tracemalloc.start()
    try:
        first = dumper.dump()
        assert "most numerous types" in first and "traced:" in first
        kept = [Leak() for _ in range(50_000)]
        second = dumper.dump()
    finally:
        tracemalloc.stop()
    grown = second.split("grown most since the previous dump:")[1]
    assert "+50000 Leak" in grown
    assert "test_taskdump.py" in second.split("traced:")[1]
    assert len(kept) == 50_000
    assert "PYTHONTRACEMALLOC" in MemoryDumper().dump()  # not tracing: says how to
