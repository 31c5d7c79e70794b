"""``dfs bench DIR``: the project's file-system benchmark, on a mount or any directory.

The same figures as ``../shared/GOALS.md`` (and ``tools/bench.py``, which runs the shared
fsbench script), measured by our own bounded workload so the command works on any machine:

* sequential write of one file with 1 MiB ``write`` calls, then ``fsync`` (timed together);
  sequential read of it after dropping the page cache (when allowed: root);
* random 4 KiB reads and writes of a 256 MiB file with ``O_DIRECT`` when the directory
  accepts it (else buffered, and said so), one process, one request at a time;
* create, cold stat, unlink of N empty files in one directory; mkdir of N directories;
  rename of N files;
* small files: a tree of 2,000 files of 1..16 KiB packed as ``.tar.gz`` on local disk, then
  ``tar -xzf`` into DIR, ``du -s`` and ``rm -rf`` of it;
* four processes each writing and fsyncing 128 MiB at once (aggregate MiB/s).

Everything happens in ``DIR/.dfs-bench-<pid>``, removed at the end (also on error or Ctrl-C).
``--quick`` divides the sizes by 8.  Every loop is bounded by its count and by a per-phase
wall-clock cap (60 s; a phase cut short reports what it did).  Output: a Markdown table
(the format of ``docs/benchmarks.md``), and ``--json FILE`` for the raw figures; with
``--compare DIR2`` both directories are measured, interleaved phase by phase, and the table
has a ratio column.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import mmap
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MiB = 1 << 20
PHASE_CAP = 60.0

#: (key, label, unit); "s" figures are better when lower.
FIGURES = [
    ("seq_write_MBps", "sequential write + fsync", "MiB/s"),
    ("seq_read_MBps", "sequential read, cold cache", "MiB/s"),
    ("rand_read_4k_iops", "random 4 KiB read", "IOPS"),
    ("rand_write_4k_iops", "random 4 KiB write", "IOPS"),
    ("create_ops", "create empty files", "ops/s"),
    ("stat_cold_ops", "stat, cold", "ops/s"),
    ("unlink_ops", "unlink", "ops/s"),
    ("mkdir_ops", "mkdir", "ops/s"),
    ("rename_ops", "rename", "ops/s"),
    ("small_files_extract_s", "tar -xzf of 2,000 small files", "s"),
    ("small_files_du_s", "du -s of that tree", "s"),
    ("small_files_rm_s", "rm -rf of that tree", "s"),
    ("parallel_write_MBps", "4 writers x 128 MiB + fsync, aggregate", "MiB/s"),
]


def _drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def _bounded(count: int) -> Iterator[int]:
    """``range(count)``, cut short after ``PHASE_CAP`` seconds."""
    deadline = time.monotonic() + PHASE_CAP
    for i in range(count):
        if time.monotonic() > deadline:
            return
        yield i


def seq(work: Path, size: int, out: dict[str, Any]) -> None:
    path = work / "seq.bin"
    block = os.urandom(MiB)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written = 0
        for _ in _bounded(size // MiB):
            written += os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    out["seq_write_MBps"] = written / MiB / (time.perf_counter() - t0)
    out["cold_cache"] = _drop_caches()
    t0 = time.perf_counter()
    read = 0
    with open(path, "rb", buffering=0) as f:
        for _ in _bounded(written // MiB + 1):
            chunk = f.read(MiB)
            if not chunk:
                break
            read += len(chunk)
    out["seq_read_MBps"] = read / MiB / (time.perf_counter() - t0)
    path.unlink()


def rand4k(work: Path, size: int, ops: int, out: dict[str, Any]) -> None:
    path = work / "rand.bin"
    with open(path, "wb") as f:
        block = os.urandom(MiB)
        for _ in range(size // MiB):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    direct = getattr(os, "O_DIRECT", 0)
    try:
        fd = os.open(path, os.O_RDWR | direct)
    except OSError:
        direct = 0
        fd = os.open(path, os.O_RDWR)
    out["rand_direct"] = bool(direct)
    rng = random.Random(42)
    buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT needs
    buf.write(os.urandom(4096))
    blocks = size // 4096
    try:
        t0 = time.perf_counter()
        n = 0
        for _ in _bounded(ops):
            os.preadv(fd, [buf], rng.randrange(blocks) * 4096)
            n += 1
        out["rand_read_4k_iops"] = _rate(n, time.perf_counter() - t0)
        t0 = time.perf_counter()
        n = 0
        for _ in _bounded(ops):
            os.pwritev(fd, [buf], rng.randrange(blocks) * 4096)
            n += 1
        os.fsync(fd)
        out["rand_write_4k_iops"] = _rate(n, time.perf_counter() - t0)
    finally:
        os.close(fd)
    path.unlink()


def _timed(label: str, count: int, fn: Callable[[int], object], out: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    done = 0
    for i in _bounded(count):
        fn(i)
        done += 1
    out[label] = _rate(done, time.perf_counter() - t0)


def metadata(work: Path, count: int, out: dict[str, Any]) -> None:
    d = work / "meta"
    d.mkdir()
    _timed(
        "create_ops", count, lambda i: os.close(os.open(d / f"f{i}", os.O_CREAT | os.O_WRONLY)), out
    )
    out["cold_stat"] = _drop_caches()
    _timed("stat_cold_ops", count, lambda i: os.stat(d / f"f{i}"), out)
    _timed("rename_ops", count, lambda i: os.rename(d / f"f{i}", d / f"g{i}"), out)
    _timed("unlink_ops", count, lambda i: os.unlink(d / f"g{i}"), out)
    _timed("mkdir_ops", count, lambda i: os.mkdir(d / f"d{i}"), out)
    shutil.rmtree(d)


def _tarball(files: int) -> bytes:
    rng = random.Random(7)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(files):
            data = rng.randbytes(rng.randrange(1024, 16 * 1024))
            info = tarfile.TarInfo(f"tree/d{i % 40}/s{i // 40}/f{i}.txt")
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def small_files(work: Path, files: int, out: dict[str, Any]) -> None:
    with tempfile.NamedTemporaryFile(suffix=".tar.gz") as tgz:
        tgz.write(_tarball(files))
        tgz.flush()
        d = work / "small"
        d.mkdir()
        for key, cmd in (
            ("small_files_extract_s", ["tar", "-xzf", tgz.name, "-C", str(d)]),
            ("small_files_du_s", ["du", "-s", str(d)]),
            ("small_files_rm_s", ["rm", "-rf", str(d)]),
        ):
            if key == "small_files_du_s":
                _drop_caches()
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, timeout=600)
            out[key] = time.perf_counter() - t0


def _writer(path: str, size: int) -> None:
    block = os.urandom(MiB)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(size // MiB):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)


def parallel(work: Path, size: int, out: dict[str, Any]) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(work / f"p{i}.bin"), size)) for i in range(4)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    elapsed = time.perf_counter() - t0
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError("a parallel writer failed")
    out["parallel_write_MBps"] = 4 * size / MiB / elapsed
    for i in range(4):
        (work / f"p{i}.bin").unlink()


PHASES = ("seq", "rand", "meta", "small", "parallel")


def run_phase(phase: str, target: Path, quick: bool, out: dict[str, Any]) -> None:
    div = 8 if quick else 1
    work = target / f".dfs-bench-{os.getpid()}"
    work.mkdir()
    try:
        if phase == "seq":
            seq(work, 1024 * MiB // div, out)
        elif phase == "rand":
            rand4k(work, 256 * MiB // div, 20_000 // div, out)
        elif phase == "meta":
            metadata(work, 5_000 // div, out)
        elif phase == "small":
            small_files(work, 2_000 // div, out)
        elif phase == "parallel":
            parallel(work, 128 * MiB // div, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return "—" if value is None else str(value)


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    head = "| figure | unit | " + " | ".join(names) + " |"
    align = "|---|---|" + "--:|" * len(names)
    lines = [head, align]
    if len(names) == 2:
        lines[0] += f" {names[0]} / {names[1]} |"
        lines[1] += "--:|"
    for key, label, unit in FIGURES:
        values = [results[n].get(key) for n in names]
        row = f"| {label} | {unit} | " + " | ".join(_fmt(v) for v in values) + " |"
        if len(names) == 2:
            a, b = values
            ratio = "—"
            if isinstance(a, float) and isinstance(b, float) and a and b:
                ratio = f"{(b / a if unit == 's' else a / b):.2f}"
            row += f" {ratio} |"
        lines.append(row)
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    """``dfs bench DIR [--compare DIR2] [--quick] [--skip PHASES] [--json FILE]``."""
    from dfs.cli.main import CliError

    targets = {"dfs" if args.compare else "target": Path(args.dir)}
    if args.compare:
        targets["compare"] = Path(args.compare)
    for t in targets.values():
        if not t.is_dir():
            raise CliError(f"{t} is not a directory")
    skip = {s for s in (args.skip or "").split(",") if s}
    unknown = skip - set(PHASES)
    if unknown:
        raise CliError(
            f"unknown phase(s) {', '.join(sorted(unknown))} (phases: {', '.join(PHASES)})"
        )
    results: dict[str, dict[str, Any]] = {
        name: {"label": name, "path": str(path)} for name, path in targets.items()
    }
    for phase in PHASES:
        if phase in skip:
            continue
        for name, path in targets.items():  # interleaved, phase by phase
            print(f"bench: {phase} on {path}", file=sys.stderr)
            run_phase(phase, path, args.quick, results[name])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{datetime.date.today().isoformat()}, `dfs bench {' '.join(sys.argv[2:])}`\n")
    print(table(results))
    notes = []
    for name, r in results.items():
        if "rand_direct" in r and not r["rand_direct"]:
            notes.append(f"{name}: random I/O was buffered (O_DIRECT refused)")
        if r.get("cold_cache") is False:
            notes.append(f"{name}: the page cache could not be dropped (not root): reads warm")
    for n in notes:
        print(f"\nnote: {n}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    b = sub.add_parser(
        "bench",
        help="benchmark a mount (or any directory): data, metadata and small-file figures",
    )
    b.add_argument("dir", help="where to run (a dfs mount, or any directory)")
    b.add_argument("--compare", metavar="DIR2", help="also run on DIR2, interleaved")
    b.add_argument("--quick", action="store_true", help="sizes divided by 8")
    b.add_argument("--skip", metavar="PHASES", help=f"comma-separated, of: {','.join(PHASES)}")
    b.add_argument("--json", metavar="FILE", help="write the raw figures here")
    b.set_defaults(func=cmd_bench)
