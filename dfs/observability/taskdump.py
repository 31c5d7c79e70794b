"""Where every trio task of a process is waiting (SIGUSR1), and what holds its memory
(SIGUSR2): dumps for an operator, in the log.

``kill -USR1 <pid>`` makes a daemon or a mount write one log record (level WARNING) that lists
each live task with the stack of coroutine frames it is suspended in, innermost last, e.g.::

    task dfs.fuse.session.FuseSession._run_request (SETLK #4512, 73.2 s)
      dfs/client/vfs.py:913 setlk
      dfs/client/remote.py:522 lock_set
      ...

A request that never answers leaves no error in a log; this tells where it is stuck without
stopping the process (like ``py-spy dump`` for threads, which cannot see into trio tasks).
``describe`` hooks let a task say more than its coroutine's name (the FUSE session names the
request it serves).

``kill -USR2 <pid>`` logs what the memory is in: the 25 most numerous object types with their
counts (and the change since the previous dump), and, when the process runs with
``PYTHONTRACEMALLOC=1`` (or ``=N`` frames), the 25 source lines that allocated the most, with
the growth since the previous dump: two dumps some minutes apart name what keeps growing.
"""

from __future__ import annotations

import gc
import logging
import signal
import tracemalloc
import types
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import trio

log = logging.getLogger(__name__)

#: Frames deeper than this in one task are cut (a runaway recursion stays readable).
MAX_FRAMES = 40

#: ``id(task) -> callable`` giving an extra description for that task; entries are
#: removed by whoever registered them.
_descriptions: dict[int, Callable[[], str]] = {}


def describe_current_task(describe: Callable[[], str]) -> Callable[[], None]:
    """Attach ``describe()`` to the running task's line in a dump; returns the undo."""
    key = id(trio.lowlevel.current_task())
    _descriptions[key] = describe

    def undo() -> None:
        _descriptions.pop(key, None)

    return undo


def _frames(coro: Any) -> Iterator[types.FrameType]:
    """The frames a suspended coroutine chain is in, outermost first."""
    seen = 0
    while coro is not None and seen < MAX_FRAMES:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            frame = getattr(coro, "gi_frame", None)
        if frame is not None:
            yield frame
        seen += 1
        nxt = getattr(coro, "cr_await", None)
        if nxt is None:
            nxt = getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
        coro = nxt


def _walk(task: trio.lowlevel.Task, depth: int, out: list[str]) -> None:
    extra = ""
    describe = _descriptions.get(id(task))
    if describe is not None:
        try:
            extra = f" ({describe()})"
        except Exception as exc:  # a dump must never fail for one task
            extra = f" (describe failed: {exc!r})"
    pad = "  " * depth
    out.append(f"{pad}task {task.name}{extra}")
    for frame in _frames(task.coro):
        code = frame.f_code
        out.append(f"{pad}  {code.co_filename}:{frame.f_lineno} {code.co_name}")
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            _walk(child, depth + 1, out)


def format_task_tree() -> str:
    """Every task of the running trio loop, children indented under their parents."""
    out: list[str] = []
    root = trio.lowlevel.current_root_task()
    if root is not None:
        _walk(root, 0, out)
    return "\n".join(out)


def count_tasks() -> int:
    """How many tasks the running trio loop has (for a dump's first line and for tests)."""
    root = trio.lowlevel.current_root_task()
    todo = [root] if root is not None else []
    n = 0
    while todo:
        task = todo.pop()
        n += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return n


#: Entries of each table in a memory dump.
MEMORY_TOP = 25


class MemoryDumper:
    """Object counts by type and (when tracing) allocation sites, each with the change since
    the previous dump of this dumper."""

    def __init__(self) -> None:
        self._counts: Counter[str] | None = None
        self._snapshot: tracemalloc.Snapshot | None = None

    def dump(self) -> str:
        counts: Counter[str] = Counter(type(o).__name__ for o in gc.get_objects())
        before = self._counts
        self._counts = counts
        total = sum(counts.values())
        out = [f"{total} objects tracked by the collector; most numerous types:"]
        for name, n in counts.most_common(MEMORY_TOP):
            change = "" if before is None else f" ({n - before.get(name, 0):+d})"
            out.append(f"  {n:>10} {name}{change}")
        if before is not None:
            grown = sorted(counts, key=lambda k: before.get(k, 0) - counts[k])[:MEMORY_TOP]
            out.append("grown most since the previous dump:")
            out.extend(
                f"  {counts[k] - before.get(k, 0):>+10} {k}"
                for k in grown
                if counts[k] > before.get(k, 0)
            )
        if not tracemalloc.is_tracing():
            out.append("(allocation sites: run with PYTHONTRACEMALLOC=1)")
            return "\n".join(out)
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        current, peak = tracemalloc.get_traced_memory()
        out.append(f"traced: {current / 2**20:.1f} MiB (peak {peak / 2**20:.1f} MiB); top lines:")
        for stat in snap.statistics("lineno")[:MEMORY_TOP]:
            out.append(f"  {stat.size / 2**10:>10.0f} KiB {stat.count:>9} blocks {stat.traceback}")
        if self._snapshot is not None:
            out.append("grown most since the previous dump:")
            for diff in snap.compare_to(self._snapshot, "lineno")[:MEMORY_TOP]:
                out.append(
                    f"  {diff.size_diff / 2**10:>+10.0f} KiB {diff.count_diff:>+9} blocks "
                    f"{diff.traceback}"
                )
        self._snapshot = snap
        return "\n".join(out)


async def dump_on_signals(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """SIGUSR1: the task tree; SIGUSR2: the memory dump (main thread only)."""
    memory = MemoryDumper()
    with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGUSR1:
                log.warning("task dump on SIGUSR1: %d tasks\n%s", count_tasks(), format_task_tree())
            else:
                text = await trio.to_thread.run_sync(memory.dump)
                log.warning("memory dump on SIGUSR2:\n%s", text)
