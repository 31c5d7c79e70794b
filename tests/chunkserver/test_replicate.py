"""Metaserver-driven chunk methods over real RPC: chunk.set_version, chunk.info, chunk.replicate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from dfs.chunkserver import layout
from dfs.chunkserver.store import COPY_VERSION, ChunkStore
from dfs.errors import (
    BadRequest,
    Busy,
    ChunkCorrupt,
    ChunkNotFound,
    StaleChunkVersion,
    Unauthorized,
)
from dfs.rpc.client import RpcClientPool
from dfs.security.identity import Role, TlsFiles
from dfs.types import BLOCK_SIZE
from tests.chunkserver.cluster import Cluster, running_cluster

pytestmark = pytest.mark.unit

CID = 0xBEEF
V = 5
MIB = 1 << 20


def pattern(n: int, seed: int = 0) -> bytes:
    # a prime period (so blocks differ), shifted by ``seed``; cheap even for 6 MiB
    base = bytes(range(251)) * (n // 251 + 1)
    return base[:n].translate(bytes((i + seed) & 0xFF for i in range(256)))


@asynccontextmanager
async def caller(tls: TlsFiles, name: str) -> AsyncIterator[RpcClientPool]:
    async with RpcClientPool(tls, name=name, expect_roles={Role.CHUNKSERVER}) as pool:
        yield pool


def store_of(cl: Cluster, i: int) -> ChunkStore:
    store = cl.servers[i].store
    assert store is not None
    return store


async def put(cl: Cluster, i: int, data: bytes, version: int = V, cid: int = CID) -> None:
    """Write ``data`` to server ``i`` only, in pieces that fit one frame."""
    for offset in range(0, len(data), 4 * MIB):
        await cl.client.call(
            cl.servers[i].address,
            "chunk.write",
            {
                "chunk_id": cid,
                "version": version,
                "offset": offset,
                "data": data[offset : offset + 4 * MIB],
                "chain": [],
            },
            timeout=30,
        )


async def read_all(cl: Cluster, i: int, version: int = V) -> bytes:
    data = await cl.client.call(
        cl.servers[i].address,
        "chunk.read",
        {"chunk_id": CID, "version": version, "offset": 0, "length": 16 * MIB},
        timeout=30,
    )
    assert isinstance(data, bytes)
    return data


def replicate_params(cl: Cluster, source: int, **extra: Any) -> dict[str, Any]:
    src = cl.servers[source]
    return {
        "chunk_id": CID,
        "version": V,
        "source": {"id": src.id, "address": src.address},
        **extra,
    }


async def test_set_version_and_info_roles(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, n=1) as cl:
        address = cl.servers[0].address
        await put(cl, 0, b"hello")
        for method, params in [
            ("chunk.set_version", {"chunk_id": CID, "version": V, "new_version": V + 1}),
            ("chunk.info", {"chunk_id": CID}),
            ("chunk.replicate", replicate_params(cl, 0)),
        ]:
            with pytest.raises(Unauthorized):
                await cl.client.call(address, method, params)
        async with caller(cl.meta_tls, "meta") as meta, caller(cl.admin_tls, "admin") as admin:
            info = await meta.call(address, "chunk.info", {"chunk_id": CID})
            assert (info["version"], info["length"]) == (V, 5)
            assert isinstance(info["digest"], int)
            reply = await meta.call(
                address, "chunk.set_version", {"chunk_id": CID, "version": V, "new_version": V + 1}
            )
            assert reply == {"length": 5}
            # retried: already there
            reply = await admin.call(
                address, "chunk.set_version", {"chunk_id": CID, "version": V, "new_version": V + 1}
            )
            assert reply == {"length": 5}
            with pytest.raises(StaleChunkVersion) as stale:
                await meta.call(
                    address,
                    "chunk.set_version",
                    {"chunk_id": CID, "version": V - 1, "new_version": V + 7},
                )
            assert stale.value.details["version"] == V + 1
            with pytest.raises(BadRequest):
                await meta.call(
                    address,
                    "chunk.set_version",
                    {"chunk_id": CID, "version": V + 1, "new_version": 0},
                )
            with pytest.raises(ChunkNotFound):
                await meta.call(address, "chunk.info", {"chunk_id": CID + 1})
            after = await meta.call(address, "chunk.info", {"chunk_id": CID})
            assert after == {**info, "version": V + 1}
        with pytest.raises(StaleChunkVersion):
            await read_all(cl, 0, V)
        assert await read_all(cl, 0, V + 1) == b"hello"
        assert cl.servers[0].statistics().service.set_versions == 2


async def test_replicate_copies_a_multi_block_chunk(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, n=2) as cl:
        data = pattern(5 * MIB + 12_345)
        await put(cl, 0, data)
        async with caller(cl.meta_tls, "meta") as meta:
            reply = await meta.call(
                cl.servers[1].address, "chunk.replicate", replicate_params(cl, 0), timeout=60
            )
            assert reply == {"length": len(data)}
            assert await read_all(cl, 1) == data
            infos = [
                await meta.call(s.address, "chunk.info", {"chunk_id": CID}) for s in cl.servers
            ]
            assert infos[0] == infos[1]
        assert store_of(cl, 1).list_chunks() == [(CID, V, len(data))]
        stats = cl.servers[1].statistics().service
        assert (stats.replications, stats.bytes_replicated) == (1, len(data))


async def test_replicate_an_empty_chunk_and_bad_params(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, n=2) as cl:
        await cl.client.call(
            cl.servers[0].address,
            "chunk.truncate",
            {"chunk_id": CID, "version": V, "length": 0, "chain": []},
        )
        target = cl.servers[1].address
        async with caller(cl.meta_tls, "meta") as meta:
            assert await meta.call(target, "chunk.replicate", replicate_params(cl, 0)) == {
                "length": 0
            }
            for bad in (
                {"version": 0},
                {"rate": -1.0},
                {"rate": "fast"},
                {"source": {"id": "cs0"}},
            ):
                with pytest.raises(BadRequest):
                    await meta.call(target, "chunk.replicate", {**replicate_params(cl, 0), **bad})
        assert store_of(cl, 1).list_chunks() == [(CID, V, 0)]


async def test_replicate_from_a_corrupt_source_leaves_no_copy(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, n=2) as cl:
        data = pattern(6 * MIB)
        await put(cl, 0, data)
        # a bad block in the second piece: the first piece is already copied when it fails
        bad_block = (5 * MIB) // BLOCK_SIZE
        path = layout.data_path(cl.data_dirs[0] / "chunks", CID)
        with path.open("r+b") as f:
            f.seek(bad_block * BLOCK_SIZE + 3)
            f.write(b"\xff\x00")
        target = cl.servers[1].address
        async with caller(cl.meta_tls, "meta") as meta:
            with pytest.raises(ChunkCorrupt) as corrupt:
                await meta.call(target, "chunk.replicate", replicate_params(cl, 0), timeout=60)
            assert corrupt.value.details["failed"] == "cs0"
            assert corrupt.value.details["failed_address"] == cl.servers[0].address
            assert store_of(cl, 1).list_chunks() == []
            # the source's version or the chunk itself missing: the same, named
            with pytest.raises(StaleChunkVersion) as stale:
                await meta.call(
                    target, "chunk.replicate", {**replicate_params(cl, 0), "version": V + 1}
                )
            assert stale.value.details["failed"] == "cs0"
            with pytest.raises(ChunkNotFound) as missing:
                await meta.call(
                    target, "chunk.replicate", {**replicate_params(cl, 0), "chunk_id": CID + 1}
                )
            assert missing.value.details["failed"] == "cs0"
        assert store_of(cl, 1).list_chunks() == []
        assert cl.servers[1].statistics().service.replication_failures == 3
        # the source reported its own corrupt replica when it was read
        await cl.meta.wait_for(lambda: any(r["id"] == "cs0" for r in cl.meta.reports))


async def test_replicate_replaces_a_stale_local_copy(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, n=2) as cl:
        data = pattern(BLOCK_SIZE * 3 + 77, seed=3)
        await put(cl, 0, data)
        await put(cl, 1, pattern(4 * BLOCK_SIZE + 5, seed=9), version=V - 1)
        async with caller(cl.meta_tls, "meta") as meta:
            reply = await meta.call(
                cl.servers[1].address, "chunk.replicate", replicate_params(cl, 0)
            )
        assert reply == {"length": len(data)}
        assert await read_all(cl, 1) == data
        assert store_of(cl, 1).list_chunks() == [(CID, V, len(data))]


async def test_replicate_is_paced_and_refuses_a_second_copy_at_once(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, n=2) as cl:
        data = pattern(5 * MIB)
        await put(cl, 0, data)
        target = cl.servers[1].address
        # 4 MiB, then a pause until 0.5 s, then the last 1 MiB (short: the end)
        params = replicate_params(cl, 0, rate=8.0 * MIB)
        replies: list[Any] = []
        async with caller(cl.meta_tls, "meta") as meta, trio.open_nursery() as nursery:
            start = trio.current_time()

            async def first() -> None:
                replies.append(await meta.call(target, "chunk.replicate", params, timeout=30))

            nursery.start_soon(first)
            with trio.fail_after(10):
                while store_of(cl, 1).list_chunks() != [(CID, COPY_VERSION, 4 * MIB)]:
                    await trio.sleep(0.01)
            with pytest.raises(Busy):
                await meta.call(target, "chunk.replicate", params, timeout=30)
            # meanwhile the incomplete copy is not served and not announced
            with pytest.raises(StaleChunkVersion):
                await read_all(cl, 1)
        assert replies == [{"length": len(data)}]
        assert trio.current_time() - start >= 0.5
        assert await read_all(cl, 1) == data
