#!/usr/bin/env python3
"""Self-healing on real processes: ``kill -9`` of a chunkserver holding >= 1 GiB of replicas.

    python3 tools/rereplication.py [--gib 1.6] [--grace 10] [--rate 100] [--json OUT]

Brings up a fresh local cluster (three metaservers, three chunkservers, goal 2, a FUSE mount)
in a temporary directory, writes ``--gib`` GiB as 48 MiB files (with three chunkservers each
holds two thirds of the replicas), then:

1. starts a reader that re-reads every file from a cold cache and checks its sha256, and
   ``kill -9``s the chunkserver holding the most replica bytes;
2. times from the kill until every chunk is back at its goal (``dfs status``: nothing under
   goal, nothing missing), with ``[metaserver] replication_grace = --grace`` and
   ``replication_rate = --rate`` MiB/s; the reader must see no error;
3. rewrites 64 KiB of every file while the victim is away, restarts it with its old chunks,
   checks that every read returns the new bytes, and times until its stale replicas are gone.

Prints the figures; ``--json`` writes them too.  Needs root (FUSE).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clustertools import DFS, dfs, drop_caches, status

from dfs.chunkserver import layout

MiB = 1 << 20


def healthy(state: Path) -> bool:
    counts = status(state).get("counts", {})
    return bool(counts.get("under_goal") == 0 and counts.get("missing") == 0)


def replicas(state: Path, cs: str) -> dict[int, tuple[int, int]]:
    """chunk id -> (version, length) of one chunkserver's chunks, from its sidecars."""
    out = {}
    for sidecar in (state / "data" / cs / "chunks").rglob("*" + layout.SIDECAR_SUFFIX):
        h = layout.decode_header(sidecar.read_bytes()[: layout.HEADER_SIZE])
        if h is not None:
            out[h.chunk_id] = (h.version, h.length)
    return out


def wait(pred: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.25)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


class Reader(threading.Thread):
    def __init__(self, files: dict[Path, str]) -> None:
        super().__init__(daemon=True)
        self.files = files
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.bytes = 0
        self.rounds = 0

    def run(self) -> None:
        while not self.stop.is_set():
            drop_caches()
            for path, digest in self.files.items():
                if self.stop.is_set():
                    return
                h = hashlib.sha256()
                try:
                    with open(path, "rb") as f:
                        while block := f.read(4 * MiB):
                            h.update(block)
                            self.bytes += len(block)
                except OSError as exc:
                    self.errors.append(f"{path.name}: {exc}")
                    continue
                if h.hexdigest() != digest:
                    self.errors.append(f"{path.name}: wrong bytes")
            self.rounds += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.6)
    ap.add_argument("--grace", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dfs-rerepl-"))
    state, mnt = tmp / "state", tmp / "mnt"
    dfs(
        "local", "up", "--dir", str(state), "--mount", str(mnt),
        "--set", f"metaserver.replication_grace={args.grace}",
        "--set", f"metaserver.replication_rate={args.rate}",
    )  # fmt: skip
    result: dict[str, Any] = {"gib": args.gib, "grace_s": args.grace, "rate_mib_s": args.rate}
    try:
        files: dict[Path, str] = {}
        n = int(args.gib * 1024 / 48)
        t0 = time.monotonic()
        for i in range(n):
            data = os.urandom(48 * MiB)
            (mnt / f"f{i:03d}").write_bytes(data)
            files[mnt / f"f{i:03d}"] = hashlib.sha256(data).hexdigest()
        result["write_s"] = round(time.monotonic() - t0, 1)
        wait(lambda: healthy(state), 60, "the goal after writing")
        held = {cs: replicas(state, cs) for cs in ("cs1", "cs2", "cs3")}
        victim = max(held, key=lambda cs: sum(n for _v, n in held[cs].values()))
        victim_bytes = sum(n for _v, n in held[victim].values())
        result |= {"victim": victim, "victim_replica_bytes": victim_bytes}
        print(f"{victim} holds {len(held[victim])} replicas, {victim_bytes / 2**30:.2f} GiB")

        reader = Reader(files)
        reader.start()
        pid = int((state / "run" / f"{victim}.pid").read_text())
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        wait(
            lambda: any(
                c["id"] == victim and c["state"] != "alive"
                for c in status(state).get("chunkservers", [])
            ),
            60,
            "the victim marked dead",
        )
        t_dead = time.monotonic() - t_kill
        wait(lambda: healthy(state), 1800, "every chunk back at its goal")
        t_healed = time.monotonic() - t_kill
        reader.stop.set()
        reader.join(120)
        rep = status(state).get("replication", {})
        result |= {
            "dead_after_s": round(t_dead, 1),
            "back_at_goal_after_s": round(t_healed, 1),
            "copy_mib_s_after_grace": round(
                victim_bytes / MiB / max(t_healed - t_dead - args.grace, 0.001), 1
            ),
            "copies": rep.get("copies"),
            "reader_errors": len(reader.errors),
            "reader_gib": round(reader.bytes / 2**30, 2),
            "reader_rounds": reader.rounds,
        }
        print(
            f"dead after {t_dead:.1f} s, back at goal after {t_healed:.1f} s "
            f"({rep.get('copies')} copies); reader: {reader.bytes / 2**30:.2f} GiB read, "
            f"{len(reader.errors)} errors {reader.errors[:3]}"
        )

        new: dict[Path, str] = {}
        for path in files:
            with open(path, "r+b") as f:
                f.seek(4096)
                f.write(os.urandom(64 * 1024))
            new[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        t_up = time.monotonic()
        dfs("local", "up", "--dir", str(state))

        def stale_gone() -> bool:
            now = replicas(state, victim)
            return all(now.get(cid, (None,))[0] != v for cid, (v, _n) in held[victim].items())

        gone_at: list[float] = []

        def watch() -> None:
            while time.monotonic() - t_up < 600 and not gone_at:
                if stale_gone():
                    gone_at.append(time.monotonic() - t_up)
                time.sleep(0.25)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        wrong = 0
        for _ in range(3):
            drop_caches()
            for path, digest in new.items():
                if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                    wrong += 1
        watcher.join(600)
        if not gone_at:
            raise SystemExit("the victim's stale replicas were not deleted within 600 s")
        t_clean = gone_at[0]
        wait(lambda: healthy(state), 600, "the goal after the return")
        result |= {"stale_reads": wrong, "stale_removed_after_restart_s": round(t_clean, 1)}
        print(f"after restart: {wrong} wrong reads; stale replicas gone within {t_clean:.1f} s")
    finally:
        down = [*DFS, "local", "down", "--dir", str(state)]
        subprocess.run(down, capture_output=True, check=False)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
