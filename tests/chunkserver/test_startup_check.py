"""The check after an unclean shutdown: every chunk verified once, corrupt replicas reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from dfs.chunkserver import layout
from dfs.chunkserver.server import Chunkserver
from dfs.chunkserver.store import CLEAN_MARKER, ChunkStore
from dfs.config import ChunkserverConfig, ClusterConfig, Config
from dfs.security.ca import issue_certificate
from dfs.security.identity import Role
from dfs.types import BLOCK_SIZE
from tests.chunkserver.cluster import Cluster, running_cluster

pytestmark = pytest.mark.unit

V = 2


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed * 7 + (i >> 8)) & 0xFF for i in range(n))


def flip_byte(data_dir: Path, chunk_id: int, offset: int) -> None:
    path = layout.data_path(data_dir / "chunks", chunk_id)
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


async def make_server(
    cl: Cluster, tmp_path: Path, data_dir: Path, scrub_rate: float
) -> Chunkserver:
    tls = await trio.to_thread.run_sync(
        issue_certificate, tmp_path / "ca", Role.CHUNKSERVER, "cs7", tmp_path / "cs7-certs"
    )
    config = Config(
        path=None,
        cluster=ClusterConfig(metaservers=(cl.meta_address,)),
        tls=tls,
        chunkserver=ChunkserverConfig(
            id="cs7",
            listen="127.0.0.1:0",
            data_dir=data_dir,
            heartbeat_interval=0.02,
            scrub_rate=scrub_rate,
        ),
    )
    return Chunkserver(config)


@pytest.mark.parametrize("scrub_rate", [0.0, 16.0])
async def test_unclean_shutdown_verifies_every_chunk_once(
    tmp_path: Path, scrub_rate: float, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "cs7-data"
    with ChunkStore(data_dir) as store:  # closed without the marker: as after kill -9
        store.write(1, V, 0, pattern(3 * BLOCK_SIZE))
        store.write(2, V, 0, pattern(2 * BLOCK_SIZE + 10, seed=1))
        store.write(3, V, 0, b"small")
    flip_byte(data_dir, 2, BLOCK_SIZE + 5)
    caplog.set_level("INFO")
    async with running_cluster(tmp_path, n=0) as cl:
        server = await make_server(cl, tmp_path, data_dir, scrub_rate)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            with trio.fail_after(10):
                await server.startup_checked.wait()
            check = server.statistics().startup_check
            assert check is not None
            total = 3 * BLOCK_SIZE + 2 * BLOCK_SIZE + 10 + 5
            assert (check.chunks, check.corrupt) == (3, 1)
            assert check.bytes >= total
            await cl.meta.wait_for(lambda: cl.meta.reports, timeout=5)
            (report,) = cl.meta.reports
            assert (report["id"], report["chunk_id"], report["version"]) == ("cs7", 2, V)
            assert "block(s) 1" in report["reason"]
            # the first background pass waits for the interval: nothing verified twice
            assert server.statistics().scrub.scrubbed_chunks == 3
            nursery.cancel_scope.cancel()
    assert "unclean shutdown: verified 3 chunks" in caplog.text
    assert (data_dir / CLEAN_MARKER).exists()  # a graceful stop


async def test_clean_shutdown_skips_the_check(tmp_path: Path) -> None:
    data_dir = tmp_path / "cs7-data"
    with ChunkStore(data_dir) as store:
        store.write(1, V, 0, pattern(3 * BLOCK_SIZE))
    async with running_cluster(tmp_path, n=0) as cl:
        server = await make_server(cl, tmp_path, data_dir, scrub_rate=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            with trio.fail_after(10):
                await server.startup_checked.wait()
            assert server.statistics().startup_check is not None
            nursery.cancel_scope.cancel()
        assert (data_dir / CLEAN_MARKER).exists()
        assert cl.meta.reports == []
        # damage while stopped cleanly is for the scrubber, not the startup check
        flip_byte(data_dir, 1, 10)
        server = await make_server(cl, tmp_path, data_dir, scrub_rate=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            assert server.startup_checked.is_set()
            assert not (data_dir / CLEAN_MARKER).exists()  # taken while running
            with trio.fail_after(10):
                await server.registered.wait()
                n = len(cl.meta.heartbeats)
                await cl.meta.wait_for(lambda: len(cl.meta.heartbeats) >= n + 3)
            stats = server.statistics()
            assert stats.startup_check is None
            assert stats.scrub.scrubbed_chunks == 0
            assert cl.meta.reports == []
            nursery.cancel_scope.cancel()


async def test_stop_before_the_check_finished_checks_again(tmp_path: Path) -> None:
    data_dir = tmp_path / "cs7-data"
    with ChunkStore(data_dir) as store:
        store.write(1, V, 0, b"abc")
    async with running_cluster(tmp_path, n=0) as cl:
        cl.meta.fail_registers = 1000  # never registered: the check never starts
        server = await make_server(cl, tmp_path, data_dir, scrub_rate=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            await cl.meta.wait_for(lambda: cl.meta.registers)
            nursery.cancel_scope.cancel()
        assert not server.startup_checked.is_set()
        assert not (data_dir / CLEAN_MARKER).exists()
