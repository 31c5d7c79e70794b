"""Test driver of the pure Namespace: a fake leader clock, atomicity and invariant checks.

Every ``do`` applies one command with a strictly increasing ``now_ns``; when the command fails
it asserts that the state did not change (a failed command changes nothing), and after every
command it asserts the schema invariants hold.
"""

from __future__ import annotations

import stat
from typing import Any

import msgpack

from dfs.errors import FsError
from dfs.metaserver.invariants import check
from dfs.metaserver.namespace import Namespace
from dfs.types import ROOT_INODE

ROOT = int(ROOT_INODE)
USER = {"uid": 1000, "gid": 1000}
T0 = 1_700_000_000_000_000_000


class Driver:
    def __init__(self, goal: int = 2) -> None:
        self.ns = Namespace()
        self.now = T0
        self.do("init", goal=goal, cluster_id="test-cluster")

    def tick(self) -> int:
        self.now += 1000
        return self.now

    def state(self) -> dict[str, Any]:
        """The snapshot without the session table (a failed command of a session records
        its outcome there: that is the only change it makes)."""
        data: dict[str, Any] = msgpack.unpackb(
            self.ns.snapshot_state(), raw=False, strict_map_key=False
        )
        data.pop("sessions", None)
        return data

    def do(self, op: str, **args: Any) -> Any:
        before = self.state()
        try:
            result = self.ns.apply({"op": op, "now_ns": self.tick(), **args})
        except FsError:
            assert self.state() == before, f"failed {op} changed the state"
            raise
        problems = check(self.ns)
        assert not problems, problems
        return result

    # ---- shorthands returning inode numbers ----
    def mkdir(
        self, parent: int, name: bytes, mode: int = 0o755, cred: dict[str, int] = USER
    ) -> int:
        return int(self.do("mkdir", parent=parent, name=name, mode=mode, cred=cred)["ino"])

    def create(
        self, parent: int, name: bytes, mode: int = 0o644, cred: dict[str, int] = USER
    ) -> int:
        attr = self.do(
            "mknod", parent=parent, name=name, mode=stat.S_IFREG | mode, rdev=0, cred=cred
        )
        return int(attr["ino"])

    def attr(self, ino: int) -> dict[str, Any]:
        return self.ns.getattr(ino)

    def names(self, ino: int) -> list[bytes]:
        return [name for name, _attr in self.ns.readdir(ino)]
