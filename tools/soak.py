#!/usr/bin/env python3
"""Soak test: several client mounts under a mixed, self-checking load for a long time, while the
memory (RSS) of every daemon is sampled.

    .venv/bin/python tools/soak.py [--minutes 30] [--clients 8] [--state DIR] [--json OUT]
        [--warmup MINUTES] [--interval SECONDS] [--data-mib MIB] [--set SECTION.KEY=VALUE]...

Brings up a fresh ``dfs local up`` cluster in a temporary directory (or the one in ``--state``),
mounts ``--clients`` client mounts (the cluster's own mount and ``dfs mount`` processes with
``STATE/client.toml``), and runs one worker process per mount, each in its own directory:
create, write, fsync and read-verify files of 4 KiB .. 8 MiB, overwrite ranges, append, rename,
unlink, mkdir/rmdir churn, stat and readdir checked against the worker's model, and now and
then an fcntl-locked increment of a counter file in a shared directory.  Each worker keeps its
data under ``--data-mib / clients`` by deleting its oldest files.  Every error is counted.

Every ``--interval`` seconds the RSS (``VmRSS``) of every daemon (metaservers, chunkservers,
mounts) and the workers' operation and byte rates are sampled.  At the end: a Markdown table
per process (RSS after the warm-up, at the end, the maximum, and the least-squares slope in
MiB/hour over the samples after the warm-up and over their second half, and the mean over each
quarter of the time after the warm-up), the operation
totals, errors, verification failures, the shared counter against the expected count and the
exit code of ``dfs fsck``.  Every daemon logs a memory dump (SIGUSR2) after the warm-up and at
the end; ``--trace-memory`` makes those name the allocation sites that grew.
Everything is unmounted and stopped at the end, also on Ctrl-C or an error.  Exit 0 when there
was no error, the counter is exact, every daemon lived and fsck is clean.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from clustertools import DFS, dfs, status

KIB = 1024
MIB = 1024 * 1024
MAX_FILE = 8 * MIB
MIN_FILE = 4 * KIB


# ---------------------------------------------------------------- the worker (one per mount)
class Worker:
    """A mixed load in ``root`` with a model of every file (size and SHA-256) to check against."""

    def __init__(self, root: Path, shared: Path, stats: Path, seed: int, budget: int) -> None:
        self.root = root
        self.shared = shared
        self.stats_path = stats
        self.rng = random.Random(seed)
        self.budget = budget
        self.files: dict[str, tuple[int, str]] = {}  # name -> (size, sha256), oldest first
        self.serial = 0
        self.ops = 0
        self.bytes_written = 0
        self.bytes_read = 0
        self.errors = 0
        self.verify_failures = 0
        self.increments = 0
        self.by_op: dict[str, int] = {}
        self.messages: list[str] = []
        self.last_flush = 0.0

    # -- bookkeeping
    def error(self, op: str, exc: BaseException) -> None:
        self.errors += 1
        if len(self.messages) < 50:
            self.messages.append(f"{time.strftime('%H:%M:%S')} {op}: {exc!r}")

    def mismatch(self, op: str, name: str, what: str) -> None:
        self.verify_failures += 1
        if len(self.messages) < 50:
            self.messages.append(f"{time.strftime('%H:%M:%S')} VERIFY {op} {name}: {what}")

    def flush(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last_flush < 2:
            return
        self.last_flush = now
        data = {
            "ops": self.ops,
            "bytes_written": self.bytes_written,
            "bytes_read": self.bytes_read,
            "errors": self.errors,
            "verify_failures": self.verify_failures,
            "increments": self.increments,
            "by_op": self.by_op,
            "files": len(self.files),
            "data_bytes": sum(s for s, _ in self.files.values()),
            "messages": self.messages,
            "final": final,
        }
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.stats_path)

    def size(self) -> int:
        # log-uniform between 4 KiB and 8 MiB
        lo, hi = MIN_FILE.bit_length() - 1, MAX_FILE.bit_length() - 1
        return int(2 ** self.rng.uniform(lo, hi))

    def new_name(self) -> str:
        self.serial += 1
        return f"f{self.serial:07d}"

    def read_checked(self, op: str, name: str) -> bytes | None:
        """The file's content, checked against the model (None when it does not match)."""
        want_size, want_hash = self.files[name]
        with open(self.root / name, "rb") as f:
            data = f.read()
        self.bytes_read += len(data)
        if len(data) != want_size or hashlib.sha256(data).hexdigest() != want_hash:
            self.mismatch(op, name, f"size {len(data)} expected {want_size} or content differs")
            self.files[name] = (len(data), hashlib.sha256(data).hexdigest())  # resync
            return None
        return data

    # -- operations
    def op_create(self) -> None:
        name = self.new_name()
        data = self.rng.randbytes(self.size())
        with open(self.root / name, "wb") as f:
            # in pieces of at most 1 MiB, as applications write
            for off in range(0, len(data), MIB):
                f.write(data[off : off + MIB])
            f.flush()
            os.fsync(f.fileno())
        self.bytes_written += len(data)
        self.files[name] = (len(data), hashlib.sha256(data).hexdigest())
        self.read_checked("create", name)

    def pick(self) -> str | None:
        if not self.files:
            return None
        return self.rng.choice(list(self.files))

    def op_read(self) -> None:
        name = self.pick()
        if name is not None:
            self.read_checked("read", name)

    def op_overwrite(self) -> None:
        name = self.pick()
        if name is None:
            return
        data = self.read_checked("overwrite", name)
        if data is None:
            return
        off = self.rng.randrange(0, len(data))
        patch = self.rng.randbytes(self.rng.randint(1, min(MIB, MAX_FILE - off)))
        with open(self.root / name, "r+b") as f:
            f.seek(off)
            f.write(patch)
            if self.rng.random() < 0.5:
                f.flush()
                os.fsync(f.fileno())
        self.bytes_written += len(patch)
        new = data[:off] + patch + data[off + len(patch) :]
        self.files[name] = (len(new), hashlib.sha256(new).hexdigest())
        self.read_checked("overwrite", name)

    def op_append(self) -> None:
        name = self.pick()
        if name is None:
            return
        size, _ = self.files[name]
        if size >= MAX_FILE:
            return
        data = self.read_checked("append", name)
        if data is None:
            return
        extra = self.rng.randbytes(self.rng.randint(1, min(256 * KIB, MAX_FILE - size)))
        with open(self.root / name, "ab") as f:
            f.write(extra)
        self.bytes_written += len(extra)
        new = data + extra
        self.files[name] = (len(new), hashlib.sha256(new).hexdigest())
        self.read_checked("append", name)

    def op_rename(self) -> None:
        name = self.pick()
        if name is None:
            return
        new = self.new_name()
        os.rename(self.root / name, self.root / new)
        # keep the age order: the renamed file stays where it was
        self.files = {(new if k == name else k): v for k, v in self.files.items()}
        st = os.stat(self.root / new)
        if st.st_size != self.files[new][0]:
            self.mismatch("rename", new, f"size {st.st_size} expected {self.files[new][0]}")
        if os.path.exists(self.root / name):
            self.mismatch("rename", name, "old name still exists")

    def op_unlink(self, name: str | None = None) -> None:
        name = name or self.pick()
        if name is None:
            return
        os.unlink(self.root / name)
        del self.files[name]
        if os.path.exists(self.root / name):
            self.mismatch("unlink", name, "still exists")

    def op_dirchurn(self) -> None:
        d = self.root / f"d{self.new_name()}"
        os.mkdir(d)
        names = {f"s{i}" for i in range(self.rng.randint(0, 5))}
        for n in names:
            (d / n).write_bytes(n.encode() * 100)
        sub = d / "sub"
        os.mkdir(sub)
        listed = set(os.listdir(d))
        if listed != names | {"sub"}:
            self.mismatch("dirchurn", d.name, f"listing {sorted(listed)}")
        for n in names:
            if (d / n).read_bytes() != n.encode() * 100:
                self.mismatch("dirchurn", f"{d.name}/{n}", "content differs")
            os.unlink(d / n)
        os.rmdir(sub)
        os.rmdir(d)
        if os.path.exists(d):
            self.mismatch("dirchurn", d.name, "still exists after rmdir")

    def op_stat(self) -> None:
        listed = {n for n in os.listdir(self.root) if not n.startswith(".")}
        if listed != set(self.files):
            extra, missing = listed - set(self.files), set(self.files) - listed
            self.mismatch(
                "readdir", ".", f"extra {sorted(extra)[:5]} missing {sorted(missing)[:5]}"
            )
        for name in self.rng.sample(list(self.files), min(5, len(self.files))):
            st = os.stat(self.root / name)
            if st.st_size != self.files[name][0]:
                self.mismatch("stat", name, f"size {st.st_size} expected {self.files[name][0]}")

    def op_counter(self) -> None:
        fd = os.open(self.shared / "counter", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, 64, 0)
                value = int(raw.decode().strip() or "0")
                out = f"{value + 1}\n".encode()
                os.pwrite(fd, out, 0)
                os.ftruncate(fd, len(out))
                os.fsync(fd)
                self.increments += 1
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def trim(self) -> None:
        while self.files and sum(s for s, _ in self.files.values()) > self.budget:
            self.op_unlink(next(iter(self.files)))
            self.count("trim")

    def count(self, op: str) -> None:
        self.ops += 1
        self.by_op[op] = self.by_op.get(op, 0) + 1

    def run(self, until: float, stop: Path) -> None:
        ops = [
            ("create", self.op_create, 20),
            ("read", self.op_read, 20),
            ("overwrite", self.op_overwrite, 10),
            ("append", self.op_append, 10),
            ("rename", self.op_rename, 8),
            ("unlink", self.op_unlink, 6),
            ("dirchurn", self.op_dirchurn, 8),
            ("stat", self.op_stat, 12),
            ("counter", self.op_counter, 6),
        ]
        names = [o[0] for o in ops]
        funcs = {o[0]: o[1] for o in ops}
        weights = [o[2] for o in ops]
        while time.time() < until and not stop.exists():
            op = self.rng.choices(names, weights)[0]
            try:
                funcs[op]()
                self.count(op)
                self.trim()
            except OSError as exc:
                self.error(op, exc)
                if exc.errno in (errno.ENOTCONN, errno.ENODEV):
                    time.sleep(1)  # the mount is gone: do not spin
            self.flush()
        self.flush(final=True)


def worker_main(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    root = Path(args.worker)
    root.mkdir(exist_ok=True)
    w = Worker(root, Path(args.shared), Path(args.stats), args.seed, args.budget)
    try:
        w.run(args.until, Path(args.stop))
    finally:
        w.flush(final=True)
    return 0


# ---------------------------------------------------------------- the driver
def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def slope_mib_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, KiB) points, in MiB per hour."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx * 3600 / 1024


def means_by_part(points: list[tuple[float, float]], parts: int = 4) -> list[float]:
    """Mean of (seconds, KiB) points over ``parts`` equal spans of time, in MiB.  A process
    whose memory is a sawtooth (the metaservers' log between snapshots) shows growth here
    more plainly than in a straight-line fit."""
    if not points:
        return []
    t0, t1 = points[0][0], points[-1][0]
    span = (t1 - t0) / parts or 1.0
    sums = [[0.0, 0] for _ in range(parts)]
    for t, kib in points:
        part = sums[min(int((t - t0) / span), parts - 1)]
        part[0] += kib
        part[1] += 1
    return [round(total / n / 1024, 1) for total, n in sums if n]


def wait_mounted(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.ismount(path):
        if proc.poll() is not None:
            raise RuntimeError(f"dfs mount {path} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"dfs mount {path} did not come up")
        time.sleep(0.2)


def read_stats(path: Path) -> dict[str, Any]:
    try:
        result: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30, help="of load, warm-up included")
    ap.add_argument("--clients", type=int, default=8, help="client mounts, one worker each")
    ap.add_argument("--state", type=Path, help="the cluster's state directory (else a temp dir)")
    ap.add_argument("--json", type=Path, help="write the samples and the summary here")
    ap.add_argument("--warmup", type=float, default=2, help="minutes before the RSS baseline")
    ap.add_argument("--interval", type=float, default=10, help="seconds between samples")
    ap.add_argument("--data-mib", type=int, default=1536, help="bound on the whole data set")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--trace-memory",
        action="store_true",
        help="run the daemons with PYTHONTRACEMALLOC=1, so that their memory dumps (SIGUSR2 "
        "after the warm-up and at the end, in their logs) name allocation sites",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="passed to dfs local up (e.g. metaserver.snapshot_every=10000)",
    )
    # the worker's own arguments (the driver starts this file again with them)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--shared", help=argparse.SUPPRESS)
    ap.add_argument("--stats", help=argparse.SUPPRESS)
    ap.add_argument("--stop", help=argparse.SUPPRESS)
    ap.add_argument("--until", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args)
    if args.clients < 1 or args.minutes <= 0:
        print("soak: --clients must be at least 1 and --minutes positive", file=sys.stderr)
        return 2

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="dfs-soak-", dir="/var/tmp"))
    state = args.state or work / "state"
    mounts: list[Path] = [state / "mnt"]
    mount_procs: list[subprocess.Popen[bytes]] = []
    workers: list[subprocess.Popen[bytes]] = []
    stop = work / "stop"
    up = False
    remove_work = False
    try:
        print(f"soak: cluster in {state}, work files in {work}", flush=True)
        up = True  # from here on, bring it down at the end even if "up" fails half-way
        settings = [a for kv in args.set for a in ("--set", kv)]
        if args.trace_memory:
            os.environ["PYTHONTRACEMALLOC"] = "1"  # the daemons inherit it
        try:
            dfs("local", "up", "--dir", str(state), *settings, timeout=300)
        finally:
            os.environ.pop("PYTHONTRACEMALLOC", None)
        for i in range(1, args.clients):
            mp = work / f"mnt{i}"
            mp.mkdir()
            log = open(work / f"mount{i}.log", "wb")  # noqa: SIM115 (lives as long as the mount)
            env = dict(os.environ, PYTHONTRACEMALLOC="1") if args.trace_memory else None
            proc = subprocess.Popen(
                [*DFS, "mount", str(mp), "--config", str(state / "client.toml")],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()
            mount_procs.append(proc)
            mounts.append(mp)
            wait_mounted(mp, proc)
        # every daemon: pid files of the cluster, then the extra mounts
        daemons: dict[str, int] = {}
        for pf in sorted((state / "run").glob("*.pid")):
            try:
                daemons[pf.stem] = int(pf.read_text().strip())
            except ValueError:
                continue
        for i, proc in enumerate(mount_procs, 1):
            daemons[f"mount{i}"] = proc.pid
        print("soak: daemons " + ", ".join(f"{k}={v}" for k, v in daemons.items()), flush=True)

        shared = mounts[0] / "shared"
        shared.mkdir(exist_ok=True)
        budget = args.data_mib * MIB // args.clients
        t0 = time.time()
        until = t0 + args.minutes * 60
        for i, mp in enumerate(mounts):
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        str(mp / f"w{i}"),
                        "--shared",
                        str(mp / "shared"),
                        "--stats",
                        str(work / f"stats{i}.json"),
                        "--stop",
                        str(stop),
                        "--until",
                        str(until),
                        "--budget",
                        str(budget),
                        "--seed",
                        str(args.seed * 1000 + i),
                    ],
                    start_new_session=True,
                )
            )

        def memory_dumps() -> None:
            """Each daemon logs what its memory is in (SIGUSR2; the next dump shows growth)."""
            for pid in daemons.values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR2)

        samples: list[dict[str, Any]] = []
        dead: set[str] = set()
        dumped_at_warmup = False
        prev: tuple[float, int, int] | None = None
        next_t = t0
        while True:
            now = time.time()
            stats = [read_stats(work / f"stats{i}.json") for i in range(len(mounts))]
            ops = sum(s.get("ops", 0) for s in stats)
            nbytes = sum(s.get("bytes_written", 0) + s.get("bytes_read", 0) for s in stats)
            errors = sum(s.get("errors", 0) for s in stats)
            vfail = sum(s.get("verify_failures", 0) for s in stats)
            rss: dict[str, int | None] = {k: rss_kib(p) for k, p in daemons.items()}
            for k, v in rss.items():
                if v is None and k not in dead:
                    dead.add(k)
                    print(f"soak: {k} (pid {daemons[k]}) is gone", flush=True)
            rate_ops = rate_bytes = 0.0
            if prev is not None and now > prev[0]:
                rate_ops = (ops - prev[1]) / (now - prev[0])
                rate_bytes = (nbytes - prev[2]) / (now - prev[0])
            prev = (now, ops, nbytes)
            samples.append(
                {
                    "t": round(now - t0, 1),
                    "rss_kib": rss,
                    "ops": ops,
                    "bytes": nbytes,
                    "ops_per_s": round(rate_ops, 1),
                    "mib_per_s": round(rate_bytes / MIB, 2),
                    "errors": errors,
                    "verify_failures": vfail,
                    "load1": os.getloadavg()[0],
                }
            )
            if len(samples) % 6 == 1:  # once a minute: the cluster's own view (Raft indexes)
                try:
                    samples[-1]["status"] = status(state)
                except subprocess.TimeoutExpired:
                    samples[-1]["status"] = {}
            total_rss = sum(v for v in rss.values() if v) / 1024
            print(
                f"soak: t={now - t0:6.0f}s ops={ops} ({rate_ops:.1f}/s, "
                f"{rate_bytes / MIB:.1f} MiB/s) errors={errors} verify={vfail} "
                f"rss(all)={total_rss:.0f} MiB load={os.getloadavg()[0]:.1f}",
                flush=True,
            )
            if not dumped_at_warmup and now - t0 >= args.warmup * 60:
                memory_dumps()
                dumped_at_warmup = True
            if all(w.poll() is not None for w in workers):
                memory_dumps()
                break
            if now > until + 120:
                print("soak: workers did not stop; stopping them", flush=True)
                break
            next_t += args.interval
            time.sleep(max(0.0, next_t - time.time()))
        stop.touch()
        for w in workers:
            try:
                w.wait(60)
            except subprocess.TimeoutExpired:
                w.kill()
        worker_codes = [w.returncode for w in workers]

        # the figures
        stats = [read_stats(work / f"stats{i}.json") for i in range(len(mounts))]
        try:
            counter = int((shared / "counter").read_text().strip() or "0")
        except (OSError, ValueError) as exc:
            print(f"soak: cannot read the counter: {exc!r}", flush=True)
            counter = -1
        expected = sum(s.get("increments", 0) for s in stats)
        fsck = subprocess.run(
            [*DFS, "fsck", "--config", str(state / "admin.toml")],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        warm = args.warmup * 60
        table: dict[str, dict[str, Any]] = {}
        for name in daemons:
            pts = [
                (s["t"], float(s["rss_kib"][name]))
                for s in samples
                if s["t"] >= warm and s["rss_kib"].get(name) is not None
            ]
            allv = [s["rss_kib"][name] for s in samples if s["rss_kib"].get(name) is not None]
            slope = slope_mib_per_hour(pts)
            # Bounded structures (caches, rings, the log between snapshots) fill up first:
            # the second half shows whether growth goes on once they are full.
            late = slope_mib_per_hour(pts[len(pts) // 2 :])
            table[name] = {
                "start_mib": round(pts[0][1] / 1024, 1) if pts else None,
                "end_mib": round(pts[-1][1] / 1024, 1) if pts else None,
                "max_mib": round(max(allv) / 1024, 1) if allv else None,
                "slope_mib_per_hour": None if slope is None else round(slope, 2),
                "late_slope_mib_per_hour": None if late is None else round(late, 2),
                "quarter_means_mib": means_by_part(pts),
            }
        by_op: dict[str, int] = {}
        for s in stats:
            for k, v in s.get("by_op", {}).items():
                by_op[k] = by_op.get(k, 0) + v
        messages = [m for i, s in enumerate(stats) for m in (f"w{i} {x}" for x in s["messages"])]
        duration = samples[-1]["t"] if samples else 0.0
        summary = {
            "minutes": args.minutes,
            "clients": args.clients,
            "warmup_minutes": args.warmup,
            "duration_s": duration,
            "ops": sum(s.get("ops", 0) for s in stats),
            "by_op": by_op,
            "bytes_written": sum(s.get("bytes_written", 0) for s in stats),
            "bytes_read": sum(s.get("bytes_read", 0) for s in stats),
            "errors": sum(s.get("errors", 0) for s in stats),
            "verify_failures": sum(s.get("verify_failures", 0) for s in stats),
            "error_messages": messages,
            "counter": counter,
            "counter_expected": expected,
            "fsck_exit": fsck.returncode,
            "fsck_output": (fsck.stdout + fsck.stderr)[-4000:],
            "dead_daemons": sorted(dead),
            "worker_exit_codes": worker_codes,
            "rss": table,
            "load_avg_min_max": [
                min(s["load1"] for s in samples),
                max(s["load1"] for s in samples),
            ],
        }
        print()
        print(
            "| process | RSS after warm-up (MiB) | RSS at end (MiB) | max (MiB) | slope (MiB/h) "
            "| slope, 2nd half (MiB/h) | mean by quarter (MiB) |"
        )
        print("|---|--:|--:|--:|--:|--:|--:|")
        for name, row in table.items():
            print(
                f"| {name} | {row['start_mib']} | {row['end_mib']} | {row['max_mib']} "
                f"| {row['slope_mib_per_hour']} | {row['late_slope_mib_per_hour']} "
                f"| {' / '.join(str(m) for m in row['quarter_means_mib'])} |"
            )
        print()
        print("| figure | value |")
        print("|---|--:|")
        print(f"| duration | {duration:.0f} s |")
        print(
            f"| operations | {summary['ops']:,} ({duration and summary['ops'] / duration:.1f}/s) |"
        )
        print(f"| by operation | {', '.join(f'{k} {v:,}' for k, v in sorted(by_op.items()))} |")
        print(
            f"| written / read | {summary['bytes_written'] / MIB:,.0f} / "
            f"{summary['bytes_read'] / MIB:,.0f} MiB |"
        )
        print(f"| errors | {summary['errors']} |")
        print(f"| verification failures | {summary['verify_failures']} |")
        print(f"| shared counter | {counter} (expected {expected}) |")
        print(f"| dead daemons | {', '.join(sorted(dead)) or 'none'} |")
        print(f"| `dfs fsck` exit | {fsck.returncode} |")
        for m in messages[:20]:
            print("  " + m)
        if args.json:
            args.json.write_text(
                json.dumps({"summary": summary, "samples": samples}, indent=1) + "\n"
            )
        ok = (
            summary["errors"] == 0
            and summary["verify_failures"] == 0
            and counter == expected
            and not dead
            and fsck.returncode == 0
        )
        if ok:
            remove_work = True
        else:
            print(f"soak: the logs stay in {state}/logs and {work}", flush=True)
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130
    finally:
        stop.touch()
        for w in workers:
            if w.poll() is None:
                w.terminate()
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        for proc in mount_procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, mp in zip(mount_procs, mounts[1:], strict=False):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            subprocess.run(["umount", "-l", str(mp)], capture_output=True, check=False)
        if up:
            subprocess.run(
                [*DFS, "local", "down", "--dir", str(state)],
                capture_output=True,
                timeout=300,
                check=False,
            )
        if remove_work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
