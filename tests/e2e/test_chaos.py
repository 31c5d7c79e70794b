"""A seeded chaos test: a workload on two client hosts while faults come and go.

The cluster runs on network-namespace hosts: metaservers m1..m3 on h1..h3 (one Raft group),
chunkservers cs1..cs3 on h4..h6 (goal 2; each data directory on a tmpfs of its own, so that
a fault can fill it), and two FUSE clients c1 and c2 on h7 and h8 (their mounts are visible in
this process's mount namespace, as in test_netns_locks; kernel caches off, so every lookup and
stat asks the metaserver).  ``tests/helpers/chaos.py`` runs a schedule of faults made from one
seed (kill -9 and restart of any metaserver, the leader included, and of chunkservers, pauses,
hosts cut off, partitions, client-to-chunkserver links cut, flipped bytes in chunk files, a
full disk) while one worker process per mount runs a workload made from the same seed:

* files of known (seeded) content written under a temporary name and fsynced (acknowledged when
  fsync returned), then renamed to their final name;
* directory churn (mkdir/rmdir);
* namespace operations (mkdir, rmdir, create, unlink, rename, lookup) from both clients on three
  shared names, recorded as a history with invoke and response times;
* a counter file incremented under an fcntl lock (F_SETLKW) from both clients: read, write
  the value plus one, fsync, unlock; acknowledged when fsync returned.

An operation that fails with EIO (or another error saying nothing about its outcome) is
recorded as an error and never counted as acknowledged.  Afterwards every fault is healed and
what is down restarted; once the cluster has settled (bounded): every acknowledged file reads
back with its content through both mounts, the counter lies between the number of acknowledged
increments and that plus the increments whose outcome is unknown (exactly the acknowledged
number when none is unknown), ``dfs fsck`` exits 0, ``dfs fsck --verify`` finds no corrupt
replica the scrubbers left (the ones it finds are repaired and counted), and both histories
(namespace; counter) are linearizable (``dfs/testing/lincheck.py``; the namespace one against
``KernelNamespaceModel``: the Linux VFS answers a rename whose two names it found on one inode
by itself, which two clients renaming the same name at once can make happen).

Short form (in the suite, marked netns + slow): one seed, ``SUITE_FAULTS`` faults, about two
minutes.  Long form::

    python -m tests.e2e.test_chaos --seeds 10 --faults 50 [--first-seed 1] [--keep DIR]

prints one row per seed (seed, faults, acknowledged writes, lock increments, errors, result).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dfs.config import load_config, write_config
from dfs.security.ca import init_ca, issue_certificate
from dfs.security.identity import Role
from dfs.testing.lincheck import KernelNamespaceModel, Operation, check
from tests.helpers.chaos import Chaos, make_schedule
from tests.helpers.netns import REPO_ROOT, Host, NetnsLab, Proc, netns_lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

DFS = [sys.executable, "-m", "dfs"]
META = ["m1", "m2", "m3"]
CHUNK = ["cs1", "cs2", "cs3"]
CLIENTS = ["c1", "c2"]
META_PORT = 9420
CHUNK_PORT = 9430
#: Size of each chunkserver's tmpfs: room for every byte a long run writes (about 400 MiB
#: acknowledged in 50 faults, 800 MiB with goal 2), so that a full cluster is only ever a
#: fault's doing.
CHUNK_FS_MIB = 768
#: Faults of the short form in the suite (about two minutes).
SUITE_FAULTS = 20
SUITE_SEED = int(os.environ.get("DFS_CHAOS_SEED", "1"))
#: Seconds of workload before the schedule starts.
WARMUP = 5.0
#: Bounded waits.
START_TIMEOUT = 60.0
SETTLE_TIMEOUT = 120.0
#: How long ``dfs fsck`` may take to become clean once the cluster is healthy.
FSCK_TIMEOUT = 60.0
#: Reading every acknowledged file back through both mounts.
READ_TIMEOUT = 300.0
WORKER_STOP_TIMEOUT = 90.0
CMD_TIMEOUT = 120.0
#: Errors that leave an operation's outcome unknown.
UNKNOWN_ERRNOS = frozenset({"EIO", "ETIMEDOUT", "ENOTCONN", "EINTR", "ECONNABORTED"})
LIN_NAMES = ("a", "b", "c")
BAD_LOG_MARKERS = ("Traceback", " CRITICAL ")

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the cluster
@dataclass
class ChaosRig:
    """The cluster of the module docstring; implements ``tests.helpers.chaos.ChaosCluster``."""

    lab: NetnsLab
    tmp: Path
    hosts: dict[str, Host] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    mounts: dict[str, Path] = field(default_factory=dict)
    tmpfs: list[Path] = field(default_factory=list)
    counter_chunks: set[int] = field(default_factory=set)
    restarts: int = 0

    @property
    def admin_toml(self) -> Path:
        return self.tmp / "admin.toml"

    def host_of(self, name: str) -> Host:
        return self.hosts[name]

    def proc(self, name: str) -> Proc:
        return self.procs[name]

    def config(self, name: str) -> Path:
        return self.tmp / "conf" / f"{name}.toml"

    def start(self, name: str) -> None:
        role = "metaserver" if name.startswith("m") else "chunkserver"
        if name in self.procs:
            self.restarts += 1
        self.procs[name] = self.lab.spawn(
            self.hosts[name],
            [*DFS, role, "--config", str(self.config(name))],
            log_path=self.tmp / "logs" / f"{name}.log",
        )

    def fs_root(self, name: str) -> Path:
        return self.tmp / "fs" / name

    def chunk_dir(self, name: str) -> Path:
        return self.fs_root(name) / "data" / "chunks"

    def fill_path(self, name: str) -> Path:
        return self.fs_root(name) / "filler"

    def leader(self) -> str | None:
        try:
            st = status(self.admin_toml, timeout=3.0)
        except Exception:
            return None
        node = st.get("node")
        return str(node) if node else None

    def excluded_chunks(self) -> set[int]:
        return set(self.counter_chunks)

    def chunks_below_par(self) -> set[int] | None:
        import trio

        from dfs.cli.admin import admin_call

        try:
            cfg = load_config(self.admin_toml)
            report = trio.run(
                admin_call, cfg, "admin.fsck", {"orphan_age": 3600, "verify": False}, 5.0
            )
        except Exception:
            return None
        out: set[int] = set()
        for kind in ("missing", "under_goal", "stale_replicas", "corrupt_replicas"):
            if len(report.get(kind, [])) < report["counts"].get(kind, 0):
                return None  # the list was cut short
            out.update(int(e["chunk_id"]) for e in report.get(kind, []))
        return out

    def mount(self, name: str) -> None:
        where = self.tmp / f"mnt-{name}"
        where.mkdir(exist_ok=True)
        argv = [
            "nsenter",
            f"--mount=/proc/{os.getpid()}/ns/mnt",
            "--",
            *DFS,
            "mount",
            str(where),
            "--config",
            str(self.config("client")),
        ]
        self.procs[name] = self.lab.spawn(
            self.hosts[name], argv, log_path=self.tmp / "logs" / f"{name}.log"
        )
        wait_until(lambda: os.path.ismount(where), START_TIMEOUT, f"mount of {name}")
        self.mounts[name] = where

    def dfs(self, *args: str, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*DFS, *args, "--config", str(self.admin_toml)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def log_problems(self) -> list[str]:
        problems = []
        for log_file in sorted((self.tmp / "logs").glob("*.log")):
            lines = log_file.read_text(errors="replace").splitlines()
            for i, line in enumerate(lines):
                if any(marker in line for marker in BAD_LOG_MARKERS):
                    problems.append(f"{log_file.name}: " + "\n".join(lines[i : i + 20]))
                    break
        return problems

    def close(self) -> None:
        for name in CLIENTS:
            where = self.mounts.get(name)
            if where is not None:
                subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
        for name in [*CLIENTS, *CHUNK, *META]:
            proc = self.procs.get(name)
            if proc is not None and proc.running():
                self.lab.terminate(proc, timeout=5.0)
        for where in self.tmpfs:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def status(admin_toml: Path, timeout: float = 5.0) -> dict[str, Any]:
    from dfs.cli.admin import fetch_status

    return fetch_status(load_config(admin_toml), timeout=timeout)


def wait_until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def healthy(rig: ChaosRig) -> bool:
    """A leader, every metaserver in the group and every chunkserver alive."""
    try:
        st = status(rig.admin_toml, timeout=5.0)
    except Exception:
        return False
    roles = sorted(m.get("role", "") for m in st.get("metaservers", []))
    alive = {c["id"] for c in st.get("chunkservers", []) if c.get("state") == "alive"}
    return roles == ["follower", "follower", "leader"] and alive == set(CHUNK)


@contextlib.contextmanager
def chaos_rig(tmp: Path) -> Iterator[ChaosRig]:
    """Start the cluster of the module docstring under ``tmp``; stop and remove it on exit."""
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("the chaos test needs root and /dev/fuse")
    with netns_lab(len(META) + len(CHUNK) + len(CLIENTS)) as lab:
        rig = ChaosRig(lab=lab, tmp=tmp)
        try:
            _configure(rig)
            for name in [*META, *CHUNK]:
                rig.start(name)
            wait_until(lambda: healthy(rig), START_TIMEOUT, "cluster start")
            for name in CLIENTS:
                rig.mount(name)
            yield rig
        finally:
            rig.close()


def _configure(rig: ChaosRig) -> None:
    tmp, hosts = rig.tmp, rig.lab.hosts
    for name, host in zip([*META, *CHUNK, *CLIENTS], hosts, strict=True):
        rig.hosts[name] = host
    (tmp / "conf").mkdir(parents=True)
    (tmp / "logs").mkdir()
    ca = tmp / "ca"
    init_ca(ca, "chaos")
    meta_addrs = [f"{rig.hosts[m].address}:{META_PORT}" for m in META]
    members = [f"{m}={a}" for m, a in zip(META, meta_addrs, strict=True)]

    def tls(name: str, role: Role, host: str | None = None) -> dict[str, Path]:
        hosts = (host,) if host else ("127.0.0.1",)
        f = issue_certificate(ca, role, name, tmp / "certs" / name, hosts=hosts)
        return {"ca": f.ca_cert, "cert": f.cert, "key": f.key}

    for m, addr in zip(META, meta_addrs, strict=True):
        write_config(
            rig.config(m),
            {
                "cluster": {"metaservers": meta_addrs},
                "tls": tls(m, Role.METASERVER, rig.hosts[m].address),
                "metaserver": {
                    "id": m,
                    "listen": addr,
                    "data_dir": tmp / "data" / m,
                    "members": members,
                },
            },
        )
    for cs in CHUNK:
        root = rig.fs_root(cs)
        root.mkdir(parents=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={CHUNK_FS_MIB}m", "tmpfs", str(root)],
            check=True,
            capture_output=True,
        )
        rig.tmpfs.append(root)
        write_config(
            rig.config(cs),
            {
                "cluster": {"metaservers": meta_addrs},
                "tls": tls(cs, Role.CHUNKSERVER, rig.hosts[cs].address),
                "chunkserver": {
                    "id": cs,
                    "listen": f"{rig.hosts[cs].address}:{CHUNK_PORT}",
                    "data_dir": root / "data",
                    "zone": cs,
                    # Small stores: a full pass every 10 s finds flipped bytes during the run.
                    "scrub_rate": 64.0,
                    "scrub_interval": 10.0,
                },
            },
        )
    write_config(
        rig.config("client"),
        {
            "cluster": {"metaservers": meta_addrs},
            "tls": tls("client", Role.CLIENT),
            # No kernel caching: every lookup and stat is a metaserver read (linearizable).
            "client": {"attr_timeout": 0.0, "entry_timeout": 0.0, "op_timeout": 60.0},
        },
    )
    write_config(
        rig.admin_toml,
        {"cluster": {"metaservers": meta_addrs}, "tls": tls("admin", Role.ADMIN)},
    )


# ---------------------------------------------------------------- the workload (a process)
def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


class Worker:
    """One client's workload on ``mount``; every record is a JSON line in ``out``."""

    def __init__(self, mount: Path, client: str, seed: int, out: Path, stop: Path) -> None:
        self.mount, self.client, self.seed, self.stop = mount, client, seed, stop
        self.rng = random.Random(f"{seed}-{client}")
        self.out = open(out, "a")  # noqa: SIM115 (closed in run)
        self.ids = 0
        self.files = 0

    def emit(self, **record: Any) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def run(self) -> None:
        ops = [self.write_file, self.churn, self.lin, self.increment]
        weights = [4, 1, 4, 3]
        try:
            while not self.stop.exists():
                op = self.rng.choices(ops, weights)[0]
                try:
                    op()
                except OSError as exc:
                    self.emit(t="err", op=op.__name__, errno=_errno_name(exc), msg=str(exc))
        finally:
            self.out.close()

    def write_file(self) -> None:
        self.files += 1
        name = f"{self.client}-{self.files:05d}"
        size = self.rng.randrange(1, 300_000)
        data = random.Random(f"{self.seed}-{name}").randbytes(size)
        tmp = self.mount / "files" / f"{name}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            self.emit(t="file", name=name, size=size, sha=hashlib.sha256(data).hexdigest())
        finally:
            try:
                os.close(fd)
            except OSError as exc:
                self.emit(t="err", op="close", errno=_errno_name(exc), msg=str(exc))
        try:
            os.rename(tmp, self.mount / "files" / name)
            self.emit(t="rename", name=name, result="ok")
        except OSError as exc:
            self.emit(t="rename", name=name, result=_errno_name(exc))
            raise

    def churn(self) -> None:
        path = self.mount / "churn" / f"{self.client}-{self.rng.randrange(10)}"
        if path.is_dir():
            inner = path / "f"
            if self.rng.random() < 0.5:
                inner.write_bytes(b"x")
                inner.unlink()
            os.rmdir(path)
        else:
            os.mkdir(path)

    def lin(self) -> None:
        rng = self.rng
        kind = rng.choices(
            ["mkdir", "rmdir", "create", "unlink", "rename", "lookup"], [2, 2, 2, 2, 3, 3]
        )[0]
        a, b = rng.choice(LIN_NAMES), rng.choice(LIN_NAMES)
        args = ("/" + a, "/" + b) if kind == "rename" else ("/" + a,)
        real = [self.mount / "lin" / p.lstrip("/") for p in args]
        self.ids += 1
        ident = self.ids
        self.emit(t="inv", id=ident, kind="ns", name=kind, args=args, at=time.monotonic())
        result: Any = "ok"
        try:
            if kind == "mkdir":
                os.mkdir(real[0])
            elif kind == "rmdir":
                os.rmdir(real[0])
            elif kind == "create":
                fd = os.open(real[0], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with contextlib.suppress(OSError):
                    os.close(fd)
            elif kind == "unlink":
                os.unlink(real[0])
            elif kind == "rename":
                os.rename(real[0], real[1])
            else:
                mode = os.lstat(real[0]).st_mode
                result = "dir" if stat.S_ISDIR(mode) else "file"
        except OSError as exc:
            result = _errno_name(exc)
        at = time.monotonic()
        if result in UNKNOWN_ERRNOS:
            self.emit(t="unk", id=ident, error=result)
        else:
            self.emit(t="res", id=ident, result=result, at=at)

    def increment(self) -> None:
        fd = os.open(self.mount / "counter", os.O_RDWR)
        self.ids += 1
        ident = self.ids
        stage = "lock"
        self.emit(t="inv", id=ident, kind="counter", name="incr", args=(), at=time.monotonic())
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            stage = "read"
            raw = os.pread(fd, 20, 0)
            value = int(raw.strip(b"\0 ") or b"0")
            stage = "write"
            os.pwrite(fd, f"{value + 1:020d}".encode(), 0)
            os.fsync(fd)
            self.emit(t="res", id=ident, result=value, at=time.monotonic())
            stage = "unlock"
            fcntl.lockf(fd, fcntl.LOCK_UN)
        except OSError as exc:
            if stage in ("lock", "read"):
                # Nothing was written: the increment did not happen.
                self.emit(t="none", id=ident, error=_errno_name(exc), stage=stage)
            elif stage == "write":
                self.emit(t="unk", id=ident, error=_errno_name(exc))
            raise
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)


# ---------------------------------------------------------------- the run
@dataclass
class Outcome:
    seed: int
    faults: int = 0
    files_acked: int = 0
    increments_acked: int = 0
    increments_unknown: int = 0
    errors: int = 0
    ns_ops: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


class CounterModel:
    """A counter: ``incr()`` answers the value before it adds one."""

    def initial(self) -> int:
        return 0

    def step(self, state: int, name: str, args: tuple[Any, ...]) -> tuple[Any, int]:
        assert name == "incr", name
        return state, state + 1

    def read_only(self, name: str) -> bool:
        return False

    def describe(self, state: int) -> str:
        return str(state)


def _read_records(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line cut by kill -9
            out.append(json.loads(line))
    return out


def _histories(
    records: dict[str, list[dict[str, Any]]],
) -> tuple[list[Operation], list[Operation]]:
    ns: list[Operation] = []
    counter: list[Operation] = []
    for client, recs in records.items():
        invoked: dict[int, dict[str, Any]] = {}
        answers: dict[int, dict[str, Any]] = {}
        for r in recs:
            if r["t"] == "inv":
                invoked[r["id"]] = r
            elif r["t"] in ("res", "unk", "none"):
                answers[r["id"]] = r
        for ident, inv in invoked.items():
            ans = answers.get(ident)
            if ans is not None and ans["t"] == "none":
                continue  # certainly no effect
            c: Hashable = client
            op = Operation(
                client=c,
                invoke=float(inv["at"]),
                response=float(ans["at"]) if ans is not None and ans["t"] == "res" else None,
                name=str(inv["name"]),
                args=tuple(inv["args"]),
                result=ans["result"] if ans is not None and ans["t"] == "res" else None,
            )
            (ns if inv["kind"] == "ns" else counter).append(op)
    return ns, counter


def _fsck(rig: ChaosRig, *extra: str) -> tuple[int, dict[str, Any] | str]:
    proc = rig.dfs("fsck", "--json", *extra)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except json.JSONDecodeError:
        return proc.returncode, (proc.stdout + proc.stderr)[-2000:]


def _fsck_summary(report: dict[str, Any] | str) -> str:
    if isinstance(report, str):
        return report
    counts = {k: v for k, v in report.get("counts", {}).items() if v}
    listed = {k: report.get(k, [])[:5] for k in counts}
    return f"counts {counts}, namespace {report.get('namespace', [])[:5]}, first {listed}"


def run_chaos(seed: int, faults: int, tmp: Path) -> Outcome:
    """One seed: cluster, workload and schedule, then every check.  Never raises for what
    it finds; ``Outcome.problems`` lists it."""
    t_start = time.monotonic()
    out = Outcome(seed=seed)
    with chaos_rig(tmp) as rig:
        m1 = rig.mounts["c1"]
        for d in ("files", "churn", "lin"):
            (m1 / d).mkdir()
        with open(m1 / "counter", "wb") as f:
            f.write(f"{0:020d}".encode())
            os.fsync(f.fileno())
        info = rig.dfs("info", "--json", str(m1 / "counter"))
        if info.returncode == 0:
            rig.counter_chunks = {int(c["chunk_id"]) for c in json.loads(info.stdout)["chunks"]}
        else:
            out.notes.append(f"dfs info of the counter failed: {info.stderr.strip()}")
        stop = tmp / "stop"
        workers: dict[str, subprocess.Popen[bytes]] = {}
        for client in CLIENTS:
            workers[client] = subprocess.Popen(
                [
                    *(sys.executable, "-m", "tests.e2e.test_chaos", "worker"),
                    *("--mount", str(rig.mounts[client]), "--client", client),
                    *("--seed", str(seed), "--out", str(tmp / f"records-{client}.jsonl")),
                    *("--stop", str(stop)),
                ],
                cwd=REPO_ROOT,
                stdout=open(tmp / "logs" / f"worker-{client}.log", "ab"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Spare faults at the end stand in for any that cannot be made (a corruption with
        # no chunk fit for it), so that ``faults`` of them really happen.
        schedule = make_schedule(seed, faults + max(2, faults // 10), META, CHUNK, CLIENTS)
        (tmp / "schedule.txt").write_text("".join(f"{f}\n" for f in schedule))
        chaos = Chaos(
            rig, schedule, log_path=tmp / "faults.log", metaservers=META, chunkservers=CHUNK
        )
        try:
            # The workload under way before the first fault (and chunks old enough to be
            # corrupted: QUIET_CHUNK_AGE).
            time.sleep(WARMUP)
            chaos.run(at_least=faults)
            time.sleep(2.0)
        finally:
            for what in chaos.heal_everything():
                out.notes.append(f"after the schedule: {what}")
            stop.touch()
            deadline = time.monotonic() + WORKER_STOP_TIMEOUT
            for client, w in workers.items():
                try:
                    w.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    out.problems.append(
                        f"worker {client} did not stop: killed (the task dump of its mount "
                        f"is in logs/{client}.log)"
                    )
                    # Where the mount's requests wait: its log gets a task dump.
                    subprocess.run(
                        ["pkill", "-USR1", "-f", f"-m dfs mount {rig.mounts[client]} "],
                        check=False,
                    )
                    time.sleep(2.0)
                    os.killpg(w.pid, 9)
                    w.wait(10)
                if w.returncode not in (0, None, -9):
                    out.problems.append(f"worker {client} exited {w.returncode}")
        out.faults = sum(1 for e in chaos.events if e.what == "begin")
        out.notes.append(f"faults by kind: {chaos.counts()}")
        skipped = [str(e) for e in chaos.events if e.what == "skip"]
        if skipped:
            out.notes.append(f"{len(skipped)} faults skipped: {skipped[:5]}")
        _check(rig, tmp, out, len(chaos.corrupted))
    out.seconds = time.monotonic() - t_start
    (tmp / "outcome.json").write_text(json.dumps(vars(out), indent=2))
    return out


def _check(rig: ChaosRig, tmp: Path, out: Outcome, corrupted: int) -> None:
    # Settle: all daemons back (bounded), then fsck clean (under-goal copies may still run).
    try:
        wait_until(lambda: healthy(rig), SETTLE_TIMEOUT, "cluster healthy after the schedule")
    except AssertionError as exc:
        out.problems.append(str(exc))
        return
    records = {c: _read_records(tmp / f"records-{c}.jsonl") for c in CLIENTS}
    for recs in records.values():
        out.errors += sum(1 for r in recs if r["t"] in ("err", "unk", "none"))
    ns_history, counter_history = _histories(records)
    out.ns_ops = len(ns_history)
    acked = sum(1 for op in counter_history if op.completed)
    unknown = len(counter_history) - acked
    out.increments_acked, out.increments_unknown = acked, unknown
    out.files_acked = sum(1 for recs in records.values() for r in recs if r["t"] == "file")

    def read_back() -> None:
        """Every acknowledged file and the counter, through both mounts."""
        for client, recs in records.items():
            renames = {r["name"]: r["result"] for r in recs if r["t"] == "rename"}
            for r in recs:
                if r["t"] != "file":
                    continue
                name = r["name"]
                renamed = renames.get(name)
                if renamed == "ok":
                    names = [name]
                elif renamed is not None and renamed not in UNKNOWN_ERRNOS:
                    names = [f"{name}.tmp"]
                else:
                    names = [name, f"{name}.tmp"]
                for mount_name, mount in rig.mounts.items():
                    found = [n for n in names if (mount / "files" / n).exists()]
                    if len(found) != 1:
                        out.problems.append(
                            f"{client}'s acknowledged file {name} (rename: {renamed}): "
                            f"{found} present through {mount_name}"
                        )
                        continue
                    try:
                        data = (mount / "files" / found[0]).read_bytes()
                    except OSError as exc:
                        out.problems.append(f"{found[0]} through {mount_name}: {exc}")
                        continue
                    if hashlib.sha256(data).hexdigest() != r["sha"]:
                        out.problems.append(
                            f"{found[0]} through {mount_name}: {len(data)} bytes, not the "
                            f"{r['size']} acknowledged"
                        )
        for mount_name, mount in rig.mounts.items():
            try:
                value = int((mount / "counter").read_bytes().strip(b"\0 ") or b"0")
            except (OSError, ValueError) as exc:
                out.problems.append(f"counter through {mount_name}: {exc!r}")
                continue
            if not acked <= value <= acked + unknown:
                out.problems.append(
                    f"counter through {mount_name} is {value}: {acked} increments acknowledged, "
                    f"{unknown} of unknown outcome"
                )

    # In a thread: a mount that hangs must not hang the run (its client is killed at the end,
    # which fails the blocked call).
    reader = threading.Thread(target=read_back, daemon=True)
    reader.start()
    reader.join(READ_TIMEOUT)
    if reader.is_alive():
        out.problems.append(f"reading the files back through the mounts hung for {READ_TIMEOUT} s")
    reads = [op.result for op in counter_history if op.completed]
    if len(reads) != len(set(reads)):
        out.problems.append("two acknowledged increments read the same counter value")
    # Linearizability.
    results = (
        # Through the kernel: a rename may be answered by the VFS itself (KernelNamespaceModel).
        ("namespace", check(ns_history, KernelNamespaceModel(), time_budget=120.0)),
        ("counter", check(counter_history, CounterModel(), time_budget=60.0)),
    )
    for what, result in results:
        if result.outcome == "illegal":
            out.problems.append(f"{what} history not linearizable:\n{result.explain()}")
        elif result.outcome == "unknown":
            out.notes.append(f"{what} history: the checker gave up ({result})")
    # fsck: clean once the copies under way are done.
    code, report = _fsck(rig)
    deadline = time.monotonic() + FSCK_TIMEOUT
    while code != 0 and time.monotonic() < deadline:
        time.sleep(3.0)
        code, report = _fsck(rig)
    if code != 0:
        out.problems.append(f"dfs fsck exited {code}: {_fsck_summary(report)}")
        st = rig.dfs("status", "--json")
        out.notes.append(f"dfs status: {(st.stdout or st.stderr)[-3000:]}")
        # Where the metaservers' tasks wait: a task dump in each log.
        for name in META:
            proc = rig.procs.get(name)
            if proc is not None and proc.running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(2.0)
        return
    # Corrupt replicas the scrubbers have not reached yet: fsck --verify finds them, and
    # --repair replaces them (the schedule flipped bytes in `corrupted` chunk files).
    code, report = _fsck(rig, "--verify")
    if code != 0 and isinstance(report, dict):
        counts = {k: v for k, v in report.get("counts", {}).items() if v}
        # A corrupt replica found now leaves its chunk under its goal until it is replaced.
        corrupt = {e["chunk_id"] for e in report.get("corrupt_replicas", [])}
        under = {e["chunk_id"] for e in report.get("under_goal", [])}
        if set(counts) <= {"corrupt_replicas", "under_goal"} and under <= corrupt:
            out.notes.append(
                f"fsck --verify found {counts} of {corrupted} corrupted chunk files: repaired"
            )
            code, report = _fsck(rig, "--verify", "--repair")
            if code != 0:
                out.problems.append(f"fsck --verify --repair exited {code}: {report!s:.2000}")
        else:
            out.problems.append(f"dfs fsck --verify: {_fsck_summary(report)}")
    elif code != 0:
        out.problems.append(f"dfs fsck --verify exited {code}: {report!s:.2000}")
    problems = rig.log_problems()
    if problems:
        out.notes.append(f"{len(problems)} logs with a traceback: {problems}")


# ---------------------------------------------------------------- pytest and the long form
def test_chaos_short(tmp_path: Path) -> None:
    outcome = run_chaos(SUITE_SEED, SUITE_FAULTS, tmp_path)
    print(_table([outcome]))
    for note in outcome.notes:
        print(note)
    assert outcome.faults >= SUITE_FAULTS * 0.8, outcome
    assert outcome.files_acked > 0 and outcome.increments_acked > 0, outcome
    assert outcome.ok, "\n".join(outcome.problems)


def recheck(tmp: Path) -> int:
    """The linearizability checks of a recorded run, again; 0 when both pass."""
    records = {c: _read_records(tmp / f"records-{c}.jsonl") for c in CLIENTS}
    ns_history, counter_history = _histories(records)
    bad = 0
    for what, result in (
        ("namespace", check(ns_history, KernelNamespaceModel(), time_budget=120.0)),
        ("counter", check(counter_history, CounterModel(), time_budget=60.0)),
    ):
        print(
            f"{what}: {len(ns_history if what == 'namespace' else counter_history)} "
            f"operations, {result.outcome}"
        )
        if result.outcome != "ok":
            bad += 1
            print(result.explain())
    return 1 if bad else 0


def _table(outcomes: list[Outcome]) -> str:
    head = f"{'seed':>5} {'faults':>6} {'files':>6} {'incr':>5} {'unk':>4} {'errors':>6} "
    head += f"{'ns ops':>6} {'time':>6}  result"
    rows = [head]
    for o in outcomes:
        rows.append(
            f"{o.seed:>5} {o.faults:>6} {o.files_acked:>6} {o.increments_acked:>5} "
            f"{o.increments_unknown:>4} {o.errors:>6} {o.ns_ops:>6} {o.seconds:>5.0f}s  "
            + ("ok" if o.ok else f"FAIL: {o.problems[0][:200]}")
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.test_chaos")
    sub = parser.add_subparsers(dest="command")
    w = sub.add_parser("worker", help="(internal) one client's workload")
    w.add_argument("--mount", required=True)
    w.add_argument("--client", required=True)
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--stop", required=True)
    r = sub.add_parser(
        "recheck", help="check the histories a kept run recorded again (after a checker change)"
    )
    r.add_argument("dir", help="a seed's directory (kept with --keep, or left after a failure)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--faults", type=int, default=50)
    parser.add_argument("--keep", help="keep each seed's directory (logs) under DIR")
    args = parser.parse_args(argv)
    if args.command == "worker":
        Worker(Path(args.mount), args.client, args.seed, Path(args.out), Path(args.stop)).run()
        return 0
    if args.command == "recheck":
        return recheck(Path(args.dir))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    outcomes = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        base = Path(args.keep) if args.keep else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"chaos-{seed}-", dir=base))
        try:
            outcome = run_chaos(seed, args.faults, tmp)
        except Exception as exc:  # the harness failed (a start-up timeout...): go on
            outcome = Outcome(seed=seed, problems=[f"the run failed: {exc!r}"])
        outcomes.append(outcome)
        print(_table([outcome]).splitlines()[-1], flush=True)
        for line in [*outcome.problems, *outcome.notes]:
            print(f"    {line[:3000]}", flush=True)
        if outcome.ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"    logs in {tmp}", flush=True)
    print(_table(outcomes))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
