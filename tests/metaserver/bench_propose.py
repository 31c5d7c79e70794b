"""Quick figure: committed proposals per second with 1 and with 64 concurrent proposers.

Run: ``.venv/bin/python -m tests.metaserver.bench_propose [DIR] [--seconds S]``.  Every
proposal is a file creation, durable (fsync) before it is acknowledged; with many proposers
group commit shares one fsync among a whole batch.
"""

from __future__ import annotations

import argparse
import stat
import tempfile
from pathlib import Path

import trio

from dfs.metaserver.commit import Committer

ROOT = 1
CRED = {"uid": 0, "gid": 0}


async def measure(data_dir: Path, proposers: int, seconds: float) -> tuple[float, float]:
    """``(proposals per second, proposals per fsync)``."""
    c = Committer.recover(data_dir, node_id="bench", snapshot_every=1_000_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(c.run)
        await c.propose({"op": "init", "now_ns": 1, "goal": 1, "cluster_id": "bench"})
        before = c.statistics()
        deadline = trio.current_time() + seconds

        async def proposer(k: int) -> None:
            i = 0
            while trio.current_time() < deadline:
                name = b"p%d-%d" % (k, i)
                await c.propose(
                    {
                        "op": "mknod",
                        "now_ns": i,
                        "parent": ROOT,
                        "name": name,
                        "mode": stat.S_IFREG | 0o644,
                        "rdev": 0,
                        "cred": CRED,
                    }
                )
                i += 1

        start = trio.current_time()
        async with trio.open_nursery() as inner:
            for k in range(proposers):
                inner.start_soon(proposer, k)
        elapsed = trio.current_time() - start
        after = c.statistics()
        nursery.cancel_scope.cancel()
    done = after.proposals - before.proposals
    return done / elapsed, done / max(1, after.fsyncs - before.fsyncs)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", nargs="?", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="dfs-bench-"))
    for n in (1, 64):
        rate, per_fsync = await measure(base / f"p{n}", n, args.seconds)
        print(f"{n:3d} proposer(s): {rate:9.0f} proposals/s, {per_fsync:6.1f} proposals per fsync")


if __name__ == "__main__":
    trio.run(main)
