"""The linearizability checker and the namespace model on hand-written histories, plus
property tests: histories produced by running the model are accepted, a changed answer in a
sequential history is rejected, and on small random histories the checker agrees with a
brute-force enumeration of every order."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dfs.errors import ConnectionLost, DeadlineExceeded, Exists, IOFailure, NotFound, Unavailable
from dfs.testing.lincheck import (
    OK,
    KernelNamespaceModel,
    NamespaceModel,
    Operation,
    Recorder,
    Tree,
    check,
    error_name,
    sequential,
)

pytestmark = pytest.mark.unit

MODEL = NamespaceModel()


def op(
    client: int, invoke: float, response: float | None, name: str, *args: Any, result: Any = OK
) -> Operation:
    return Operation(client, invoke, response, name, args, result)


def verdict(history: list[Operation], initial: Tree | None = None) -> str:
    return check(history, MODEL, initial=initial).outcome


# ---------------------------------------------------------------------------- the model
RULES: list[tuple[Tree, str, tuple[Any, ...], Any, Tree | None]] = [
    # (before, operation, args, answer, after or None when unchanged)
    (Tree(), "mkdir", ("/a",), OK, Tree.of(["/a"])),
    (Tree.of(["/a"]), "mkdir", ("/a",), "EEXIST", None),
    (Tree(), "mkdir", ("/",), "EEXIST", None),
    (Tree(), "mkdir", ("/a/b",), "ENOENT", None),
    (Tree.of(files={"/a": 0}), "mkdir", ("/a/b",), "ENOTDIR", None),
    (Tree.of(files={"/a": 0}), "lookup", ("/a/b/c",), "ENOTDIR", None),
    (Tree.of(files={"/a": 0}), "create", ("/a",), "EEXIST", None),
    (Tree.of(["/a"]), "create", ("/a/f",), OK, Tree.of(["/a"], {"/a/f": 0})),
    (Tree.of(["/a"]), "unlink", ("/a",), "EISDIR", None),
    (Tree(), "unlink", ("/a",), "ENOENT", None),
    (Tree.of(files={"/a": 3}), "unlink", ("/a",), OK, Tree()),
    (Tree.of(files={"/a": 0}), "rmdir", ("/a",), "ENOTDIR", None),
    (Tree.of(["/a"], {"/a/f": 0}), "rmdir", ("/a",), "ENOTEMPTY", None),
    (Tree(), "rmdir", ("/",), "EBUSY", None),
    (Tree.of(["/a"]), "rmdir", ("/a",), OK, Tree()),
    # rename: file over file, dir over empty dir, and their refusals
    (Tree.of(files={"/a": 1, "/b": 2}), "rename", ("/a", "/b"), OK, Tree.of(files={"/b": 1})),
    (Tree.of(["/a", "/b"]), "rename", ("/a", "/b"), OK, Tree.of(["/b"])),
    (Tree.of(["/a", "/b"], {"/b/f": 0}), "rename", ("/a", "/b"), "ENOTEMPTY", None),
    (Tree.of(["/a"], {"/b": 0}), "rename", ("/a", "/b"), "ENOTDIR", None),
    (Tree.of(["/b"], {"/a": 0}), "rename", ("/a", "/b"), "EISDIR", None),
    (Tree.of(["/a"]), "rename", ("/a", "/a/b"), "EINVAL", None),
    (Tree.of(["/a", "/a/b"]), "rename", ("/a", "/a/b/c"), "EINVAL", None),
    (Tree.of(["/a", "/a/b"]), "rename", ("/a/b", "/a"), "ENOTEMPTY", None),
    (Tree.of(["/a"], {"/a/f": 0}), "rename", ("/a/f", "/a"), "ENOTEMPTY", None),
    (Tree(), "rename", ("/a", "/b"), "ENOENT", None),
    (Tree.of(files={"/a": 0}), "rename", ("/a", "/x/b"), "ENOENT", None),
    (Tree.of(files={"/a": 0}), "rename", ("/x/a", "/a/b"), "ENOENT", None),
    (Tree.of(files={"/a": 0}), "rename", ("/a", "/a/b"), "ENOTDIR", None),
    (Tree.of(files={"/a": 0}), "rename", ("/a", "/a"), OK, None),
    (Tree.of(["/a"]), "rename", ("/a", "/"), "EBUSY", None),
    (
        Tree.of(["/a", "/a/d", "/b"], {"/a/d/f": 5}),
        "rename",
        ("/a", "/b/c"),
        OK,
        Tree.of(["/b", "/b/c", "/b/c/d"], {"/b/c/d/f": 5}),
    ),
    # truncate and reads
    (Tree.of(files={"/a": 0}), "truncate", ("/a", 7), OK, Tree.of(files={"/a": 7})),
    (Tree.of(["/a"]), "truncate", ("/a", 7), "EISDIR", None),
    (Tree.of(files={"/a": 0}), "truncate", ("/a", -1), "EINVAL", None),
    (Tree.of(["/d"], {"/d/f": 4}), "stat", ("/d/f",), ("file", 4), None),
    (Tree.of(["/d"]), "stat", ("/d",), ("dir", 0), None),
    (Tree.of(["/d"]), "lookup", ("/d",), "dir", None),
    (Tree.of(["/d"]), "lookup", ("/e",), "ENOENT", None),
    (Tree.of(["/d", "/d/b"], {"/d/a": 0, "/d/c": 0}), "readdir", ("/d",), ("a", "b", "c"), None),
    (Tree.of(["/d"], {"/d/a": 0}), "readdir", ("/",), ("d",), None),
    (Tree.of(files={"/f": 0}), "readdir", ("/f",), "ENOTDIR", None),
    (Tree(), "readdir", ("/f",), "ENOENT", None),
]


@pytest.mark.parametrize(("before", "name", "args", "answer", "after"), RULES)
def test_model_rules(
    before: Tree, name: str, args: tuple[Any, ...], answer: Any, after: Tree | None
) -> None:
    got, state = MODEL.step(before, name, args)
    assert got == answer
    assert state == (before if after is None else after)


def test_model_refuses_malformed_calls() -> None:
    for bad in ("a", "/a/", "/a//b", "/a/../b", "/" + "x" * 256):
        with pytest.raises(ValueError):
            MODEL.step(Tree(), "mkdir", (bad,))
    with pytest.raises(ValueError, match="unknown namespace operation"):
        MODEL.step(Tree(), "chmod", ("/a",))
    with pytest.raises(ValueError, match="parent"):
        Tree.of(files={"/a/b": 0})


def test_trees_compare_by_content() -> None:
    t1 = MODEL.step(Tree(), "mkdir", ("/a",))[1]
    t2 = MODEL.step(MODEL.step(Tree.of(["/b"]), "mkdir", ("/a",))[1], "rmdir", ("/b",))[1]
    assert t1 == t2 and hash(t1) == hash(t2)
    assert t1 != Tree() and t1 != "x"
    assert t1.describe() == "{/a/}"


# ---------------------------------------------------------------------------- linearizable
def test_empty_and_sequential_histories() -> None:
    assert check([], MODEL).ok
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("mkdir", ("/a",)),
        ("create", ("/a/f",)),
        ("rename", ("/a", "/b")),
        ("readdir", ("/b",)),
        ("rmdir", ("/b",)),
        ("unlink", ("/b/f",)),
        ("rmdir", ("/b",)),
        ("lookup", ("/b",)),
    ]
    res = check(sequential(calls), MODEL)
    assert res.ok, res.explain()
    assert [o.name for o in res.linearization] == [c[0] for c in calls]


@pytest.mark.parametrize("seen", ["ENOENT", "dir"])
def test_read_overlapping_a_write_may_see_either_state(seen: str) -> None:
    history = [
        op(1, 0, 10, "mkdir", "/a"),
        op(2, 1, 2, "lookup", "/a", result=seen),
    ]
    assert verdict(history) == "ok"


@pytest.mark.parametrize("first", [1, 2])
def test_concurrent_exclusive_creates_one_wins_in_either_order(first: int) -> None:
    # Whoever's answer arrives first, exactly one create succeeded: linearizable.
    history = [
        op(1, 0, 5 if first == 1 else 6, "create", "/a", result=OK),
        op(2, 1, 6 if first == 1 else 5, "create", "/a", result="EEXIST"),
        op(3, 7, 8, "stat", "/a", result=("file", 0)),
    ]
    assert verdict(history) == "ok"
    # ... even when the loser was invoked first and answered last.
    history = [
        op(1, 0, 9, "create", "/a", result="EEXIST"),
        op(2, 1, 2, "create", "/a", result=OK),
    ]
    assert verdict(history) == "ok"


def test_concurrent_renames_and_reads_with_a_unique_order() -> None:
    # rename a->b and b->c overlap; the reads force a->b first, then b->c.
    history = [
        op(0, 0, 1, "mkdir", "/a"),
        op(1, 2, 10, "rename", "/a", "/b"),
        op(2, 2, 10, "rename", "/b", "/c"),
        op(3, 3, 4, "readdir", "/", result=("b",)),
        op(3, 11, 12, "readdir", "/", result=("c",)),
    ]
    res = check(history, MODEL)
    assert res.ok, res.explain()
    renames = [o.args for o in res.linearization if o.name == "rename"]
    assert renames == [("/a", "/b"), ("/b", "/c")]


def test_unknown_outcome_that_took_effect() -> None:
    history = [
        op(1, 0, None, "create", "/a"),
        op(2, 5, 6, "lookup", "/a", result="file"),
    ]
    res = check(history, MODEL)
    assert res.ok and len(res.linearization) == 2


def test_unknown_outcome_that_never_took_effect() -> None:
    history = [
        op(1, 0, None, "create", "/a"),
        op(2, 5, 6, "lookup", "/a", result="ENOENT"),
        op(2, 7, 8, "mkdir", "/a"),
        op(2, 9, 10, "lookup", "/a", result="dir"),
    ]
    res = check(history, MODEL)
    assert res.ok and len(res.linearization) == 3


def test_unknown_outcome_may_take_effect_long_after_its_client_moved_on() -> None:
    # A lost request can still be committed later: first not visible, then visible.
    history = [
        op(1, 0, None, "mkdir", "/a"),
        op(1, 1, 2, "lookup", "/a", result="ENOENT"),
        op(2, 3, 4, "lookup", "/a", result="ENOENT"),
        op(2, 5, 6, "lookup", "/a", result="dir"),
    ]
    assert verdict(history) == "ok"


def test_unknown_rmdir_explains_a_second_successful_mkdir() -> None:
    history = [
        op(1, 0, 1, "mkdir", "/a"),
        op(1, 2, None, "rmdir", "/a"),
        op(2, 3, 4, "mkdir", "/a"),
    ]
    assert verdict(history) == "ok"


def test_unknown_reads_are_dropped() -> None:
    history = [op(1, 0, None, "lookup", "/zz"), op(1, 0, 1, "mkdir", "/a")]
    res = check(history, MODEL)
    assert res.ok and res.operations == 1


def test_initial_state_is_the_callers() -> None:
    initial = Tree.of(["/p"], {"/p/keep": 0})
    history = [op(1, 0, 1, "rmdir", "/p", result="ENOTEMPTY")]
    assert verdict(history, initial) == "ok"
    assert verdict(history) == "illegal"


# ---------------------------------------------------------------------------- not linearizable
def test_stale_read_after_a_completed_write() -> None:
    history = [
        op(1, 0, 1, "mkdir", "/a"),
        op(2, 2, 3, "lookup", "/a", result="ENOENT"),
    ]
    res = check(history, MODEL)
    assert res.outcome == "illegal"
    assert res.stuck == history[1]
    assert res.expected == "dir"
    assert res.linearization == (history[0],)
    assert res.state == "{/a/}"
    report = res.explain()
    assert "cannot place: client 2" in report and "the model answers 'dir'" in report


def test_two_successful_exclusive_creates() -> None:
    history = [
        op(1, 0, 5, "create", "/a"),
        op(2, 1, 6, "create", "/a"),
    ]
    assert verdict(history) == "illegal"


def test_a_mkdir_that_succeeded_twice() -> None:
    history = [
        op(1, 0, 1, "mkdir", "/a"),
        op(1, 2, 3, "mkdir", "/a"),
    ]
    res = check(history, MODEL)
    assert res.outcome == "illegal" and res.expected == "EEXIST"


def test_a_rename_observed_to_have_moved_twice() -> None:
    history = [
        op(0, 0, 1, "create", "/a"),
        op(1, 2, 6, "rename", "/a", "/b"),
        op(2, 3, 7, "rename", "/a", "/c"),
    ]
    assert verdict(history) == "illegal"
    # The same with one rename's answer lost: both files cannot be seen afterwards.
    history = [
        op(0, 0, 1, "create", "/a"),
        op(1, 2, None, "rename", "/a", "/b"),
        op(2, 3, 7, "rename", "/a", "/c"),
        op(3, 8, 9, "readdir", "/", result=("b", "c")),
    ]
    assert verdict(history) == "illegal"


def test_an_unknown_outcome_cannot_take_effect_before_its_invocation() -> None:
    history = [
        op(1, 0, 1, "lookup", "/a", result="file"),
        op(2, 2, None, "create", "/a"),
    ]
    assert verdict(history) == "illegal"


def test_an_unknown_outcome_takes_effect_at_most_once() -> None:
    history = [
        op(1, 0, None, "create", "/a"),
        op(2, 1, 2, "lookup", "/a", result="file"),
        op(2, 3, 4, "unlink", "/a"),
        op(2, 5, 6, "lookup", "/a", result="file"),
    ]
    assert verdict(history) == "illegal"


def test_answer_before_invocation_is_refused() -> None:
    with pytest.raises(ValueError, match="answered before"):
        check([op(1, 5, 4, "mkdir", "/a")], MODEL)


# ---------------------------------------------------------------------------- bounds
def _hard_illegal_history(width: int) -> list[Operation]:
    """``width`` overlapping creates whose final readdir misses one: every subset of them is
    a distinct state, so refuting it takes about 2**width steps."""
    names = [f"f{i:02d}" for i in range(width)]
    history = [op(i, 0, 10, "create", f"/{n}") for i, n in enumerate(names)]
    history.append(op(99, 11, 12, "readdir", "/", result=tuple(names[1:])))
    return history


def test_node_bound_gives_unknown_not_a_hang() -> None:
    history = _hard_illegal_history(12)
    res = check(history, MODEL, max_nodes=500)
    assert res.outcome == "unknown" and not res.ok
    assert "500 nodes" in res.reason and res.nodes == 501
    assert res.stuck is not None and len(res.linearization) > 0
    assert check(_hard_illegal_history(6), MODEL).outcome == "illegal"


def test_time_budget_gives_unknown() -> None:
    ticks = itertools.count()
    res = check(_hard_illegal_history(12), MODEL, time_budget=1.5, clock=lambda: float(next(ticks)))
    assert res.outcome == "unknown" and "time budget" in res.reason


# ---------------------------------------------------------------------------- recording
def test_recorder_marks_unanswered_operations_unknown() -> None:
    now = iter(range(100))
    rec = Recorder(clock=lambda: float(next(now)))
    a = rec.invoke(1, "mkdir", "/a")
    b = rec.invoke(2, "lookup", "/a")
    c = rec.invoke(3, "create", "/b")
    d = rec.invoke(4, "create", "/c")
    rec.ok(a)
    rec.ok(b, "dir")
    rec.unknown(c)
    with pytest.raises(ValueError, match="already answered"):
        rec.fail(a, "EEXIST")
    h = rec.history()
    assert [o.response for o in h] == [4.0, 5.0, None, None]
    assert h[1].result == "dir" and h[d].args == ("/c",)
    assert check(h, MODEL).ok


def test_error_names() -> None:
    assert error_name(Exists()) == "EEXIST"
    assert error_name(NotFound("x")) == "ENOENT"
    for unknown in (ConnectionLost(), DeadlineExceeded(), Unavailable(), IOFailure()):
        assert error_name(unknown) is None
    assert error_name(RuntimeError()) is None


# ---------------------------------------------------------------------------- properties
PATHS = st.sampled_from(["/a", "/b", "/a/b", "/b/a", "/a/a"])
ONE_PATH = st.sampled_from(["mkdir", "create", "unlink", "rmdir", "lookup", "stat", "readdir"])


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, tuple[Any, ...]]:
    kind = draw(st.sampled_from(["one", "one", "one", "rename", "truncate"]))
    if kind == "rename":
        return "rename", (draw(PATHS), draw(PATHS))
    if kind == "truncate":
        return "truncate", (draw(PATHS), draw(st.integers(0, 2)))
    return draw(ONE_PATH), (draw(PATHS),)


ANSWERS: dict[str, list[Any]] = {
    "lookup": ["dir", "file", "ENOENT", "ENOTDIR"],
    "stat": [("dir", 0), ("file", 0), ("file", 1), "ENOENT", "ENOTDIR"],
    "readdir": [(), ("a",), ("b",), ("a", "b"), "ENOENT", "ENOTDIR"],
}
MUTATION_ANSWERS = [OK, "EEXIST", "ENOENT", "ENOTDIR", "EISDIR", "ENOTEMPTY", "EINVAL"]


def answers(name: str) -> list[Any]:
    return ANSWERS.get(name, MUTATION_ANSWERS)


@settings(max_examples=150, deadline=None)
@given(st.lists(calls(), min_size=1, max_size=25), st.data())
def test_sequential_model_runs_are_accepted_and_any_changed_answer_rejected(
    run: list[tuple[str, tuple[Any, ...]]], data: st.DataObject
) -> None:
    history = sequential(run)
    assert check(history, MODEL).ok
    # The order is total, so every answer is determined: changing one must be caught.
    k = data.draw(st.integers(0, len(history) - 1))
    victim = history[k]
    wrong = data.draw(st.sampled_from([a for a in answers(victim.name) if a != victim.result]))
    mutated = [*history[:k], dataclasses.replace(victim, result=wrong), *history[k + 1 :]]
    res = check(mutated, MODEL)
    assert res.outcome == "illegal"
    assert res.stuck == mutated[k] and res.expected == victim.result
    assert res.linearization == tuple(history[:k])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            calls(), st.floats(0, 3), st.floats(0, 3), st.sampled_from(["done", "lost", "ghost"])
        ),
        min_size=1,
        max_size=25,
    )
)
def test_concurrent_histories_with_consistent_points_are_accepted(
    run: list[tuple[tuple[str, tuple[Any, ...]], float, float, str]],
) -> None:
    """Each operation takes effect at its linearization point ``k`` inside
    ``[k - before, k + after]``; "lost" ones took effect but their answer was lost and "ghost"
    ones (unknown outcome) never took effect."""
    state = MODEL.initial()
    history = []
    for k, ((name, args), before, after, fate) in enumerate(run):
        if fate == "ghost":
            history.append(Operation(k % 4, k - before, None, name, args))
            continue
        answer, state = MODEL.step(state, name, args)
        response = None if fate == "lost" else k + after
        history.append(Operation(k % 4, k - before, response, name, args, answer))
    res = check(history, MODEL)
    assert res.ok, res.explain()


def brute_force(history: list[Operation]) -> bool:
    """Every subset of the unknown operations, every order of it with the completed ones."""
    ops = [o for o in history if o.completed or not MODEL.read_only(o.name)]
    done = [o for o in ops if o.completed]
    lost = [o for o in ops if not o.completed]
    for r in range(len(lost) + 1):
        for extra in itertools.combinations(lost, r):
            for order in itertools.permutations(done + list(extra)):
                if any(
                    b.response is not None and b.response < a.invoke
                    for x, a in enumerate(order)
                    for b in order[x + 1 :]
                ):
                    continue
                state = MODEL.initial()
                for o in order:
                    answer, state = MODEL.step(state, o.name, o.args)
                    if o.completed and answer != o.result:
                        break
                else:
                    return True
    return False


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            calls(),
            st.integers(0, 6),
            st.one_of(st.none(), st.integers(0, 4)),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    ),
    st.data(),
)
def test_checker_agrees_with_brute_force(
    run: list[tuple[tuple[str, tuple[Any, ...]], int, int | None, bool]], data: st.DataObject
) -> None:
    # Answers from one sequential run of the calls (so many histories are legal), some changed.
    state = MODEL.initial()
    history = []
    for client, ((name, args), invoke, duration, change) in enumerate(run):
        answer, state = MODEL.step(state, name, args)
        if change:
            answer = data.draw(st.sampled_from(answers(name)))
        response = None if duration is None else float(invoke + duration)
        history.append(Operation(client, float(invoke), response, name, args, answer))
    assert check(history, MODEL).ok == brute_force(history)


def test_kernel_model_accepts_the_vfs_same_inode_rename() -> None:
    """Two clients rename /c to /b at once and both are told "ok": the second one's kernel
    saw the file at /c and then (after the first rename) at /b, and answered itself."""
    kernel = KernelNamespaceModel()
    start = (Tree.of(files={"/c": 0}), frozenset[tuple[str, str]]())
    both = [
        op(1, 1.0, 2.0, "rename", "/c", "/b"),
        op(2, 1.5, 2.5, "rename", "/c", "/b"),
        op(1, 3.0, 3.5, "lookup", "/c", result="ENOENT"),
        op(2, 3.0, 3.5, "lookup", "/b", result="file"),
    ]
    assert check(both, MODEL, initial=start[0]).outcome == "illegal"
    result = check(both, kernel, initial=start)
    assert result.outcome == "ok", result.explain()
    # Not when /b was made another way (no rename from /c put it there) ...
    made = [
        op(1, 1.0, 2.0, "unlink", "/c"),
        op(1, 2.1, 2.2, "create", "/b"),
        op(2, 3.0, 3.5, "rename", "/c", "/b"),
    ]
    assert check(made, kernel, initial=start).outcome == "illegal"
    # ... nor once /b changed after the rename.
    changed = [
        op(1, 1.0, 2.0, "rename", "/c", "/b"),
        op(1, 2.1, 2.2, "unlink", "/b"),
        op(1, 2.3, 2.4, "create", "/b"),
        op(2, 3.0, 3.5, "rename", "/c", "/b"),
    ]
    assert check(changed, kernel, initial=start).outcome == "illegal"
    # Everything else is the plain model's answer.
    assert kernel.step(start, "rename", ("/c", "/b"))[0] == OK
    assert kernel.step(start, "unlink", ("/x",))[0] == "ENOENT"
