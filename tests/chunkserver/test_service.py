"""Chunkservers over real loopback RPC with mutual TLS, and a fake metaserver."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import pytest
import trio

from dfs.chunkserver import layout
from dfs.chunkserver.server import Chunkserver
from dfs.config import ChunkserverConfig, ClusterConfig, Config
from dfs.errors import (
    BadRequest,
    ChunkCorrupt,
    ChunkNotFound,
    StaleChunkVersion,
    Unauthorized,
    Unavailable,
)
from dfs.rpc.client import RpcClient
from dfs.security.ca import issue_certificate
from dfs.security.identity import Role
from dfs.types import BLOCK_SIZE, CHUNK_SIZE
from tests.chunkserver.cluster import Cluster, running_cluster

pytestmark = pytest.mark.unit

CID = 0xC0FFEE
V = 7


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 13 + seed + (i >> 9)) & 0xFF for i in range(n))


async def write(
    cl: Cluster, first: int, chain: list[int], offset: int, data: bytes, *, sync: bool = False
) -> int:
    reply = await cl.client.call(
        cl.servers[first].address,
        "chunk.write",
        {
            "chunk_id": CID,
            "version": V,
            "offset": offset,
            "data": data,
            "chain": cl.chain(*chain),
            "sync": sync,
        },
        timeout=30,
    )
    length = reply["length"]
    assert isinstance(length, int)
    return length


async def read(cl: Cluster, i: int, offset: int = 0, length: int = 1 << 24) -> bytes:
    data = await cl.client.call(
        cl.servers[i].address,
        "chunk.read",
        {"chunk_id": CID, "version": V, "offset": offset, "length": length},
        timeout=30,
    )
    assert isinstance(data, bytes)
    return data


def free_port() -> int:
    """A loopback port with nothing listening (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_chain_write_lands_on_all_replicas(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cl:
        model = bytearray()
        pieces = [(0, pattern(BLOCK_SIZE * 3)), (100, b"x" * 70_000), (400_000, pattern(5000, 3))]
        for offset, data in pieces:
            length = await write(cl, 0, [1, 2], offset, data, sync=offset == 100)
            if offset > len(model):
                model += bytes(offset - len(model))
            model[offset : offset + len(data)] = data
            assert length == len(model)
        for i in range(3):
            assert await read(cl, i) == model
            assert await read(cl, i, 150_000, 10) == model[150_000:150_010]
            store = cl.servers[i].store
            assert store is not None
            assert store.list_chunks() == [(CID, V, len(model))]
        # truncate and sync go down the chain too
        await cl.client.call(
            cl.servers[0].address,
            "chunk.truncate",
            {"chunk_id": CID, "version": V, "length": 1000, "chain": cl.chain(1, 2), "sync": True},
        )
        await cl.client.call(
            cl.servers[0].address, "chunk.sync", {"chunk_id": CID, "chain": cl.chain(1, 2)}
        )
        for i in range(3):
            assert await read(cl, i) == model[:1000]
        stats = [s.statistics().service for s in cl.servers]
        assert [s.writes for s in stats] == [3, 3, 3]
        assert stats[0].bytes_written == sum(len(d) for _, d in pieces)
        assert [s.truncates for s in stats] == [1, 1, 1]
        assert stats[2].reads == 3 and stats[2].bytes_read == len(model) + 10 + 1000


async def test_unreachable_downstream_is_named(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, forward_timeout=1.0) as cl:
        ghost = {"id": "ghost", "address": f"127.0.0.1:{free_port()}"}
        with pytest.raises(Unavailable) as info:
            await cl.client.call(
                cl.servers[0].address,
                "chunk.write",
                {
                    "chunk_id": CID,
                    "version": V,
                    "offset": 0,
                    "data": b"abc",
                    "chain": [*cl.chain(1), ghost],
                },
                timeout=30,
            )
        assert info.value.details["failed"] == "ghost"
        assert info.value.details["failed_address"] == ghost["address"]
        # the healthy replicas stored it anyway; the client decides what to do with them
        assert await read(cl, 0) == b"abc"
        assert await read(cl, 1) == b"abc"
        assert cl.servers[0].statistics().service.forward_failures == 1


async def test_stopped_middle_server_is_named(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, forward_timeout=1.0) as cl:
        await write(cl, 0, [1, 2], 0, b"first")
        cl.stop(1)
        await trio.sleep(0.05)
        with pytest.raises(Unavailable) as info:
            await write(cl, 0, [1, 2], 5, b"second")
        assert info.value.details["failed"] == "cs1"


async def test_failure_at_the_end_of_the_chain_passes_through(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cl:
        store = cl.servers[2].store
        assert store is not None
        await trio.to_thread.run_sync(store.write, CID, V + 1, 0, b"newer")
        with pytest.raises(StaleChunkVersion) as info:
            await write(cl, 0, [1, 2], 0, b"data")
        assert info.value.details["failed"] == "cs2"
        assert info.value.details["version"] == V + 1
        # a local failure names the first server itself
        with pytest.raises(StaleChunkVersion) as info:
            await write(cl, 2, [0], 0, b"data")
        assert info.value.details["failed"] == "cs2"


async def test_corrupt_replica_is_reported(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cl:
        data = pattern(3 * BLOCK_SIZE)
        await write(cl, 0, [1, 2], 0, data)
        path = layout.data_path(cl.data_dirs[1] / "chunks", CID)
        raw = bytearray(path.read_bytes())
        raw[BLOCK_SIZE + 5] ^= 0xFF
        path.write_bytes(bytes(raw))
        with pytest.raises(ChunkCorrupt) as info:
            await read(cl, 1)
        assert info.value.details["blocks"] == [1]
        # a read that misses the bad block is fine; other replicas are fine
        assert await read(cl, 1, 0, BLOCK_SIZE) == data[:BLOCK_SIZE]
        assert await read(cl, 0) == data
        await cl.meta.wait_for(lambda: len(cl.meta.reports) >= 1)
        report = cl.meta.reports[0]
        assert (report["id"], report["chunk_id"], report["version"]) == ("cs1", CID, V)
        assert isinstance(report["reason"], str)
        stats = cl.servers[1].statistics().service
        assert stats.corrupt_reads == 1 and stats.corrupt_blocks == 1
        assert stats.bad_reports_sent == 1


async def test_registration_heartbeat_and_deletes(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cl:
        first = {r["id"]: r for r in cl.meta.registers}
        assert set(first) == {"cs0", "cs1", "cs2"}
        for server in cl.servers:
            reg = first[server.id]
            assert reg["address"] == server.address
            assert not reg["address"].endswith(":0")
            assert reg["zone"] == "default" and reg["chunks"] == []
            assert reg["capacity"] > 0 and 0 <= reg["free"] <= reg["capacity"]
        await write(cl, 0, [], 0, b"doomed")
        cl.meta.deletes["cs0"] = [CID, 999]
        store = cl.servers[0].store
        assert store is not None
        with trio.fail_after(10):
            while store.has_chunk(CID):
                await trio.sleep(0.02)
        assert cl.servers[0].statistics().deleted_by_metaserver == 1
        with pytest.raises(ChunkNotFound):
            await read(cl, 0)

        # the metaserver forgets cs1: it registers again, listing its chunks
        await write(cl, 1, [], 0, b"kept")
        cl.meta.known.discard("cs1")
        await cl.meta.wait_for(lambda: sum(r["id"] == "cs1" for r in cl.meta.registers) >= 2)
        again = [r for r in cl.meta.registers if r["id"] == "cs1"][-1]
        assert again["chunks"] == [[CID, V]]
        with trio.fail_after(10):
            while cl.servers[1].statistics().registrations < 2:
                await trio.sleep(0.01)


async def test_registration_is_retried(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, n=0) as cl:
        cl.meta.fail_registers = 2
        tls = await trio.to_thread.run_sync(
            issue_certificate, tmp_path / "ca", Role.CHUNKSERVER, "late", tmp_path / "late"
        )
        config = Config(
            path=None,
            cluster=ClusterConfig(metaservers=(cl.meta_address,)),
            tls=tls,
            chunkserver=ChunkserverConfig(
                id="late", listen="127.0.0.1:0", data_dir=tmp_path / "late-data"
            ),
        )
        server = Chunkserver(config)
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(server.run)
            assert bound.startswith("127.0.0.1:") and not bound.endswith(":0")
            assert server.address == bound
            with trio.fail_after(10):
                await server.registered.wait()
            assert [r.get("refused", False) for r in cl.meta.registers] == [True, True, False]
            assert cl.meta.registers[-1]["address"] == bound
            nursery.cancel_scope.cancel()


async def test_roles_and_bad_params(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, n=1) as cl:
        address = cl.servers[0].address
        await write(cl, 0, [], 0, b"abc")
        with pytest.raises(Unauthorized):
            await cl.client.call(address, "chunk.delete", {"chunk_id": CID})
        with pytest.raises(BadRequest):
            await cl.client.call(
                address, "chunk.write", {"chunk_id": CID, "version": V, "offset": 0}
            )
        with pytest.raises(BadRequest):
            await cl.client.call(
                address,
                "chunk.write",
                {"chunk_id": CID, "version": V, "offset": 0, "data": b"", "chain": [{"id": 1}]},
            )
        with pytest.raises(BadRequest):
            await read(cl, 0, 0, 1 << 30)
        async with RpcClient(
            address, cl.meta_tls, name="meta", expect_roles={Role.CHUNKSERVER}
        ) as meta:
            await meta.call("chunk.delete", {"chunk_id": CID})
            await meta.call("chunk.delete", {"chunk_id": CID})  # idempotent
        with pytest.raises(ChunkNotFound):
            await read(cl, 0)
        assert cl.servers[0].statistics().service.deletes == 1


async def test_fails_over_to_the_next_metaserver(tmp_path: Path) -> None:
    async with running_cluster(tmp_path, n=0) as cl:
        tls = await trio.to_thread.run_sync(
            issue_certificate, tmp_path / "ca", Role.CHUNKSERVER, "cs9", tmp_path / "cs9"
        )
        dead = f"127.0.0.1:{free_port()}"
        config = Config(
            path=None,
            cluster=ClusterConfig(metaservers=(dead, cl.meta_address)),
            tls=tls,
            chunkserver=ChunkserverConfig(
                id="cs9",
                listen="127.0.0.1:0",
                data_dir=tmp_path / "cs9-data",
                heartbeat_interval=0.05,
            ),
        )
        server = Chunkserver(config, meta_timeout=0.5)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            with trio.fail_after(10):
                await server.registered.wait()
            await cl.meta.wait_for(lambda: any(h["id"] == "cs9" for h in cl.meta.heartbeats))
            assert server.statistics().heartbeat_failures == 0
            nursery.cancel_scope.cancel()


async def test_write_extents_lands_on_all_replicas(tmp_path: Path) -> None:
    async with running_cluster(tmp_path) as cl:
        pieces = [(5000, pattern(4096, 1)), (0, pattern(100, 2)), (3 * BLOCK_SIZE, b"z" * 10)]
        reply = await cl.client.call(
            cl.servers[0].address,
            "chunk.write_extents",
            {
                "chunk_id": CID,
                "version": V,
                "extents": [[o, d] for o, d in pieces],
                "chain": cl.chain(1, 2),
                "sync": True,
            },
            timeout=30,
        )
        model = bytearray(3 * BLOCK_SIZE + 10)
        for offset, data in pieces:
            model[offset : offset + len(data)] = data
        assert reply == {"length": len(model)}
        for i in range(3):
            assert await read(cl, i) == model
        for bad in ([[0]], [[-1, b"x"]], [[0, "text"]], [[CHUNK_SIZE, b"x"]]):
            with pytest.raises(BadRequest):
                await cl.client.call(
                    cl.servers[0].address,
                    "chunk.write_extents",
                    {"chunk_id": CID, "version": V, "extents": bad, "chain": []},
                    timeout=30,
                )


async def test_overlapping_writers_are_ordered_by_the_head(tmp_path: Path) -> None:
    """Many writers racing on the same bytes through one head: every replica ends up with
    the same bytes (the head holds overlapping ranges until all replicas applied them)."""
    async with running_cluster(tmp_path) as cl:
        await write(cl, 0, [1, 2], 0, bytes(4 * BLOCK_SIZE))

        async def writer(seed: int) -> None:
            for k in range(10):
                offset = (seed * 7919 + k * 104729) % (3 * BLOCK_SIZE)
                await write(cl, 0, [1, 2], offset, pattern(BLOCK_SIZE // 2 + seed * 97, seed + k))

        async with trio.open_nursery() as nursery:
            for seed in range(8):
                nursery.start_soon(writer, seed)
        copies = [await read(cl, i) for i in range(3)]
        assert copies[0] == copies[1] == copies[2]


def test_range_overlap_matches_brute_force() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from dfs.chunkserver.service import _merge, _overlap

    ranges = st.lists(
        st.tuples(st.integers(0, 200), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1])),
        max_size=8,
    )

    def cells(rs: list[tuple[int, int]]) -> set[int]:
        return {x for lo, hi in rs for x in range(lo, max(hi, lo + 1))}

    @settings(max_examples=300, deadline=None)
    @given(ranges, ranges)
    def check(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
        ma, mb = _merge(a), _merge(b)
        assert cells(ma) == cells(a)
        assert all(x[1] < y[0] for x, y in itertools.pairwise(ma))
        assert _overlap(ma, mb) == bool(cells(a) & cells(b))

    check()
