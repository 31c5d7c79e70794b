"""Where every trio task of a process is waiting: a dump for an operator on SIGUSR1.

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
"""

from __future__ import annotations

import logging
import signal
import types
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


async def dump_tasks_on_signal(
    signum: int = signal.SIGUSR1, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    """Log ``format_task_tree()`` each time ``signum`` arrives (main thread only)."""
    with trio.open_signal_receiver(signum) as signals:
        task_status.started()
        async for _ in signals:
            log.warning(
                "task dump on %s: %d tasks\n%s",
                signal.Signals(signum).name,
                count_tasks(),
                format_task_tree(),
            )
