#!/usr/bin/env python3
"""Metadata failover time: ``kill -9`` of the Raft leader to the next successful write.

    python3 tools/failover_time.py [--trials 20] [--dir STATE] [--json OUT]

Brings up a fresh local cluster (``dfs local up``: three metaservers, three chunkservers, a
FUSE mount) in a temporary directory unless ``--dir`` names one that is already up.  Each
trial: find the leader (``dfs local status --json``), keep a writer creating directories
through the mount, ``kill -9`` the leader, and time from the kill to the first ``mkdir``
issued after it that returns; then ``dfs local up`` restarts the killed member and the next
trial waits until all three apply the same log.  Prints each trial and the median and maximum;
``--json`` writes them too.  Needs root (FUSE).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DFS = [sys.executable, "-m", "dfs"]


def dfs(*args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [*DFS, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"dfs {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def metaservers(state: Path) -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        [*DFS, "local", "status", "--dir", str(state), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    procs = json.loads(out)["processes"]
    return {p["id"]: p for p in procs if p["role"] == "metaserver"}


def wait_settled(state: Path, timeout: float = 30) -> str:
    """Wait for one leader and every member at the same term and applied index; return the
    leader's id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ms = metaservers(state)
        leaders = [i for i, p in ms.items() if p["health"] == "leader"]
        same = len({(p["term"], p["applied_index"]) for p in ms.values()}) == 1
        if len(leaders) == 1 and same and all(p["pid"] for p in ms.values()):
            return leaders[0]
        time.sleep(0.2)
    raise SystemExit(f"the group did not settle in {timeout} s: {metaservers(state)}")


def trial(state: Path, work: Path, n: int) -> float:
    leader = wait_settled(state)
    pid = int((state / "run" / f"{leader}.pid").read_text())
    os.mkdir(work / f"t{n}-before")  # the mount is warm and writes work
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    # The first write issued after the kill; it blocks until a new leader commits it.
    os.mkdir(work / f"t{n}-after")
    elapsed = time.monotonic() - t0
    dfs("local", "up", "--dir", str(state))
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--dir", help="state directory of a running `dfs local` cluster")
    p.add_argument("--json", help="write the figures to this file")
    args = p.parse_args()
    if args.trials < 1:
        p.error("--trials must be >= 1")
    tmp = None
    if args.dir:
        state = Path(args.dir)
    else:
        tmp = tempfile.mkdtemp(prefix="dfs-failover-")
        state = Path(tmp) / "state"
        dfs("local", "up", "--dir", str(state))
    try:
        procs = json.loads(dfs("local", "status", "--dir", str(state), "--json"))["processes"]
        mnt = Path(next(p["address"] for p in procs if p["role"] == "mount"))
        work = mnt / f"failover-{os.getpid()}"
        work.mkdir()
        times = []
        for n in range(args.trials):
            t = trial(state, work, n)
            times.append(t)
            print(f"trial {n + 1:2d}: {t:.3f} s", flush=True)
        result = {
            "trials": len(times),
            "median_s": round(statistics.median(times), 3),
            "max_s": round(max(times), 3),
            "min_s": round(min(times), 3),
            "times_s": [round(t, 3) for t in times],
        }
        print(f"median {result['median_s']:.3f} s, max {result['max_s']:.3f} s")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if tmp is not None:
            dfs("local", "down", "--dir", str(state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
