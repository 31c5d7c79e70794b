"""Linearizability checking of concurrent namespace histories.

A *history* is what clients observed: every operation with its client, the time it was
invoked, the time its answer arrived, and the answer (a value, ``"ok"``, or an errno name such
as ``"EEXIST"``).  When the answer never arrived, or arrived as an error that does not say
whether the operation took effect (a lost connection, a deadline, an unknown outcome), the
response time is ``None``: the operation may take effect at any point after its invocation,
or never, and any answer is acceptable.

The history is *linearizable* when the operations can be put in one sequence that (1) keeps
every completed operation after every operation that completed before it was invoked
(real time), (2) contains every completed operation and any subset of the unknown ones, and
(3) gives, when run on the sequential ``Model``, exactly the observed answers.

``check`` searches for such a sequence depth first (Wing & Gong), trying at each step only the
*minimal* operations (those invoked before the earliest response still to be linearized) and
never revisiting a (set of linearized operations, model state) pair (Lowe's memoisation).
It does not split the history by key: a rename links two directories, so per-path partitions
are not independent.  The search is bounded by a node count and an optional time budget;
when the bound is hit the verdict is ``"unknown"``, never a hang.  The cost is small when
few operations overlap; each unknown outcome stays a candidate from its invocation on, so
refuting a history with many of them pending at once can take exponential time.

``NamespaceModel`` is the sequential specification of the metaserver's namespace for path
operations (see its docstring).  ``Recorder`` and ``error_name`` help tests record histories
from real clients.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

OK = "ok"
DIR = "dir"
FILE = "file"
ROOT = "/"
NAME_MAX = 255

Outcome = Literal["ok", "illegal", "unknown"]


# ---------------------------------------------------------------------------- history
@dataclass(frozen=True, slots=True)
class Operation:
    """One operation as a client saw it.

    ``result`` is the answer when ``response`` is a time; it is ignored when ``response`` is
    ``None`` (outcome unknown).  ``args`` must be hashable values the model understands.
    """

    client: Hashable
    invoke: float
    response: float | None
    name: str
    args: tuple[Any, ...]
    result: Any = None

    @property
    def completed(self) -> bool:
        return self.response is not None

    def __str__(self) -> str:
        call = f"{self.name}({', '.join(repr(a) for a in self.args)})"
        if self.response is None:
            return f"client {self.client} [{self.invoke:.6f}, ?] {call} -> unknown"
        return (
            f"client {self.client} [{self.invoke:.6f}, {self.response:.6f}] {call} "
            f"-> {self.result!r}"
        )


S = TypeVar("S", bound=Hashable)


class Model(Protocol[S]):
    """A sequential specification.  States are immutable and hashable."""

    def initial(self) -> S:
        """The state before the first operation."""
        ...

    def step(self, state: S, name: str, args: tuple[Any, ...]) -> tuple[Any, S]:
        """The answer of operation ``name(*args)`` in ``state`` and the state after it."""
        ...

    def read_only(self, name: str) -> bool:
        """Whether ``name`` never changes the state (unknown-outcome reads are dropped)."""
        ...

    def describe(self, state: S) -> str:
        """A short human-readable rendering of ``state`` for failure reports."""
        ...


# A model may also define ``steps(state, name, args) -> list[(answer, state)]``: every
# outcome the operation may have (the first one is ``step``'s); the checker tries each.


# ---------------------------------------------------------------------------- result
@dataclass(frozen=True)
class CheckResult:
    """The verdict of ``check``.

    ``linearization`` is the whole order found when ``outcome == "ok"``, otherwise the longest
    linearizable prefix the search reached.  For ``"illegal"`` (and ``"unknown"``), ``stuck``
    is the completed operation that could not be placed after that prefix (the one with the
    earliest response still missing), ``expected`` what the model answers for it there and
    ``state`` the model state after the prefix.
    """

    outcome: Outcome
    operations: int
    nodes: int
    elapsed: float
    linearization: tuple[Operation, ...] = ()
    stuck: Operation | None = None
    expected: Any = None
    state: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def explain(self, *, last: int = 10) -> str:
        """A multi-line report; ``last`` bounds how many prefix operations are listed."""
        head = (
            f"{self.outcome}: {self.operations} operations, {self.nodes} search nodes, "
            f"{self.elapsed:.2f}s"
        )
        lines = [head + (f" ({self.reason})" if self.reason else "")]
        if self.outcome == "ok":
            return lines[0]
        n = len(self.linearization)
        lines.append(f"longest linearizable prefix: {n} operations; its last {min(n, last)}:")
        lines.extend(f"  {op}" for op in self.linearization[-last:])
        if self.stuck is not None:
            lines.append(f"cannot place: {self.stuck}")
            lines.append(f"  the model answers {self.expected!r} after the prefix")
        if self.state:
            lines.append(f"model state after the prefix: {self.state}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.explain()


# ---------------------------------------------------------------------------- checker
@dataclass(slots=True)
class _Frame:
    done: int  # bit i set: operation i is linearized
    state: Any
    left: int  # completed operations not yet linearized
    first_resp: int  # index into by_response of the first one not linearized
    first_inv: int  # index into by_invoke of the first one not linearized
    candidates: list[tuple[int, int]]  # (operation, which of the model's outcomes)
    pos: int = 0


def check(
    history: Iterable[Operation],
    model: Model[S],
    *,
    initial: S | None = None,
    max_nodes: int = 2_000_000,
    time_budget: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Whether ``history`` is linearizable with respect to ``model`` (see the module doc).

    ``initial`` replaces ``model.initial()``.  The search stops with ``"unknown"`` after
    ``max_nodes`` attempted steps or ``time_budget`` seconds of ``clock`` (a CPU-time budget
    for a synchronous search, not protocol timing).
    """
    start = clock()
    # An unknown-outcome read changed nothing and constrains nothing: drop it.
    ops = tuple(op for op in history if op.completed or not model.read_only(op.name))
    for op in ops:
        if op.response is not None and op.response < op.invoke:
            raise ValueError(f"operation answered before it was invoked: {op}")
    init: S = model.initial() if initial is None else initial
    n = len(ops)
    by_invoke = sorted(range(n), key=lambda i: (ops[i].invoke, i))
    by_response = sorted(
        (i for i in range(n) if ops[i].completed), key=lambda i: (ops[i].response, i)
    )
    total = len(by_response)
    #: A model may answer an operation in more than one way (``steps``).
    alternatives: Callable[[Any, str, tuple[Any, ...]], list[tuple[Any, Any]]] | None = getattr(
        model, "steps", None
    )
    chosen: dict[int, int] = {}  # operation -> the outcome it has on the current path
    best_chosen: dict[int, int] = {}  # the same for the longest path found (reports)

    def result(outcome: Outcome, nodes: int, path: list[int], reason: str = "") -> CheckResult:
        lin = tuple(ops[i] for i in path)
        if outcome == "ok":
            return CheckResult(outcome, n, nodes, clock() - start, lin)
        state = init
        done = 0
        for i in path:
            if alternatives is None:
                _answer, state = model.step(state, ops[i].name, ops[i].args)
            else:
                _answer, state = alternatives(state, ops[i].name, ops[i].args)[best_chosen[i]]
            done |= 1 << i
        stuck = next((ops[i] for i in by_response if not done >> i & 1), None)
        expected = model.step(state, stuck.name, stuck.args)[0] if stuck is not None else None
        return CheckResult(
            outcome,
            n,
            nodes,
            clock() - start,
            lin,
            stuck=stuck,
            expected=expected,
            state=model.describe(state),
            reason=reason,
        )

    def frame(done: int, state: S, left: int, first_resp: int, first_inv: int) -> _Frame:
        while done >> by_response[first_resp] & 1:
            first_resp += 1  # left > 0, so an unlinearized completed operation remains
        horizon = ops[by_response[first_resp]].response
        assert horizon is not None
        while first_inv < n and done >> by_invoke[first_inv] & 1:
            first_inv += 1
        # Minimal operations: invoked no later than the earliest pending response.
        candidates = []
        unknown: set[tuple[str, tuple[Any, ...]]] = set()
        k = first_inv
        while k < n and ops[by_invoke[k]].invoke <= horizon:
            i = by_invoke[k]
            k += 1
            if done >> i & 1:
                continue
            if not ops[i].completed:
                # Identical unknown-outcome operations that are both available are
                # interchangeable (neither constrains anything after it): try one of them.
                call = (ops[i].name, ops[i].args)
                if call in unknown:
                    continue
                unknown.add(call)
            candidates.append(i)
        # Try the operation that must go soonest first, unknown outcomes last: a quick success
        # on linearizable histories; the order does not change the verdict.
        candidates.sort(key=lambda i: (ops[i].response is None, ops[i].response or 0.0, i))
        return _Frame(done, state, left, first_resp, first_inv, [(i, 0) for i in candidates])

    if total == 0:
        return result("ok", 0, [])
    stack = [frame(0, init, total, 0, 0)]
    path: list[int] = []
    best: list[int] = []
    seen: set[tuple[int, S]] = set()
    nodes = 0
    while stack:
        f = stack[-1]
        if f.pos == len(f.candidates):
            stack.pop()
            if stack:
                path.pop()
            continue
        i, k = f.candidates[f.pos]
        f.pos += 1
        nodes += 1
        if nodes > max_nodes:
            return result("unknown", nodes, best, f"search bound of {max_nodes} nodes reached")
        if time_budget is not None and nodes % 512 == 0 and clock() - start > time_budget:
            return result("unknown", nodes, best, f"time budget of {time_budget}s exceeded")
        op = ops[i]
        if alternatives is None:
            answer, state = model.step(f.state, op.name, op.args)
        else:
            # A model with several possible outcomes: try them in turn (the next one is
            # queued right after this candidate, so backtracking reaches it).
            outs = alternatives(f.state, op.name, op.args)
            if k >= len(outs):
                continue
            if k + 1 < len(outs):
                f.candidates.insert(f.pos, (i, k + 1))
            answer, state = outs[k]
        if op.completed:
            if answer != op.result:
                continue
        elif state is f.state or state == f.state:
            # An unknown-outcome operation that changes nothing here is the same as one that
            # never happened (which stays possible): skipping it loses no linearization.
            continue
        done = f.done | 1 << i
        key = (done, state)
        if key in seen:
            continue
        seen.add(key)
        path.append(i)
        chosen[i] = k
        if len(path) > len(best):
            best = path.copy()
            if alternatives is not None:
                best_chosen.clear()
                best_chosen.update((j, chosen[j]) for j in path)
        left = f.left - 1 if op.completed else f.left
        if left == 0:
            return result("ok", nodes, path)
        stack.append(frame(done, state, left, f.first_resp, f.first_inv))
    return result("illegal", nodes, best)


# ---------------------------------------------------------------------------- namespace model
def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or ROOT


def _under(path: str, ancestor: str) -> bool:
    """Whether ``path`` lies strictly below ``ancestor``."""
    return path != ancestor and (ancestor == ROOT or path.startswith(ancestor + "/"))


def check_path(path: str) -> None:
    """Raise ValueError unless ``path`` is absolute and normalised with valid names."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"not an absolute path: {path!r}")
    if path == ROOT:
        return
    for name in path[1:].split("/"):
        if not name or name in (".", "..") or "\0" in name or len(name.encode()) > NAME_MAX:
            raise ValueError(f"invalid name {name!r} in path {path!r}")


class Tree:
    """An immutable namespace: normalised path -> ``(kind, size)``; ``"/"`` is always a dir.

    Equal trees hash equally (the checker memoises on them).  Directories have size 0.
    """

    __slots__ = ("_entries", "_hash")

    def __init__(self, entries: Mapping[str, tuple[str, int]] | None = None) -> None:
        d = {ROOT: (DIR, 0)}
        if entries:
            d.update(entries)
        self._entries = d
        self._hash = hash(frozenset(d.items()))

    @classmethod
    def of(cls, dirs: Iterable[str] = (), files: Mapping[str, int] | None = None) -> Tree:
        """A tree with directories ``dirs`` and files ``{path: size}``; parents must be given."""
        entries: dict[str, tuple[str, int]] = {p: (DIR, 0) for p in dirs}
        entries.update({p: (FILE, size) for p, size in (files or {}).items()})
        for p in entries:
            check_path(p)
            parent = _parent(p)
            if parent != ROOT and entries.get(parent, (FILE, 0))[0] != DIR:
                raise ValueError(f"{p!r}: parent {parent!r} is not a directory of the tree")
        return cls(entries)

    def get(self, path: str) -> tuple[str, int] | None:
        return self._entries.get(path)

    def items(self) -> Iterator[tuple[str, tuple[str, int]]]:
        return iter(self._entries.items())

    def children(self, path: str) -> list[str]:
        """Sorted names directly in directory ``path``."""
        return sorted(
            p.rsplit("/", 1)[1] for p in self._entries if p != ROOT and _parent(p) == path
        )

    def has_children(self, path: str) -> bool:
        return any(p != ROOT and _parent(p) == path for p in self._entries)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tree):
            return NotImplemented
        return self is other or (self._hash == other._hash and self._entries == other._entries)

    def __repr__(self) -> str:
        return f"Tree({self.describe()})"

    def describe(self) -> str:
        parts = []
        for p in sorted(self._entries):
            if p == ROOT:
                continue
            kind, size = self._entries[p]
            parts.append(f"{p}/" if kind == DIR else f"{p}" + (f"({size})" if size else ""))
        return "{" + ", ".join(parts) + "}"


class NamespaceModel:
    """The metaserver's namespace semantics for path operations (Linux rules).

    The state is a ``Tree``.  Operations (``args`` are paths, normalised and absolute) and
    their answers; every error leaves the state unchanged:

    ``mkdir(p)``, ``create(p)`` (exclusive, an empty regular file)
        ``"ok"``; ``EEXIST`` when ``p`` exists (``"/"`` included).
    ``unlink(p)``
        removes a non-directory: ``ENOENT`` if missing, ``EISDIR`` for a directory.
    ``rmdir(p)``
        ``ENOENT`` if missing, ``ENOTDIR`` for a file, ``ENOTEMPTY``, ``EBUSY`` for ``"/"``.
    ``rename(src, dst)`` (``renameat2`` with no flags, checks in the metaserver's order)
        ``EBUSY`` if either is ``"/"``; ``ENOENT`` if ``src`` is missing; ``EINVAL`` when the
        directory ``src`` would move into itself or its subtree; ``ENOTEMPTY`` when ``dst`` is
        a directory containing ``src``; ``"ok"`` without change when ``src == dst``;
        ``ENOTDIR`` (dir over non-dir), ``EISDIR`` (non-dir over dir), ``ENOTEMPTY``
        (over a non-empty directory); otherwise ``src`` (with its subtree) replaces ``dst``.
    ``truncate(p, size)``
        ``ENOENT``, ``EISDIR`` for a directory, ``EINVAL`` for a negative size, else ``"ok"``.
    ``lookup(p)``
        ``"dir"`` or ``"file"``; ``stat(p)``: ``(kind, size)``; ``readdir(p)``: the sorted
        tuple of names, ``ENOTDIR`` for a file.  Missing ``p``: ``ENOENT``.

    Before anything else, every operation resolves the parent directory of each path it
    names (the source's first for a rename): a missing component is ``ENOENT``, a component
    that is not a directory ``ENOTDIR``.
    """

    READS = frozenset({"lookup", "stat", "readdir"})
    WRITES = frozenset({"mkdir", "create", "unlink", "rmdir", "rename", "truncate"})

    def initial(self) -> Tree:
        return Tree()

    def read_only(self, name: str) -> bool:
        return name in self.READS

    def describe(self, state: Tree) -> str:
        return state.describe()

    def step(self, state: Tree, name: str, args: tuple[Any, ...]) -> tuple[Any, Tree]:
        handler = getattr(self, f"_op_{name}", None)
        if name not in self.READS | self.WRITES or handler is None:
            raise ValueError(f"unknown namespace operation {name!r}")
        for a in args:
            if isinstance(a, str):
                check_path(a)
        answer, after = handler(state, *args)
        return answer, after

    # ---- helpers
    @staticmethod
    def _walk(t: Tree, path: str) -> str | None:
        """The error resolving the parent directory of ``path`` (None when it is a dir)."""
        if path == ROOT:
            return None
        parts = path[1:].split("/")[:-1]
        cur = ""
        for part in parts:
            cur += "/" + part
            entry = t.get(cur)
            if entry is None:
                return "ENOENT"
            if entry[0] != DIR:
                return "ENOTDIR"
        return None

    @staticmethod
    def _with(t: Tree, add: Mapping[str, tuple[str, int]], drop: Iterable[str] = ()) -> Tree:
        entries = dict(t.items())
        for p in drop:
            del entries[p]
        entries.update(add)
        return Tree(entries)

    # ---- mutations
    def _make(self, t: Tree, path: str, kind: str) -> tuple[Any, Tree]:
        err = self._walk(t, path)
        if err:
            return err, t
        if t.get(path) is not None:
            return "EEXIST", t
        return OK, self._with(t, {path: (kind, 0)})

    def _op_mkdir(self, t: Tree, path: str) -> tuple[Any, Tree]:
        return self._make(t, path, DIR)

    def _op_create(self, t: Tree, path: str) -> tuple[Any, Tree]:
        return self._make(t, path, FILE)

    def _op_unlink(self, t: Tree, path: str) -> tuple[Any, Tree]:
        err = self._walk(t, path)
        if err:
            return err, t
        entry = t.get(path)
        if entry is None:
            return "ENOENT", t
        if entry[0] == DIR:
            return "EISDIR", t
        return OK, self._with(t, {}, [path])

    def _op_rmdir(self, t: Tree, path: str) -> tuple[Any, Tree]:
        if path == ROOT:
            return "EBUSY", t
        err = self._walk(t, path)
        if err:
            return err, t
        entry = t.get(path)
        if entry is None:
            return "ENOENT", t
        if entry[0] != DIR:
            return "ENOTDIR", t
        if t.has_children(path):
            return "ENOTEMPTY", t
        return OK, self._with(t, {}, [path])

    def _op_rename(self, t: Tree, src: str, dst: str) -> tuple[Any, Tree]:
        if ROOT in (src, dst):
            return "EBUSY", t
        err = self._walk(t, src) or self._walk(t, dst)
        if err:
            return err, t
        s = t.get(src)
        if s is None:
            return "ENOENT", t
        d = t.get(dst)
        sp, dp = _parent(src), _parent(dst)
        if s[0] == DIR and (dp == src or _under(dp, src)):
            return "EINVAL", t
        if d is not None and d[0] == DIR and (sp == dst or _under(sp, dst)):
            return "ENOTEMPTY", t
        if src == dst:
            return OK, t
        if d is not None:
            if s[0] == DIR and d[0] != DIR:
                return "ENOTDIR", t
            if s[0] != DIR and d[0] == DIR:
                return "EISDIR", t
            if d[0] == DIR and t.has_children(dst):
                return "ENOTEMPTY", t
        moved: dict[str, tuple[str, int]] = {}
        for p, e in t.items():
            if p == dst:
                continue  # replaced: a file or an empty directory
            if p == src:
                moved[dst] = e
            elif _under(p, src):
                moved[dst + p[len(src) :]] = e
            else:
                moved[p] = e
        return OK, Tree(moved)

    def _op_truncate(self, t: Tree, path: str, size: int) -> tuple[Any, Tree]:
        err = self._walk(t, path)
        if err:
            return err, t
        entry = t.get(path)
        if entry is None:
            return "ENOENT", t
        if entry[0] == DIR:
            return "EISDIR", t
        if size < 0:
            return "EINVAL", t
        return OK, self._with(t, {path: (FILE, size)})

    # ---- reads
    def _read(self, t: Tree, path: str) -> tuple[str, int] | str:
        err = self._walk(t, path)
        if err:
            return err
        return t.get(path) or "ENOENT"

    def _op_lookup(self, t: Tree, path: str) -> tuple[Any, Tree]:
        entry = self._read(t, path)
        return (entry if isinstance(entry, str) else entry[0]), t

    def _op_stat(self, t: Tree, path: str) -> tuple[Any, Tree]:
        return self._read(t, path), t

    def _op_readdir(self, t: Tree, path: str) -> tuple[Any, Tree]:
        entry = self._read(t, path)
        if isinstance(entry, str):
            return entry, t
        if entry[0] != DIR:
            return "ENOTDIR", t
        return tuple(t.children(path)), t


KState = tuple[Tree, frozenset[tuple[str, str]]]


class KernelNamespaceModel:
    """``NamespaceModel`` as seen through the Linux VFS of a FUSE (or NFS) mount.

    The kernel resolves both names of a ``rename`` itself, one lookup after the other, under
    a lock of its own machine only, and answers ``"ok"`` without asking the file system when
    both lead to the same inode (``vfs_rename``: "source == target").  With another client
    renaming ``src`` to ``dst`` between the two lookups, the kernel sees the inode at ``src``
    and then at ``dst``, and says ``"ok"`` for a rename that never happened, although no
    single moment had both names on that inode.  So a ``rename(src, dst)`` may also answer
    ``"ok"`` and change nothing while ``dst`` holds what an earlier successful
    ``rename(src, dst)`` moved there (unchanged since).  (Weaker than the exact rule, which
    also wants that earlier rename to fall inside this operation's interval: the model has no
    clock.)  Every other operation is ``NamespaceModel``'s.
    """

    def __init__(self) -> None:
        self._inner = NamespaceModel()

    def initial(self) -> KState:
        return (self._inner.initial(), frozenset())

    def read_only(self, name: str) -> bool:
        return self._inner.read_only(name)

    def describe(self, state: KState) -> str:
        return state[0].describe()

    def step(self, state: KState, name: str, args: tuple[Any, ...]) -> tuple[Any, KState]:
        tree, moved = state
        answer, after = self._inner.step(tree, name, args)
        if after is tree or answer != OK:
            return answer, state
        # Whatever the operation touched no longer holds what a rename moved there.
        touched = [a for a in args if isinstance(a, str)]
        kept = frozenset(
            (d, src) for d, src in moved if not any(d == t or _under(d, t) for t in touched)
        )
        if name == "rename" and args[0] != args[1]:
            kept |= {(args[1], args[0])}
        return answer, (after, kept)

    def steps(self, state: KState, name: str, args: tuple[Any, ...]) -> list[tuple[Any, KState]]:
        out = [self.step(state, name, args)]
        if name == "rename" and out[0][0] != OK and (args[1], args[0]) in state[1]:
            out.append((OK, state))
        return out


# ---------------------------------------------------------------------------- recording
@dataclass
class _Open:
    client: Hashable
    invoke: float
    name: str
    args: tuple[Any, ...]
    response: float | None = None
    result: Any = None


@dataclass
class Recorder:
    """Collects a history as clients run.  ``clock`` gives the times (``trio.current_time``
    in async tests, so every client shares one clock).

        handle = rec.invoke(client, "mkdir", "/a")
        ...  rec.ok(handle) / rec.ok(handle, value) / rec.fail(handle, "EEXIST")
        ...  rec.unknown(handle), or nothing at all when the client was cancelled

    An operation never answered is recorded with an unknown outcome.
    """

    clock: Callable[[], float]
    _ops: list[_Open] = field(default_factory=list, init=False, repr=False)

    def invoke(self, client: Hashable, name: str, *args: Any) -> int:
        self._ops.append(_Open(client, self.clock(), name, args))
        return len(self._ops) - 1

    def ok(self, handle: int, result: Any = OK) -> None:
        self._answer(handle, result)

    def fail(self, handle: int, error: str) -> None:
        self._answer(handle, error)

    def unknown(self, handle: int) -> None:
        """The outcome will never be known (the default for operations never answered)."""
        if self._ops[handle].response is not None:
            raise ValueError(f"operation {handle} was already answered")

    def _answer(self, handle: int, result: Any) -> None:
        rec = self._ops[handle]
        if rec.response is not None:
            raise ValueError(f"operation {handle} was already answered")
        rec.response = self.clock()
        rec.result = result

    def __len__(self) -> int:
        return len(self._ops)

    def history(self) -> list[Operation]:
        return [
            Operation(o.client, o.invoke, o.response, o.name, o.args, o.result) for o in self._ops
        ]


def error_name(exc: BaseException) -> str | None:
    """The errno name (``"EEXIST"``) of an error that is a definite answer, ``None`` when
    the error leaves the outcome unknown.

    Definite answers are the file-system errors the FUSE boundary maps to an errno other than
    ``EIO``; ``EIO`` errors (timeouts, expired sessions) and cluster errors (lost connection,
    deadline, unavailable, not leader) say nothing about whether a mutation took effect.
    """
    from dfs.client.fuse_adapter import to_errno
    from dfs.errors import FsError

    if not isinstance(exc, FsError):
        return None
    code = to_errno(exc)
    if code == errno.EIO:
        return None
    return errno.errorcode[code]


def sequential(
    calls: Sequence[tuple[str, tuple[Any, ...]]],
    model: Model[S] | None = None,
    *,
    initial: S | None = None,
    client: Hashable = 0,
) -> list[Operation]:
    """A sequential history of ``calls`` with the answers ``model`` gives (tests, examples)."""
    m: Any = model if model is not None else NamespaceModel()
    state = m.initial() if initial is None else initial
    out = []
    for k, (name, args) in enumerate(calls):
        answer, state = m.step(state, name, args)
        out.append(Operation(client, 2.0 * k, 2.0 * k + 1, name, args, answer))
    return out
