"""Histories recorded from real metaservers, checked for linearizability.

Three ``run_metaserver`` instances form a Raft group over real TLS on 127.0.0.1; four client
tasks, each with its own ``RpcMetaClient``, run random namespace operations on a few names
(so they conflict) and record every call with ``trio.current_time()`` at invocation and
answer.  An error that says nothing about whether a mutation took effect (a lost connection,
a deadline, ``Unavailable``, an EIO) is recorded as an unknown outcome.

Every operation is one RPC: the operations address entries of three directories that always
exist (``/``, ``/p``, ``/q``, whose inode numbers the clients know), so the path model's
answer for a path is the metaserver's answer for (parent inode, name).  ``/p`` holds a file
``keep`` that nothing removes, which makes ``rmdir /p`` and renames over ``/p`` answer
``ENOTEMPTY`` or ``EISDIR``, and ``rename /p /p/a`` ``EINVAL``.

The model itself is checked against the pure ``Namespace`` state machine first (sequential
runs resolving paths by lookups), so a rejected history means the replicated service, not the
model, disagrees.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import stat
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from dfs.client.interfaces import Cred
from dfs.client.remote import RpcMetaClient
from dfs.errors import DfsError, FsError, NotADirectory
from dfs.metaserver.namespace import Namespace
from dfs.rpc.client import RpcClientPool
from dfs.security.identity import Role
from dfs.testing.lincheck import (
    OK,
    CheckResult,
    NamespaceModel,
    Operation,
    Recorder,
    Tree,
    check,
    error_name,
)
from dfs.types import ROOT_INODE, InodeId
from tests.helpers.metagroup import MetaGroup, make_group
from tests.metaserver.nsutil import Driver

MODEL = NamespaceModel()
CRED = Cred(uid=0, gid=0)
NAMES = ("a", "b")
PARENTS = ("/", "/p", "/q")
#: The namespace when recording starts (made by ``_setup``).
INITIAL = Tree.of(["/p", "/q"], {"/p/keep": 0})
CLIENTS = 4
OP_TIMEOUT = 5.0


# ---------------------------------------------------------------------------- the model is right
def _resolve(ns: Namespace, path: str) -> tuple[int, bytes]:
    """(parent directory inode, name) of ``path`` by lookups from the root, like the
    kernel's walk of every component but the last: FsError on the way."""
    *dirs, name = path[1:].split("/")
    ino = int(ROOT_INODE)
    for d in dirs:
        attr = ns.lookup(ino, d.encode())
        if not stat.S_ISDIR(attr["mode"]):
            raise NotADirectory(f"{d!r} is not a directory")
        ino = int(attr["ino"])
    return ino, name.encode()


def _kind(attr: dict[str, Any]) -> str:
    return "dir" if stat.S_ISDIR(attr["mode"]) else "file"


def _namespace_answer(d: Driver, name: str, args: tuple[Any, ...]) -> Any:
    """What the pure state machine answers for a path operation (one step of the model)."""
    ns = d.ns
    try:
        if name == "rename":
            sp, sn = _resolve(ns, args[0])
            dp, dn = _resolve(ns, args[1])
            d.do("rename", parent=sp, name=sn, newparent=dp, newname=dn, flags=0)
            return OK
        parent, leaf = _resolve(ns, args[0])
        if name == "mkdir":
            d.do("mkdir", parent=parent, name=leaf, mode=0o755, cred=CRED.to_wire())
        elif name == "create":
            mode = stat.S_IFREG | 0o644
            d.do("mknod", parent=parent, name=leaf, mode=mode, rdev=0, cred=CRED.to_wire())
        elif name in ("unlink", "rmdir"):
            d.do(name, parent=parent, name=leaf)
        else:
            attr = ns.lookup(parent, leaf)
            if name == "truncate":
                d.do("setattr", ino=attr["ino"], size=args[1])
            elif name == "lookup":
                return _kind(attr)
            elif name == "stat":
                return (_kind(attr), attr["size"])
            else:
                assert name == "readdir"
                return tuple(sorted(n.decode() for n, _a in ns.readdir(attr["ino"])))
        return OK
    except FsError as exc:
        return error_name(exc)


CONFORMANCE_PATHS = st.sampled_from(["/a", "/b", "/a/b", "/b/a", "/a/a", "/a/b/a"])


@st.composite
def _calls(draw: st.DrawFn) -> tuple[str, tuple[Any, ...]]:
    name = draw(st.sampled_from([*sorted(MODEL.WRITES), *sorted(MODEL.READS), "rename"]))
    if name == "rename":
        return name, (draw(CONFORMANCE_PATHS), draw(CONFORMANCE_PATHS))
    if name == "truncate":
        return name, (draw(CONFORMANCE_PATHS), draw(st.integers(0, 3)))
    return name, (draw(CONFORMANCE_PATHS),)


@pytest.mark.unit
@settings(max_examples=200, deadline=None)
@given(st.lists(_calls(), max_size=40))
def test_model_matches_the_metaserver_namespace(calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    d = Driver()
    state = MODEL.initial()
    for step, (name, args) in enumerate(calls):
        expected, state = MODEL.step(state, name, args)
        got = _namespace_answer(d, name, args)
        assert got == expected, f"step {step}: {name}{args}: namespace {got!r}, model {expected!r}"
    for path, (kind, _size) in state.items():
        if path != "/":
            assert _namespace_answer(d, "lookup", (path,)) == kind


# ---------------------------------------------------------------------------- a real group
@pytest.fixture
def group(tmp_path: Path) -> Iterator[MetaGroup]:
    yield make_group(tmp_path, ca_name="lincheck")


# ---------------------------------------------------------------------------- clients
def _child(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"


def _random_call(rng: random.Random) -> tuple[str, tuple[Any, ...]]:
    def path() -> str:
        return _child(rng.choice(PARENTS), rng.choice(NAMES))

    r = rng.random()
    if r < 0.15:
        return "mkdir", (path(),)
    if r < 0.30:
        return "create", (path(),)
    if r < 0.40:
        return "unlink", (path(),)
    if r < 0.50:
        return "rmdir", (path(),)
    if r < 0.70:
        return "rename", (path(), path())
    if r < 0.82:
        return "lookup", (path(),)
    if r < 0.92:
        return "readdir", (rng.choice(PARENTS),)
    return rng.choice([("rmdir", ("/p",)), ("rename", (path(), "/p")), ("rename", ("/p", "/p/a"))])


@dataclass
class Client:
    """Runs path operations as single RPCs on the fixed directories and records them.

    With ``sessions`` mutations go through ``RpcMetaClient`` (exactly-once retries when the
    client has sessions); without, they are sent bare with ``request(idempotent=False)``, as
    a client without sessions would: an answer lost with the leader is an unknown outcome.
    """

    ident: int
    meta: RpcMetaClient
    rec: Recorder
    inos: dict[str, InodeId]
    sessions: bool = True

    def _loc(self, path: str) -> tuple[InodeId, bytes]:
        parent, _, name = path.rpartition("/")
        return self.inos[parent or "/"], name.encode()

    def _params(self, name: str, args: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
        """The RPC method and parameters of a mutation (docs/protocol.md)."""
        parent, leaf = self._loc(args[0])
        where = {"parent": parent, "name": leaf}
        if name == "mkdir":
            return "fs.mkdir", {**where, "mode": 0o755, "cred": CRED.to_wire()}
        if name == "create":
            mode = stat.S_IFREG | 0o644
            return "fs.mknod", {**where, "mode": mode, "rdev": 0, "cred": CRED.to_wire()}
        if name in ("unlink", "rmdir"):
            return f"fs.{name}", where
        assert name == "rename"
        newparent, newleaf = self._loc(args[1])
        return "fs.rename", {**where, "newparent": newparent, "newname": newleaf, "flags": 0}

    async def _run(self, name: str, args: tuple[Any, ...]) -> Any:
        m = self.meta
        if name == "readdir":
            return tuple(sorted(n.decode() for n, _a in await m.readdir(self.inos[args[0]])))
        parent, leaf = self._loc(args[0])
        if name == "lookup":
            attr = await m.lookup(parent, leaf)
            return "dir" if stat.S_ISDIR(attr.mode) else "file"
        if not self.sessions:
            await m.request(*self._params(name, args), idempotent=False)
        elif name == "mkdir":
            await m.mkdir(parent, leaf, 0o755, CRED)
        elif name == "create":
            await m.mknod(parent, leaf, stat.S_IFREG | 0o644, 0, CRED)
        elif name == "unlink":
            await m.unlink(parent, leaf)
        elif name == "rmdir":
            await m.rmdir(parent, leaf)
        else:
            assert name == "rename"
            newparent, newleaf = self._loc(args[1])
            await m.rename(parent, leaf, newparent, newleaf, 0)
        return OK

    async def do(self, name: str, *args: Any) -> Any:
        """Run and record one operation; returns the answer (None when unknown)."""
        handle = self.rec.invoke(self.ident, name, *args)
        with trio.move_on_after(OP_TIMEOUT + 5):  # never answered: unknown outcome
            try:
                answer = await self._run(name, args)
            except DfsError as exc:
                err = error_name(exc)
                if err is None:
                    self.rec.unknown(handle)
                    return None
                self.rec.fail(handle, err)
                return err
            self.rec.ok(handle, answer)
            return answer
        return None

    async def work(
        self, rng: random.Random, *, ops: int, until: trio.Event | None = None, tail: int = 0
    ) -> None:
        """``ops`` random operations; when ``until`` is given, stop ``tail`` operations after
        it is set (or at ``ops``)."""
        after = 0
        for _ in range(ops):
            if until is not None and until.is_set():
                if after == tail:
                    return
                after += 1
            await self.do(*_unpack(_random_call(rng)))
            await trio.sleep(rng.uniform(0, 0.005))


def _unpack(call: tuple[str, tuple[Any, ...]]) -> tuple[Any, ...]:
    return (call[0], *call[1])


ClientFactory = Callable[[int], Client]
Scenario = Callable[[MetaGroup, trio.Nursery, ClientFactory], Awaitable[None]]


async def record(
    group: MetaGroup, scenario: Scenario, *, time_limit: float = 60
) -> list[Operation]:
    """Start the group, make the fixed directories, run ``scenario`` with a client factory,
    stop everything; return the recorded history (the setup is not part of it)."""
    rec = Recorder(clock=trio.current_time)
    with trio.fail_after(time_limit):
        async with trio.open_nursery() as nursery:
            for node in group.addresses:
                await group.start(nursery, node)
            async with RpcClientPool(
                group.tls["client"], name="client", expect_roles={Role.METASERVER}
            ) as pool:
                setup = RpcMetaClient(pool, list(group.addresses.values()), op_timeout=20)
                p = await setup.mkdir(ROOT_INODE, b"p", 0o755, CRED)
                q = await setup.mkdir(ROOT_INODE, b"q", 0o755, CRED)
                await setup.mknod(p.ino, b"keep", stat.S_IFREG | 0o644, 0, CRED)
                inos = {"/": ROOT_INODE, "/p": p.ino, "/q": q.ino}

                def client(k: int) -> Client:
                    meta = RpcMetaClient(
                        pool, list(group.addresses.values()), op_timeout=OP_TIMEOUT
                    )
                    # Odd clients send bare mutations (no session, no retry after a loss).
                    return Client(k, meta, rec, inos, sessions=k % 2 == 0)

                await scenario(group, nursery, client)
            nursery.cancel_scope.cancel()
    return rec.history()


def _assert_linearizable(history: list[Operation], seed: int) -> CheckResult:
    res = check(history, MODEL, initial=INITIAL, max_nodes=5_000_000, time_budget=60)
    unknown = sum(1 for o in history if not o.completed)
    print(
        f"seed {seed}: {len(history)} operations ({unknown} unknown outcomes), "
        f"checked in {res.elapsed:.2f}s with {res.nodes} nodes: {res.outcome}"
    )
    assert res.ok, f"seed {seed}\n{res.explain(last=30)}"
    return res


# ---------------------------------------------------------------------------- the tests
async def _run_clients(
    client: Callable[[int], Client],
    seed: int,
    *,
    ops: int,
    until: trio.Event | None = None,
    tail: int = 0,
) -> None:
    async with trio.open_nursery() as workers:
        for k in range(CLIENTS):
            work = functools.partial(
                client(k).work, random.Random(seed + k), ops=ops, until=until, tail=tail
            )
            workers.start_soon(work)


async def test_fault_free_history_is_linearizable(group: MetaGroup) -> None:
    seed = random.randrange(1 << 32)

    async def scenario(
        g: MetaGroup, nursery: trio.Nursery, client: Callable[[int], Client]
    ) -> None:
        await _run_clients(client, seed, ops=50)

    history = await record(group, scenario)
    assert len(history) == CLIENTS * 50
    # Nothing failed, so every answer is known (a lost answer here would be a bug too).
    assert all(o.completed for o in history), [str(o) for o in history if not o.completed]
    res = _assert_linearizable(history, seed)
    # The workload did conflict: some creations found the name taken, some removals and
    # renames found nothing.
    results = {o.result for o in res.linearization}
    assert {"EEXIST", "ENOENT", OK} <= results


async def test_history_across_leader_failovers_is_linearizable(group: MetaGroup) -> None:
    """Six times: kill the leader in the middle of the clients' operations, restart it from
    its data directory a moment later.  Half the clients have sessions (their mutations are
    retried exactly once), half send bare mutations (an answer lost with the leader is an
    unknown outcome)."""
    seed = random.randrange(1 << 32)
    kills: list[str] = []

    async def scenario(
        g: MetaGroup, nursery: trio.Nursery, client: Callable[[int], Client]
    ) -> None:
        faults_done = trio.Event()

        async def faults() -> None:
            rng = random.Random(seed)
            try:
                for _ in range(6):
                    await trio.sleep(rng.uniform(0.2, 0.5))
                    leader = await g.wait_leader()
                    await g.kill(leader)
                    kills.append(leader)
                    await trio.sleep(rng.uniform(0.1, 0.4))
                    await g.start(nursery, leader)
            finally:
                faults_done.set()

        async with trio.open_nursery() as workers:
            workers.start_soon(faults)
            workers.start_soon(
                functools.partial(_run_clients, client, seed, ops=400, until=faults_done, tail=20)
            )

    history = await record(group, scenario)
    assert len(kills) == 6
    # Clients with sessions never lose an answer: their mutations were retried in the
    # session and answered (exactly once) by a later leader.
    lost = [str(o) for o in history if not o.completed and o.client in (0, 2)]
    assert not lost, lost
    _assert_linearizable(history, seed)


async def test_stale_reads_in_a_real_history_are_caught(group: MetaGroup) -> None:
    """A real fault-free history, then sequential probes (read, change, read again).  The
    same history with each second read answered from the snapshot before the change (what a
    replica serving reads without ReadIndex would say) must be rejected at the first one."""
    seed = random.randrange(1 << 32)
    doctored: dict[int, Any] = {}

    async def scenario(
        g: MetaGroup, nursery: trio.Nursery, client: Callable[[int], Client]
    ) -> None:
        await _run_clients(client, seed, ops=15)
        probe = client(CLIENTS)
        for path in ("/q/a", "/a", "/p/b"):
            before = await probe.do("lookup", path)
            change = {"ENOENT": "mkdir", "dir": "rmdir", "file": "unlink"}[before]
            assert await probe.do(change, path) == OK
            await probe.do("lookup", path)
            doctored[len(probe.rec) - 1] = before

    history = await record(group, scenario)
    assert all(o.completed for o in history)
    _assert_linearizable(history, seed)
    broken = [
        dataclasses.replace(o, result=doctored[i]) if i in doctored else o
        for i, o in enumerate(history)
    ]
    res = check(broken, MODEL, initial=INITIAL, time_budget=60)
    assert res.outcome == "illegal", res.explain()
    first = min(doctored)
    assert res.stuck == broken[first]
    assert res.expected == history[first].result
    assert "cannot place" in res.explain()
