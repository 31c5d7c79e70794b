#!/usr/bin/env python3
"""Run the shared fsbench workload on a dfs mount and on a local folder, print both side by side.

    .venv/bin/python tools/bench.py [--mount DIR] [--local DIR] [--quick] [--skip LIST] [--json OUT]
    .venv/bin/python tools/bench.py --moosefs [--rounds N] [--skip LIST] [--json OUT]

Without ``--mount`` a fresh local cluster is brought up in a temporary directory (and taken
down afterwards).  With ``--moosefs`` the comparison is against MooseFS instead of a local
folder, in the same sitting and interleaved: each round runs fsbench on a fresh dfs cluster
(goal 2) and then on a fresh MooseFS cluster (``../shared/bench/moosefs-netns.sh``: Debian's
stock MooseFS, goal 2, daemons on network-namespace hosts; needs the moosefs-master,
moosefs-chunkserver, moosefs-client and moosefs-cli packages); the table shows each side's
median over the rounds and the ratio.  ``--skip`` is passed to fsbench (e.g.
``files,dirs,tar`` for the data figures only).  The table printed at the end is in the
Markdown format of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FSBENCH = REPO.parent / "shared" / "bench" / "fsbench.py"
MOOSEFS_NETNS = REPO.parent / "shared" / "bench" / "moosefs-netns.sh"

#: (key in fsbench's JSON, label, unit) in the order of docs/benchmarks.md.
FIGURES = [
    ("seq_write_MBps", "sequential write 1 GiB + fsync", "MiB/s"),
    ("seq_read_MBps", "sequential read, cold cache", "MiB/s"),
    ("rand_read_4k_iops", "random 4 KiB read", "IOPS"),
    ("rand_write_4k_iops", "random 4 KiB write", "IOPS"),
    ("create_ops", "create empty files", "ops/s"),
    ("stat_cold_ops", "stat, cold", "ops/s"),
    ("unlink_ops", "unlink", "ops/s"),
    ("mkdir_ops", "mkdir", "ops/s"),
    ("rename_ops", "rename", "ops/s"),
    ("small_files_extract_s", "tar -xzf of the Django sdist (6,809 files)", "s"),
    ("small_files_du_s", "du -s of that tree", "s"),
    ("small_files_rm_s", "rm -rf of that tree", "s"),
    ("parallel_write_MBps", "4 writers x 128 MiB + fsync, aggregate", "MiB/s"),
]


def run_fsbench(
    fsbench: Path, target: Path, label: str, quick: bool, skip: str = ""
) -> dict[str, Any]:
    cmd = [sys.executable, str(fsbench), str(target), "--label", label]
    if quick:
        cmd.append("--quick")
    if skip:
        cmd += ["--skip", skip]
    print(f"bench: {' '.join(cmd)}", file=sys.stderr)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"bench: fsbench failed on {target} (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else str(value)


def table(local: dict[str, Any], dfs: dict[str, Any]) -> str:
    lines = ["| figure | unit | local disk | dfs |", "|---|---|--:|--:|"]
    for key, label, unit in FIGURES:
        lines.append(f"| {label} | {unit} | {_fmt(local.get(key))} | {_fmt(dfs.get(key))} |")
    return "\n".join(lines)


def _median(results: list[dict[str, Any]], key: str) -> Any:
    values = [r[key] for r in results if isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else None


def compare_table(dfs: list[dict[str, Any]], mfs: list[dict[str, Any]]) -> str:
    lower_is_better = {k for k, _label, unit in FIGURES if unit == "s"}
    lines = [
        "| figure | unit | dfs | MooseFS | dfs / MooseFS |",
        "|---|---|--:|--:|--:|",
    ]
    for key, label, unit in FIGURES:
        a, b = _median(dfs, key), _median(mfs, key)
        if a is None and b is None:
            continue
        ratio = "—"
        if a and b:
            ratio = f"{(b / a if key in lower_is_better else a / b):.2f}"
        lines.append(f"| {label} | {unit} | {_fmt(a)} | {_fmt(b)} | {ratio} |")
    return "\n".join(lines)


def _moosefs(*args: str) -> None:
    subprocess.run(["bash", str(MOOSEFS_NETNS), *args], check=True, timeout=600)


def compare_with_moosefs(args: argparse.Namespace) -> int:
    if not MOOSEFS_NETNS.is_file():
        print(f"bench: error: {MOOSEFS_NETNS} not found", file=sys.stderr)
        return 2
    dfs_runs: list[dict[str, Any]] = []
    mfs_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dfs-bench-", dir="/var/tmp") as tmp:
        for r in range(args.rounds):
            state, mnt = Path(tmp) / f"state{r}", Path(tmp) / f"mnt{r}"
            dfs_cmd = [sys.executable, "-m", "dfs", "local"]
            subprocess.run([*dfs_cmd, "up", "--dir", str(state), "--mount", str(mnt)], check=True)
            try:
                dfs_runs.append(run_fsbench(args.fsbench, mnt, "dfs", args.quick, args.skip))
            finally:
                subprocess.run([*dfs_cmd, "down", "--dir", str(state)], check=False)
            mfs_mnt = Path(tmp) / f"mfs{r}"
            mfs_mnt.mkdir()
            _moosefs("up", str(mfs_mnt))
            try:
                mfs = run_fsbench(args.fsbench, mfs_mnt, "moosefs", args.quick, args.skip)
                mfs_runs.append(mfs)
            finally:
                _moosefs("down")
                _moosefs("reset")
    if args.json:
        args.json.write_text(json.dumps({"dfs": dfs_runs, "moosefs": mfs_runs}, indent=2) + "\n")
    print(f"\n{datetime.date.today().isoformat()}, `{' '.join(sys.argv)}`\n")
    print(compare_table(dfs_runs, mfs_runs))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mount", type=Path, help="an existing dfs mount (default: start a cluster)")
    p.add_argument("--local", type=Path, help="local folder to compare with (default: a temp dir)")
    p.add_argument("--fsbench", type=Path, default=DEFAULT_FSBENCH)
    p.add_argument("--quick", action="store_true", help="fsbench --quick (smaller sizes)")
    p.add_argument("--json", type=Path, help="write both raw results here")
    p.add_argument("--skip", default="", help="fsbench --skip (seq,rand,files,dirs,tar,parallel)")
    p.add_argument("--moosefs", action="store_true", help="compare with MooseFS, interleaved")
    p.add_argument("--rounds", type=int, default=2, help="rounds of each with --moosefs")
    args = p.parse_args()
    if not args.fsbench.is_file():
        print(f"bench: error: fsbench not found at {args.fsbench}", file=sys.stderr)
        return 2
    if args.moosefs:
        return compare_with_moosefs(args)
    with tempfile.TemporaryDirectory(prefix="dfs-bench-", dir="/var/tmp") as tmp:
        local_dir = args.local or Path(tmp) / "local"
        local_dir.mkdir(parents=True, exist_ok=True)
        local = run_fsbench(args.fsbench, local_dir, "local", args.quick, args.skip)
        if args.mount:
            dfs = run_fsbench(args.fsbench, args.mount, "dfs", args.quick, args.skip)
        else:
            state, mnt = Path(tmp) / "state", Path(tmp) / "mnt"
            dfs_cmd = [sys.executable, "-m", "dfs", "local"]
            subprocess.run([*dfs_cmd, "up", "--dir", str(state), "--mount", str(mnt)], check=True)
            try:
                dfs = run_fsbench(args.fsbench, mnt, "dfs", args.quick, args.skip)
            finally:
                subprocess.run([*dfs_cmd, "down", "--dir", str(state)], check=False)
    if args.json:
        args.json.write_text(json.dumps({"local": local, "dfs": dfs}, indent=2) + "\n")
    print(f"\n{datetime.date.today().isoformat()}, `{' '.join(sys.argv)}`\n")
    print(table(local, dfs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
