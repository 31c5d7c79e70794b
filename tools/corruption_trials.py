#!/usr/bin/env python3
"""Corruption trials on real processes: flip a byte in a random block of a random replica.

    python3 tools/corruption_trials.py [--trials 100] [--seed 1] [--json OUT]

Brings up a fresh local cluster (three metaservers, three chunkservers, goal 2, a FUSE mount)
in a temporary directory and writes 12 files of 1 to 9 MiB.  Each trial picks a random replica
file and a random 64 KiB block inside its length, flips one byte there, and reads the file from
a cold cache until the metaserver has heard about the corrupt replica (each read picks its
replicas at random; at most 40 reads).  Every read must return the right bytes.  Then it waits
until the replica is repaired: the chunk has its two replicas again, both byte-identical to the
original, and nothing is counted bad.  Prints each trial's detection and repair times and a
summary; ``--json`` writes them too.  Needs root (FUSE).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clustertools import DFS, dfs, drop_caches, status

from dfs.chunkserver import layout

MiB = 1 << 20
BLOCK = 64 * 1024


def replicas_of(state: Path, chunk_id: int) -> list[tuple[Path, int, int]]:
    """(data file, version, length) of every replica of a chunk, from the sidecars."""
    out = []
    name = layout.chunk_name(chunk_id)
    for cs in sorted((state / "data").glob("cs*")):
        root = cs / "chunks"
        sidecar = layout.sidecar_path(root, chunk_id)
        try:
            h = layout.decode_header(sidecar.read_bytes()[: layout.HEADER_SIZE])
        except FileNotFoundError:
            continue
        if h is not None and h.version != 0:
            out.append((layout.chunk_dir(root, chunk_id) / name, h.version, h.length))
    return out


def read_or_none(path: Path, length: int) -> bytes | None:
    """A replica's first ``length`` bytes, or None when it was just deleted."""
    try:
        return path.read_bytes()[:length]
    except FileNotFoundError:
        return None


def all_chunks(state: Path) -> dict[int, list[tuple[Path, int, int]]]:
    ids = set()
    for cs in (state / "data").glob("cs*"):
        for sidecar in (cs / "chunks").rglob("*" + layout.SIDECAR_SUFFIX):
            parsed = layout.parse_chunk_name(sidecar.name.removesuffix(layout.SIDECAR_SUFFIX))
            if parsed is not None:
                ids.add(parsed)
    return {cid: replicas_of(state, cid) for cid in sorted(ids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="dfs-corrupt-"))
    state, mnt = tmp / "state", tmp / "mnt"
    dfs("local", "up", "--dir", str(state), "--mount", str(mnt))
    trials: list[dict[str, Any]] = []
    try:
        files: dict[Path, bytes] = {}
        for i in range(12):
            data = rng.randbytes(rng.randrange(1 * MiB, 9 * MiB))
            (mnt / f"f{i:02d}").write_bytes(data)
            files[mnt / f"f{i:02d}"] = data
        by_content = {data: path for path, data in files.items()}
        for trial in range(args.trials):
            owner = None
            for _pick in range(50):  # a replica being deleted or copied right now: pick again
                chunks = {c: r for c, r in all_chunks(state).items() if len(r) == 2}
                cid = rng.choice(sorted(chunks))
                path, _version, length = rng.choice(chunks[cid])
                original = read_or_none(path, length) or b""
                owner = by_content.get(original)
                if owner is not None:
                    break
                time.sleep(0.2)
            if owner is None:
                raise SystemExit(f"trial {trial}: found no settled chunk to corrupt")
            block = rng.randrange(0, -(-length // BLOCK))
            offset = block * BLOCK + rng.randrange(0, min(BLOCK, length - block * BLOCK))
            with open(path, "r+b") as f:
                f.seek(offset)
                byte = f.read(1)
                f.seek(offset)
                f.write(bytes([byte[0] ^ (1 << rng.randrange(8))]))
            t0 = time.monotonic()
            wrong = reads = 0
            detected = None
            while reads < 40:
                reads += 1
                drop_caches()
                if owner.read_bytes() != original:
                    wrong += 1
                if status(state).get("counts", {}).get("bad_replicas", 0) or not path.exists():
                    detected = time.monotonic() - t0
                    break
            repaired = None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                now = replicas_of(state, cid)
                counts = status(state).get("counts", {})
                if (
                    len(now) == 2
                    and all(read_or_none(p, n) == original for p, _v, n in now)
                    and counts.get("bad_replicas", 1) == 0
                    and counts.get("under_goal", 1) == 0
                ):
                    repaired = time.monotonic() - t0
                    break
                time.sleep(0.2)
            row = {
                "trial": trial,
                "chunk": cid,
                "replica": str(path.relative_to(state / "data")),
                "block": block,
                "reads": reads,
                "wrong_reads": wrong,
                "detected_s": None if detected is None else round(detected, 2),
                "repaired_s": None if repaired is None else round(repaired, 2),
            }
            trials.append(row)
            print(json.dumps(row), flush=True)
            if wrong or repaired is None:
                break
    finally:
        subprocess.run(
            [*DFS, "local", "down", "--dir", str(state)], capture_output=True, check=False
        )
    done = [t for t in trials if t["repaired_s"] is not None]
    summary = {
        "trials": len(trials),
        "wrong_reads": sum(t["wrong_reads"] for t in trials),
        "repaired": len(done),
        "repair_median_s": statistics.median(t["repaired_s"] for t in done) if done else None,
        "repair_max_s": max(t["repaired_s"] for t in done) if done else None,
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "trials": trials}, indent=2))
    if summary["wrong_reads"] or len(done) != args.trials:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
