"""Throughput of the chunk store and of chain writes over loopback RPC (not a test).

Run: ``.venv/bin/python -m tests.chunkserver.bench [MiB]`` (default 256 MiB per measurement).
Wall-clock time is fine here: this measures the machine, it does not drive any logic.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import trio

from dfs.chunkserver.store import ChunkStore
from dfs.types import CHUNK_SIZE
from tests.chunkserver.cluster import running_cluster

MIB = 1024 * 1024


def _rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / MIB / seconds:8.1f} MiB/s"


def bench_store(root: Path, total: int) -> None:
    payload = bytes(range(256)) * (MIB // 256)
    per_chunk = CHUNK_SIZE // MIB
    with ChunkStore(root / "store") as store:
        t0 = time.perf_counter()
        for i in range(total // MIB):
            store.write(i // per_chunk, 1, (i % per_chunk) * MIB, payload)
        t1 = time.perf_counter()
        for i in range(total // MIB):
            data = store.read(i // per_chunk, 1, (i % per_chunk) * MIB, MIB)
            assert len(data) == MIB
        t2 = time.perf_counter()
        for cid in range(total // CHUNK_SIZE + 1):
            store.delete(cid)
        t3 = time.perf_counter()
        for i in range(total // MIB):
            store.write(1000 + i // per_chunk, 1, (i % per_chunk) * MIB, payload, sync=True)
        t4 = time.perf_counter()
    print(f"store  1 MiB sequential write:          {_rate(total, t1 - t0)}")
    print(f"store  1 MiB sequential read (verified): {_rate(total, t2 - t1)}")
    print(f"store  1 MiB sequential write + fdatasync each: {_rate(total, t4 - t3)}")


async def bench_rpc(root: Path, total: int) -> None:
    payload = bytes(range(256)) * (MIB // 256)
    per_chunk = CHUNK_SIZE // MIB
    async with running_cluster(root / "cluster", heartbeat=1.0) as cl:
        for label, chain, base in (("1 replica ", [], 0), ("3 replicas", [1, 2], 100)):
            t0 = time.perf_counter()
            for i in range(total // MIB):
                await cl.client.call(
                    cl.servers[0].address,
                    "chunk.write",
                    {
                        "chunk_id": base + i // per_chunk,
                        "version": 1,
                        "offset": (i % per_chunk) * MIB,
                        "data": payload,
                        "chain": cl.chain(*chain),
                    },
                )
            dt = time.perf_counter() - t0
            print(f"rpc    1 MiB chain write, {label}, sequential: {_rate(total, dt)}")

        # 8 writers in parallel, each on its own chunk
        async def writer(k: int) -> None:
            for i in range(total // MIB // 8):
                await cl.client.call(
                    cl.servers[0].address,
                    "chunk.write",
                    {
                        "chunk_id": 200 + k,
                        "version": 1,
                        "offset": (i % per_chunk) * MIB,
                        "data": payload,
                        "chain": cl.chain(1, 2),
                    },
                )

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for k in range(8):
                nursery.start_soon(writer, k)
        dt = time.perf_counter() - t0
        print(f"rpc    1 MiB chain write, 3 replicas, 8 in parallel: {_rate(total, dt)}")

        t0 = time.perf_counter()
        for i in range(total // MIB):
            await cl.client.call(
                cl.servers[1].address,
                "chunk.read",
                {
                    "chunk_id": 100 + i // per_chunk,
                    "version": 1,
                    "offset": (i % per_chunk) * MIB,
                    "length": MIB,
                },
            )
        dt = time.perf_counter() - t0
        print(f"rpc    1 MiB read, sequential:          {_rate(total, dt)}")


def main() -> None:
    total = (int(sys.argv[1]) if len(sys.argv) > 1 else 256) * MIB
    with tempfile.TemporaryDirectory(prefix="dfs-bench-") as tmp:
        bench_store(Path(tmp), total)
        trio.run(bench_rpc, Path(tmp), total)


if __name__ == "__main__":
    main()
