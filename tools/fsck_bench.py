#!/usr/bin/env python3
"""How fast `dfs fsck` checks: files/s and chunks/s, on a real cluster and in-process.

    .venv/bin/python tools/fsck_bench.py [--files 100000] [--data-files 10000] [--workers 16]
    .venv/bin/python tools/fsck_bench.py --in-process [--files 100000] [--chunks-per-file 1]

Real cluster (default): brings up a local cluster (3 metaservers, 3 chunkservers) in a
temporary directory, creates ``--files`` empty files with ``--workers`` concurrent metadata
clients (``fs.mknod`` through the RPC client: the mount would take hours at its per-file
latency), writes ``--data-files`` small files through the mount (each one chunk with two
replicas), then times ``dfs fsck --json`` (the whole command: process start, TLS, the check on
the leader, the JSON answer) three times, and ``dfs fsck --verify`` once.

In-process: the leader's check alone (``dfs.metaserver.fsck.fsck``) on a namespace and
registry built directly, with ``--chunks-per-file`` chunks per file on three servers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clustertools import DFS, dfs


def in_process(files: int, per_file: int) -> dict[str, Any]:
    from dfs.metaserver.fsck import fsck
    from dfs.metaserver.namespace import Namespace
    from dfs.metaserver.registry import Registry
    from dfs.types import CHUNK_SIZE, ROOT_INODE

    ns = Namespace()
    now_ns = time.time_ns()
    cred = {"uid": 0, "gid": 0}
    ns.apply({"op": "init", "now_ns": now_ns, "goal": 2, "cluster_id": "bench"})
    reg = Registry(ns, timeout=10.0)
    for i in range(3):
        reg.register(
            server_id=f"cs{i}",
            address=f"127.0.0.1:{9000 + i}",
            zone=f"z{i}",
            capacity=1 << 40,
            free=1 << 39,
            chunks=[],
            now=0.0,
        )
    t0 = time.perf_counter()
    dirs = [
        ns.apply(
            {"op": "mkdir", "now_ns": now_ns, "parent": ROOT_INODE, "name": f"d{d}".encode(),
             "mode": 0o755, "cred": cred}
        )["ino"]
        for d in range(max(1, files // 1000))
    ]  # fmt: skip
    for f in range(files):
        ino = ns.apply(
            {"op": "mknod", "now_ns": now_ns, "parent": dirs[f % len(dirs)],
             "name": f"f{f}".encode(), "mode": 0o100644, "rdev": 0, "cred": cred}
        )["ino"]  # fmt: skip
        for index in range(per_file):
            cid = ns.apply({"op": "alloc_chunk", "now_ns": now_ns, "ino": ino, "index": index})[
                "chunk_id"
            ]
            reg.add_replicas(cid, [f"cs{(f + k) % 3}" for k in range(2)])
        if per_file:
            ns.apply(
                {"op": "commit_write", "now_ns": now_ns, "ino": ino,
                 "size": per_file * CHUNK_SIZE, "mtime_ns": -1}
            )  # fmt: skip
    built = time.perf_counter() - t0
    times = []
    report: dict[str, Any] = {}
    for _ in range(3):
        t0 = time.perf_counter()
        report = fsck(ns, reg, 1.0, orphan_cutoff=3600)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    checked = report["checked"]
    return {
        "mode": "in-process",
        "files": checked["files"],
        "chunks": checked["chunks"],
        "clean": report["clean"],
        "build_s": round(built, 1),
        "fsck_s": round(t, 3),
        "files_per_s": round(checked["files"] / t),
        "chunks_per_s": round(checked["chunks"] / t) if checked["chunks"] else 0,
    }


def create_files(state: Path, files: int, workers: int) -> float:
    """``files`` empty files under /bench/wN with ``workers`` concurrent sessions."""
    import trio

    from dfs.client.remote import RpcMetaClient
    from dfs.config import load_config
    from dfs.rpc.client import RpcClientPool
    from dfs.security.identity import Role
    from dfs.types import ROOT_INODE

    cfg = load_config(state / "client.toml")
    cred = {"uid": 0, "gid": 0}

    async def main() -> None:
        async with RpcClientPool(cfg.tls, name="bench", expect_roles={Role.METASERVER}) as pool:
            top = RpcMetaClient(pool, cfg.cluster.metaservers, op_timeout=60)
            bench = await top.mutate(
                "fs.mkdir", {"parent": ROOT_INODE, "name": b"bench", "mode": 0o755, "cred": cred}
            )

            async def worker(w: int) -> None:
                meta = RpcMetaClient(pool, cfg.cluster.metaservers, op_timeout=60)
                d = await meta.mutate(
                    "fs.mkdir",
                    {"parent": bench["ino"], "name": f"w{w}".encode(), "mode": 0o755, "cred": cred},
                )
                for i in range(w, files, workers):
                    await meta.mutate(
                        "fs.mknod",
                        {"parent": d["ino"], "name": f"f{i}".encode(), "mode": 0o100644,
                         "rdev": 0, "cred": cred},
                    )  # fmt: skip
                await meta.close_session()

            async with trio.open_nursery() as nursery:
                for w in range(workers):
                    nursery.start_soon(worker, w)
            await top.close_session()

    t0 = time.perf_counter()
    trio.run(main)
    return time.perf_counter() - t0


def write_data_files(mnt: Path, count: int, threads: int) -> float:
    (mnt / "data").mkdir(exist_ok=True)
    blob = os.urandom(4096)

    def one(i: int) -> None:
        (mnt / "data" / f"f{i}").write_bytes(blob)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(count)))
    return time.perf_counter() - t0


def timed_fsck(state: Path, *extra: str) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    out = dfs("fsck", "--config", str(state / "admin.toml"), "--json", *extra, timeout=3600)
    return time.perf_counter() - t0, json.loads(out)


def real_cluster(files: int, data_files: int, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dfs-fsck-bench-") as tmp:
        state = Path(tmp) / "state"
        dfs("local", "up", "--dir", str(state), timeout=300)
        try:
            mnt = state / "mnt"
            created = create_files(state, files, workers)
            print(f"created {files} files in {created:.1f} s ({files / created:.0f}/s)")
            wrote = write_data_files(mnt, data_files, workers)
            print(f"wrote {data_files} one-chunk files in {wrote:.1f} s")
            for _ in range(120):  # the replicas of the last writes may still be on their way
                code_ok = dfs_ok(state)
                if code_ok:
                    break
                time.sleep(1)
            runs = [timed_fsck(state) for _ in range(3)]
            t = statistics.median(r[0] for r in runs)
            report = runs[-1][1]
            verify_t, verified = timed_fsck(state, "--verify")
            checked = report["checked"]
            v = verified.get("verified", {})
            return {
                "mode": "cluster",
                "files": checked["files"],
                "chunks": checked["chunks"],
                "clean": report["clean"],
                "fsck_s": round(t, 2),
                "runs_s": [round(r[0], 2) for r in runs],
                "files_per_s": round(checked["files"] / t),
                "chunks_per_s": round(checked["chunks"] / t),
                "verify_s": round(verify_t, 2),
                "verify_replicas": sum(x.get("chunks", 0) for x in v.values()),
                "verify_bytes": sum(x.get("bytes", 0) for x in v.values()),
                "create_files_per_s": round(files / created),
            }
        finally:
            dfs("local", "down", "--dir", str(state), timeout=300)


def dfs_ok(state: Path) -> bool:
    import subprocess

    proc = subprocess.run(
        [*DFS, "fsck", "--config", str(state / "admin.toml")],
        capture_output=True,
        timeout=600,
        check=False,
    )
    return proc.returncode == 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--data-files", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--in-process", action="store_true")
    p.add_argument("--chunks-per-file", type=int, default=1)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args()
    if args.in_process:
        result = in_process(args.files, args.chunks_per_file)
    else:
        result = real_cluster(args.files, args.data_files, args.workers)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
