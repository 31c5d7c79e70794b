"""Two client machines: each FUSE client runs on its own network-namespace host.

Host h1 runs the metaserver and two chunkservers; the FUSE clients of mounts A and B run on
h2 and h3, so every lock request, every change notification and every byte crosses the
(virtual) network from their host.  The mounts themselves are made in this process's mount
namespace (the client process joins its host's network namespace only), so the test drives
them with ordinary programs.  The clients cache attributes and names for 60 s: what B sees of
A's changes sooner comes from the metaserver's change feed, not from a timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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


#: The clients' kernel cache timeouts: far longer than any wait below.
CACHE_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def two_clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoClients]:
    need_fuse()
    tmp_path = tmp_path_factory.mktemp("netns-clients")
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
            {
                "cluster": {"metaservers": [meta]},
                "tls": tls("client"),
                "client": {"attr_timeout": CACHE_TIMEOUT, "entry_timeout": CACHE_TIMEOUT},
            },
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


def _seen_within(check: Callable[[], bool], limit: float, what: str) -> float:
    """Seconds until ``check()`` holds; fails after ``limit``."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < limit, f"B did not see {what} within {limit} s"
        time.sleep(0.002)
    return time.monotonic() - t0


def _flock_refused(path: Path) -> bool:
    return subprocess.run(["flock", "-n", str(path), "true"], check=False).returncode != 0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def test_changes_on_one_host_reach_the_other_without_waiting_for_timeouts(
    two_clients: TwoClients,
) -> None:
    a, b = two_clients.mounts["a"], two_clients.mounts["b"]
    (a / "co").mkdir()
    seen: dict[str, float] = {}
    # Cache B's view first: a negative name, a directory listing, attributes and pages.
    assert not (b / "co" / "f").exists()
    assert os.listdir(b / "co") == []
    (a / "co" / "f").write_bytes(b"one")
    seen["create"] = _seen_within((b / "co" / "f").exists, 1, "a new file")
    assert (b / "co" / "f").read_bytes() == b"one"
    with open(a / "co" / "f", "ab") as f:
        f.write(b" two")
    seen["append (size)"] = _seen_within(lambda: _size(b / "co" / "f") == 7, 1, "the new size")
    fd = os.open(b / "co" / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 0) == b"one two"
        with open(a / "co" / "f", "r+b") as f:
            f.write(b"ONE")
        seen["overwrite (open fd)"] = _seen_within(
            lambda: os.pread(fd, 100, 0) == b"ONE two", 1, "new bytes through an open fd"
        )
    finally:
        os.close(fd)
    os.chmod(a / "co" / "f", 0o600)
    seen["chmod"] = _seen_within(
        lambda: (b / "co" / "f").stat().st_mode & 0o777 == 0o600, 1, "the new mode"
    )
    os.rename(a / "co" / "f", a / "co" / "g")
    seen["rename"] = _seen_within(
        lambda: not (b / "co" / "f").exists() and (b / "co" / "g").exists(), 1, "the rename"
    )
    os.link(a / "co" / "g", a / "co" / "h")
    seen["link (nlink)"] = _seen_within(
        lambda: (b / "co" / "g").stat().st_nlink == 2, 1, "the new link count"
    )
    os.unlink(a / "co" / "h")
    os.unlink(a / "co" / "g")
    seen["unlink"] = _seen_within(lambda: not (b / "co" / "g").exists(), 1, "the unlink")
    (a / "co" / "sub").mkdir()
    seen["mkdir"] = _seen_within((b / "co" / "sub").is_dir, 1, "the new directory")
    assert sorted(os.listdir(b / "co")) == ["sub"]
    # And the other way round.
    (b / "co" / "sub" / "from-b").write_bytes(b"b")
    seen["create B->A"] = _seen_within((a / "co" / "sub" / "from-b").exists, 1, "B's file on A")
    print(
        "\nchange visible on the other host after (ms): "
        + ", ".join(f"{k} {v * 1000:.1f}" for k, v in seen.items())
    )


def test_appends_from_two_hosts_never_overlap(two_clients: TwoClients) -> None:
    a, b = two_clients.mounts["a"], two_clients.mounts["b"]
    (a / "shared.log").write_bytes(b"")
    n, size = 300, 100
    procs = [
        subprocess.Popen([sys.executable, "-c", _APPEND, str(m / "shared.log"), tag, str(n)])
        for m, tag in ((a, "A"), (b, "B"))
    ]
    for p in procs:
        assert p.wait(120) == 0
    data = (b / "shared.log").read_bytes()
    assert len(data) == 2 * n * size
    records = [data[i : i + size] for i in range(0, len(data), size)]
    for tag in (b"A", b"B"):
        mine = [r for r in records if r.startswith(tag)]
        assert mine == [_record(tag, i, size) for i in range(n)], "lost, torn or reordered"


def _record(tag: bytes, i: int, size: int) -> bytes:
    head = tag + b"%06d " % i
    return head + b"x" * (size - len(head) - 1) + b"\n"


_APPEND = """
import os, sys
path, tag, n = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
for i in range(n):
    head = tag + b"%06d " % i
    os.write(fd, head + b"x" * (100 - len(head) - 1) + b"\\n")
os.close(fd)
"""


def test_a_file_unlinked_on_one_host_stays_usable_on_the_other(two_clients: TwoClients) -> None:
    a, b = two_clients.mounts["a"], two_clients.mounts["b"]
    payload = os.urandom(3 * 2**20)
    (a / "unlinked").write_bytes(payload)
    fd = os.open(b / "unlinked", os.O_RDWR)
    try:
        os.unlink(a / "unlinked")
        _seen_within(lambda: not (b / "unlinked").exists(), 1, "the unlink")
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, len(payload), 0) == payload
        os.pwrite(fd, b"still writable", 2**20)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, 14, 2**20) == b"still writable"
    finally:
        os.close(fd)
    assert not (a / "unlinked").exists()


@contextlib.contextmanager
def _flock_held_on_a(two_clients: TwoClients, name: str) -> Iterator[tuple[Path, Path]]:
    """An exclusive flock on ``name`` held through mount A (until the block ends), already
    refused to B; yields the file's path on A and on B."""
    a, b = two_clients.mounts["a"] / name, two_clients.mounts["b"] / name
    a.write_bytes(b"")
    holder = subprocess.Popen(["flock", "-x", str(a), "sleep", "600"], start_new_session=True)
    try:
        wait_for(lambda: _flock_refused(b), 10, "A's flock seen from B")
        yield a, b
    finally:
        _group_kill(holder)


def test_interrupted_flock_on_one_host_leaves_nothing_queued(two_clients: TwoClients) -> None:
    with _flock_held_on_a(two_clients, "intr.lock") as (path_a, path_b):
        waiter = subprocess.Popen(
            [sys.executable, "-c", _WAIT_INTR, str(path_b)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
        assert waiter.poll() is None, "B's flock did not wait"
        t0 = time.monotonic()
        waiter.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = waiter.communicate(timeout=10)
        took = time.monotonic() - t0
        assert out.strip() == "EINTR", out
        print(f"\ninterrupted flock on h3 returned after {took * 1000:.0f} ms")
        assert took < 1.0
    # Had B's request stayed queued, it would now hold the lock and A's try would fail.
    time.sleep(0.3)
    ok = subprocess.run(["flock", "-n", str(path_a), "true"], check=False)
    assert ok.returncode == 0


def test_killed_client_host_loses_its_locks_within_ten_seconds(two_clients: TwoClients) -> None:
    with _flock_held_on_a(two_clients, "dead.lock") as (_path_a, path_b):
        t0 = time.monotonic()
        two_clients.lab.kill9(two_clients.procs["a"])  # kill -9 of A's client process
        ok = subprocess.run(["flock", "-w", "20", str(path_b), "true"], check=False)
        freed = time.monotonic() - t0
    assert ok.returncode == 0
    print(f"\nlock of the killed client on h2 freed for h3 after {freed:.1f} s")
    assert freed < 10.0, freed


_WAIT_INTR = """
import fcntl, signal, sys
class Interrupted(Exception):
    pass
def stop(*_):
    raise Interrupted  # Python retries a call that fails with EINTR unless the handler raises
signal.signal(signal.SIGINT, stop)
with open(sys.argv[1], "rb") as f:
    try:
        fcntl.flock(f, fcntl.LOCK_EX)
        print("LOCKED", flush=True)
    except Interrupted:
        print("EINTR", flush=True)
"""
