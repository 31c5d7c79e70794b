#!/usr/bin/env python3
"""Run the shared fsbench workload on a dfs mount and on a local folder, print both side by side.

    .venv/bin/python tools/bench.py [--mount DIR] [--local DIR] [--quick] [--json OUT]

Without ``--mount`` a fresh local cluster is brought up in a temporary directory (and taken
down afterwards).  The table printed at the end is in the Markdown format of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FSBENCH = REPO.parent / "shared" / "bench" / "fsbench.py"

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


def run_fsbench(fsbench: Path, target: Path, label: str, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, str(fsbench), str(target), "--label", label]
    if quick:
        cmd.append("--quick")
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mount", type=Path, help="an existing dfs mount (default: start a cluster)")
    p.add_argument("--local", type=Path, help="local folder to compare with (default: a temp dir)")
    p.add_argument("--fsbench", type=Path, default=DEFAULT_FSBENCH)
    p.add_argument("--quick", action="store_true", help="fsbench --quick (smaller sizes)")
    p.add_argument("--json", type=Path, help="write both raw results here")
    args = p.parse_args()
    if not args.fsbench.is_file():
        print(f"bench: error: fsbench not found at {args.fsbench}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="dfs-bench-", dir="/var/tmp") as tmp:
        local_dir = args.local or Path(tmp) / "local"
        local_dir.mkdir(parents=True, exist_ok=True)
        local = run_fsbench(args.fsbench, local_dir, "local", args.quick)
        if args.mount:
            dfs = run_fsbench(args.fsbench, args.mount, "dfs", args.quick)
        else:
            state, mnt = Path(tmp) / "state", Path(tmp) / "mnt"
            dfs_cmd = [sys.executable, "-m", "dfs", "local"]
            subprocess.run([*dfs_cmd, "up", "--dir", str(state), "--mount", str(mnt)], check=True)
            try:
                dfs = run_fsbench(args.fsbench, mnt, "dfs", args.quick)
            finally:
                subprocess.run([*dfs_cmd, "down", "--dir", str(state)], check=False)
    if args.json:
        args.json.write_text(json.dumps({"local": local, "dfs": dfs}, indent=2) + "\n")
    print(f"\n{datetime.date.today().isoformat()}, `{' '.join(sys.argv)}`\n")
    print(table(local, dfs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
