"""Locks between two client machines: each FUSE client runs on its own network-namespace host.

Host h1 runs the metaserver and two chunkservers; the FUSE clients of mounts A and B run on
h2 and h3, so every lock request and every byte crosses the (virtual) network from their
host.  The mounts themselves are made in this process's mount namespace (the client process
joins its host's network namespace only), so the test drives them with ordinary programs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dfs.config import write_config
from dfs.security.ca import init_ca, issue_certificate
from dfs.security.identity import Role
from tests.e2e.localcluster import need_fuse, wait_for
from tests.helpers.netns import Host, NetnsLab, Proc, netns_lab

pytestmark = pytest.mark.netns

DFS = [sys.executable, "-m", "dfs"]


@dataclass
class TwoClients:
    lab: NetnsLab
    tmp: Path
    mounts: dict[str, Path] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)

    def spawn(self, host: Host, name: str, argv: list[str]) -> None:
        self.procs[name] = self.lab.spawn(host, argv, log_path=self.tmp / "logs" / f"{name}.log")

    def mount(self, host: Host, name: str) -> Path:
        """A FUSE client on ``host``; its mount is visible here (root mount namespace)."""
        where = self.tmp / f"mnt-{name}"
        where.mkdir()
        # `ip netns exec` gives the process a mount namespace of its own; nsenter takes it
        # back to the machine's, keeping the host's network.
        argv = [
            "nsenter",
            f"--mount=/proc/{os.getpid()}/ns/mnt",
            "--",
            *DFS,
            "mount",
            str(where),
            "--config",
            str(self.tmp / "client.toml"),
        ]
        self.spawn(host, name, argv)
        wait_for(lambda: os.path.ismount(where), 30, f"mount {name} on {host.name}")
        self.mounts[name] = where
        return where

    def close(self) -> None:
        for where in self.mounts.values():
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
        for proc in self.procs.values():
            if proc.running():
                self.lab.terminate(proc)


@pytest.fixture
def two_clients(tmp_path: Path) -> Iterator[TwoClients]:
    need_fuse()
    with netns_lab(3) as lab:
        h1, h2, h3 = lab.hosts
        ca = tmp_path / "ca"
        init_ca(ca, "netns-locks")
        meta = f"{h1.address}:9420"
        files = {
            "m1": issue_certificate(ca, Role.METASERVER, "m1", tmp_path / "certs" / "m1"),
            "cs1": issue_certificate(ca, Role.CHUNKSERVER, "cs1", tmp_path / "certs" / "cs1"),
            "cs2": issue_certificate(ca, Role.CHUNKSERVER, "cs2", tmp_path / "certs" / "cs2"),
            "client": issue_certificate(ca, Role.CLIENT, "client", tmp_path / "certs" / "client"),
        }

        def tls(name: str) -> dict[str, Path]:
            f = files[name]
            return {"ca": f.ca_cert, "cert": f.cert, "key": f.key}

        write_config(
            tmp_path / "m1.toml",
            {
                "cluster": {"metaservers": [meta]},
                "tls": tls("m1"),
                "metaserver": {"id": "m1", "listen": meta, "data_dir": tmp_path / "data" / "m1"},
            },
        )
        for i, cs in enumerate(("cs1", "cs2")):
            write_config(
                tmp_path / f"{cs}.toml",
                {
                    "cluster": {"metaservers": [meta]},
                    "tls": tls(cs),
                    "chunkserver": {
                        "id": cs,
                        "listen": f"{h1.address}:{9431 + i}",
                        "data_dir": tmp_path / "data" / cs,
                        "zone": cs,
                    },
                },
            )
        write_config(
            tmp_path / "client.toml",
            {"cluster": {"metaservers": [meta]}, "tls": tls("client"), "client": {}},
        )
        tc = TwoClients(lab=lab, tmp=tmp_path)
        try:
            tc.spawn(h1, "m1", [*DFS, "metaserver", "--config", str(tmp_path / "m1.toml")])
            for cs in ("cs1", "cs2"):
                tc.spawn(h1, cs, [*DFS, "chunkserver", "--config", str(tmp_path / f"{cs}.toml")])
            tc.mount(h2, "a")
            tc.mount(h3, "b")
            yield tc
        finally:
            tc.close()


def _group_kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_flock_and_sqlite_between_two_client_hosts(two_clients: TwoClients) -> None:
    a, b = two_clients.mounts["a"], two_clients.mounts["b"]
    (a / "lock").write_bytes(b"")
    holder = subprocess.Popen(
        ["flock", "-x", str(a / "lock"), "sleep", "600"], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["flock", "-n", str(b / "lock"), "true"], check=False).returncode == 0:
            assert time.monotonic() < deadline, "B never saw A's flock"
            time.sleep(0.05)
        waiter = subprocess.Popen(
            [sys.executable, "-c", _WAIT, str(b / "lock")], stdout=subprocess.PIPE
        )
        time.sleep(0.5)
        assert waiter.poll() is None, "B's blocking flock did not wait"
        released = time.time()
        _group_kill(holder)
        out, _ = waiter.communicate(timeout=30)
        latency = float(out) - released
        print(f"\nflock handed from host h2 to host h3 in {latency * 1000:.0f} ms")
        assert latency < 1.0
    finally:
        _group_kill(holder)

    con = sqlite3.connect(a / "counter.db")
    con.execute("create table c (n integer)")
    con.execute("insert into c values (0)")
    con.commit()
    con.close()
    n = 100
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _COUNT, str(m / "counter.db"), str(n)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in (a, b)
    ]
    for p in procs:
        _out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    con = sqlite3.connect(b / "counter.db")
    assert con.execute("select n from c").fetchone() == (2 * n,)
    assert con.execute("pragma integrity_check").fetchone() == ("ok",)
    con.close()


_WAIT = """
import fcntl, sys, time
with open(sys.argv[1], "rb") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    print(time.time(), flush=True)
"""

_COUNT = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=120, isolation_level=None)
for _ in range(int(sys.argv[2])):
    con.execute("begin immediate")
    (v,) = con.execute("select n from c").fetchone()
    con.execute("update c set n = ?", (v + 1,))
    con.execute("commit")
con.close()
"""
