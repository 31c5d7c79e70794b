"""``/metrics`` of every daemon of a real local cluster: well-formed, and the numbers move
when a file is written and read back."""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.localcluster import local_cluster, wait_for
from tests.observability.test_metrics import check_exposition

pytestmark = pytest.mark.mount

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


def scrape(address: str) -> dict[str, float]:
    """``{"name{labels}": value}`` of one daemon (checked for well-formedness)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    check_exposition(text)
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _LINE.match(line)
        assert m is not None, line
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def total(samples: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in samples.items() if k == prefix or k.startswith(prefix + "{"))


def test_every_daemon_exposes_metrics_that_follow_the_work(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as c:
        http = c.http_addresses()
        assert set(http) == {"m1", "m2", "m3", "cs1", "cs2", "cs3", "mount"}
        metas = ["m1", "m2", "m3"]
        chunkservers = ["cs1", "cs2", "cs3"]
        before = {name: scrape(addr) for name, addr in http.items()}
        leaders = [m for m in metas if before[m]["dfs_raft_is_leader"] == 1]
        assert len(leaders) == 1
        leader = leaders[0]
        assert before[leader]['dfs_chunkservers{state="alive"}'] == 3
        for m in metas:
            assert before[m]["dfs_raft_term"] >= 1
            assert before[m]["dfs_raft_applied_index"] <= before[m]["dfs_raft_commit_index"]

        data = os.urandom(3 << 20)
        (c.mnt / "f.bin").write_bytes(data)
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        assert (c.mnt / "f.bin").read_bytes() == data

        after = {name: scrape(addr) for name, addr in http.items()}
        mount_before, mount_after = before["mount"], after["mount"]
        assert mount_after["dfs_client_written_bytes_total"] - mount_before[
            "dfs_client_written_bytes_total"
        ] == len(data)
        assert mount_after["dfs_client_read_bytes_total"] >= len(data)
        assert total(mount_after, "dfs_fuse_requests_total") > total(
            mount_before, "dfs_fuse_requests_total"
        )
        assert mount_after['dfs_fuse_request_duration_seconds_count{op="write"}'] >= 3
        # Goal 2: every byte reached two chunkservers, and was read from one at least.
        written = sum(
            after[cs]["dfs_chunkserver_written_bytes_total"]
            - before[cs]["dfs_chunkserver_written_bytes_total"]
            for cs in chunkservers
        )
        assert written == 2 * len(data)
        assert sum(after[cs]["dfs_chunkserver_read_bytes_total"] for cs in chunkservers) >= len(
            data
        )
        assert sum(after[cs]["dfs_chunkserver_chunks"] for cs in chunkservers) == 2
        chunk_writes = 'dfs_rpc_server_requests_total{method="chunk.write",outcome="ok"}'
        assert sum(after[cs].get(chunk_writes, 0) for cs in chunkservers) >= 3
        # The leader served the metadata calls; the log grew on every member.
        lead_b, lead_a = before[leader], after[leader]
        alloc = 'dfs_rpc_server_requests_total{method="file.alloc_chunk",outcome="ok"}'
        assert lead_a.get(alloc, 0) > lead_b.get(alloc, 0)
        assert lead_a["dfs_raft_commit_index"] > lead_b["dfs_raft_commit_index"]
        assert lead_a["dfs_chunks"] == 1
        assert lead_a["dfs_chunks_under_goal"] == 0 and lead_a["dfs_chunks_missing"] == 0
        assert lead_a["dfs_sessions"] >= 1  # the mount (chunkservers open theirs soon)
        for m in metas:
            if m != leader:
                # Chunk health is the leader's soft state: a follower does not pretend.
                assert "dfs_chunks_missing" not in after[m]

        def followers_caught_up() -> bool:
            now = {m: scrape(http[m]) for m in metas}
            target = now[leader]["dfs_raft_commit_index"]
            return all(now[m]["dfs_raft_applied_index"] >= target for m in metas)

        wait_for(followers_caught_up, 10, "followers to apply the leader's log")
