"""``dfs setgoal`` and ``dfs getgoal``: the replication goal of files on a dfs mount.

Like MooseFS's mfssetgoal/mfsgetgoal, these work on paths of a mounted dfs and need no admin
certificate: the mount answers the virtual extended attribute ``user.dfs.goal`` (ASCII
digits) of every regular file and directory, and the kernel and metaserver check the caller's
permission (changing a goal needs ownership or root, like chmod).  With ``-r`` a directory is
walked without following symlinks or crossing into other file systems; symlinks and special
files have no goal and are counted as skipped.

Every failure is one line on stderr (``dfs: error: PATH: ...``); the other paths are still
done and the exit code is 1.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

XATTR_GOAL = "user.dfs.goal"
MIN_GOAL = 1
MAX_GOAL = 16

#: What getxattr of ``user.dfs.goal`` answers on a file system that is not dfs.
_NOT_DFS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA)


class GoalError(Exception):
    """One path failed; the message is the whole line after ``dfs: error: ``."""


def goal_arg(text: str) -> int:
    """argparse type of N."""
    try:
        goal = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"goal must be a number, not {text!r}") from None
    if not MIN_GOAL <= goal <= MAX_GOAL:
        raise argparse.ArgumentTypeError(f"goal must be between {MIN_GOAL} and {MAX_GOAL}")
    return goal


def _explain(path: str, exc: OSError, goal: int | None = None) -> GoalError:
    code = exc.errno
    if code in _NOT_DFS:
        return GoalError(f"{path} is not on a dfs mount")
    if code == errno.EPERM:
        return GoalError(f"{path}: only its owner or root may change its goal")
    if code == errno.ERANGE and goal is not None:
        return GoalError(f"{path}: goal {goal} is more than the number of chunkservers")
    if code == errno.EINVAL and goal is not None:
        return GoalError(f"{path}: goal {goal} was refused as invalid")
    return GoalError(f"{path}: {exc.strerror or exc}")


def _get(path: str, *, follow: bool) -> int:
    try:
        raw = os.getxattr(path, XATTR_GOAL, follow_symlinks=follow)
    except OSError as exc:
        raise _explain(path, exc) from None
    try:
        return int(raw.decode("ascii"))
    except ValueError:
        # Some other file system stores an attribute of that name: not ours.
        raise GoalError(f"{path} is not on a dfs mount") from None


def _set(path: str, goal: int, *, follow: bool) -> None:
    try:
        os.setxattr(path, XATTR_GOAL, str(goal).encode("ascii"), follow_symlinks=follow)
    except OSError as exc:
        raise _explain(path, exc, goal) from None


def _check_top(path: str) -> os.stat_result:
    """``path`` (symlinks followed) is a regular file or directory on a dfs mount."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _explain(path, exc) from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise GoalError(f"{path}: only regular files and directories have a goal")
    _get(path, follow=True)  # refuses paths outside dfs before anything is written
    return st


@dataclass
class _Walk:
    """Counts of a recursive run."""

    files: Counter[int] = field(default_factory=Counter)
    dirs: Counter[int] = field(default_factory=Counter)
    skipped: int = 0
    failed: int = 0


def _tree(top: str, dev: int, walk: _Walk) -> Iterator[tuple[str, bool]]:
    """``(path, is_dir)`` of ``top``'s regular files and directories below it, parents
    before children; symlinks, special files and other file systems are skipped."""
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            _report(_explain(d, exc))
            walk.failed += 1
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError as exc:
                _report(_explain(e.path, exc))
                walk.failed += 1
                continue
            if st.st_dev != dev or not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                walk.skipped += 1
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            yield e.path, is_dir
            if is_dir:
                stack.append(e.path)


def _report(err: GoalError) -> None:
    print(f"dfs: error: {err}", file=sys.stderr)


def _summary(walk: _Walk, label: str) -> None:
    for goal in sorted(walk.files):
        print(f" files {label}{goal}: {walk.files[goal]}")
    for goal in sorted(walk.dirs):
        print(f" directories {label}{goal}: {walk.dirs[goal]}")
    if walk.skipped:
        print(f" symlinks and special files skipped: {walk.skipped}")
    if walk.failed:
        print(f" failed: {walk.failed}")


def _one(path: str, recursive: bool, goal: int | None) -> bool:
    """Get (``goal is None``) or set the goal of ``path``; whether everything succeeded."""
    try:
        st = _check_top(path)
        if goal is not None:
            _set(path, goal, follow=True)
        shown = _get(path, follow=True) if goal is None else goal
    except GoalError as exc:
        _report(exc)
        return False
    if not recursive or not stat.S_ISDIR(st.st_mode):
        print(f"{path}: {shown}")
        return True
    walk = _Walk()
    walk.dirs[shown] += 1
    for p, is_dir in _tree(path, st.st_dev, walk):
        try:
            if goal is not None:
                _set(p, goal, follow=False)
                got = goal
            else:
                got = _get(p, follow=False)
        except GoalError as exc:
            _report(exc)
            walk.failed += 1
            continue
        (walk.dirs if is_dir else walk.files)[got] += 1
    print(f"{path}:")
    _summary(walk, "set to " if goal is not None else "with goal ")
    return walk.failed == 0


def cmd_setgoal(args: argparse.Namespace) -> int:
    ok = True
    for path in args.paths:
        ok = _one(path, args.recursive, args.goal) and ok
    return 0 if ok else 1


def cmd_getgoal(args: argparse.Namespace) -> int:
    ok = True
    for path in args.paths:
        ok = _one(path, args.recursive, None) and ok
    return 0 if ok else 1


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``setgoal`` and ``getgoal`` under the top-level ``dfs`` command."""
    sg = sub.add_parser(
        "setgoal",
        help="set the replication goal of files and directories on a dfs mount",
        description="Set the replication goal (copies of each chunk) of files and "
        "directories on a dfs mount; new files inherit their directory's goal.  Chunks "
        "that already exist keep their copies until re-replication (a later version); "
        "chunks written from now on get N.  Needs ownership of the file or root.",
    )
    sg.add_argument("goal", type=goal_arg, metavar="N", help=f"{MIN_GOAL}..{MAX_GOAL}")
    sg.add_argument("paths", nargs="+", metavar="PATH")
    sg.add_argument("-r", "--recursive", action="store_true", help="whole directory trees")
    sg.set_defaults(func=cmd_setgoal)
    gg = sub.add_parser("getgoal", help="show the replication goal of files on a dfs mount")
    gg.add_argument("paths", nargs="+", metavar="PATH")
    gg.add_argument(
        "-r", "--recursive", action="store_true", help="count the goals in directory trees"
    )
    gg.set_defaults(func=cmd_getgoal)
