"""`dfs fsck --verify` and `--repair` on a real cluster with injected damage of every kind the
issue names: a deleted replica file, a corrupted block, a stale replica, an orphan chunk, a
killed chunkserver (and with it a file whose only replica was there: lost until
`--zero-fill`).  Each is reported by path; the repair fixes what can be fixed; a second fsck
exits 0."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from dfs.chunkserver.layout import data_path
from tests.e2e.localcluster import Cluster, local_cluster, run_dfs, wait_for

pytestmark = pytest.mark.mount

MiB = 1 << 20


def _info(c: Cluster, path: Path) -> dict[str, Any]:
    out = run_dfs("info", str(path), "--config", str(c.state / "admin.toml"), "--json")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _replicas(c: Cluster, path: Path) -> tuple[int, list[str]]:
    """The file's first chunk id and the servers of its valid replicas."""
    chunk = _info(c, path)["chunks"][0]
    return chunk["chunk_id"], [r["server"] for r in chunk["replicas"] if r["state"] == "valid"]


def _chunk_file(c: Cluster, server: str, cid: int) -> Path:
    return data_path(c.state / "data" / server / "chunks", cid)


def _fsck(c: Cluster, *args: str) -> tuple[int, dict[str, Any]]:
    out = run_dfs("fsck", "--config", str(c.state / "admin.toml"), "--json", *args, check=False)
    assert out.returncode in (0, 1), out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return out.returncode, report


def _paths(report: dict[str, Any], kind: str) -> set[str]:
    return {e["path"] for e in report[kind] if "path" in e}


def test_fsck_reports_every_kind_of_damage_and_repair_fixes_it(tmp_path: Path) -> None:
    with local_cluster(
        tmp_path, "--chunkservers", "4", "--metaservers", "1", "--set", "client.attr_timeout=0.1"
    ) as c:
        admin = ("--config", str(c.state / "admin.toml"))
        m = c.mnt
        digests: dict[Path, str] = {}

        def write(path: Path, size: int) -> None:
            blob = os.urandom(size)
            path.write_bytes(blob)
            digests[path] = hashlib.sha256(blob).hexdigest()

        (m / "one").mkdir()
        run_dfs("setgoal", "1", str(m / "one"))
        write(m / "one" / "lost.bin", MiB)
        # Candidates of each kind, so that one is placed as the damage needs (goal 2 on four
        # servers, none of its replicas on K); pick() writes more if none is.
        for kind in "dcs":
            for i in range(8):
                write(m / f"{kind}{i}.bin", 256 * 1024)
        for i in range(8):
            write(m / f"u{i}.bin", 100_000)
        for i in range(6):
            write(m / f"k{i}.bin", 300_000)
        wait_for(lambda: _fsck(c)[0] == 0, 60, "a clean cluster after the writes")

        # The killed chunkserver K is where the goal-1 file's only replica is.
        _lost_cid, (k,) = _replicas(c, m / "one" / "lost.bin")

        def pick(kind: str, size: int) -> Path:
            """A file of that kind with no replica on K (so K's death does not lose it).
            Placement goes by free space, not by chance, so if none of the files written so
            far avoids K, more are written (a bounded number) until one does."""
            for p in sorted(m.glob(f"{kind}*.bin")):
                if k not in _replicas(c, p)[1]:
                    return p
            for i in range(100, 164):
                p = m / f"{kind}{i}.bin"
                write(p, size)
                if k not in _replicas(c, p)[1]:
                    return p
            raise AssertionError(f"64 more {kind}-files and every one has a replica on {k}")

        d_file, c_file = pick("d", 256 * 1024), pick("c", 256 * 1024)
        s_file, u = pick("s", 256 * 1024), pick("u", 100_000)
        run_dfs("admin", "replication", "pause", *admin)  # keep the damage for fsck to see

        # A stale replica and an orphan on Z: Z is down while s.bin is overwritten and
        # u?.bin is unlinked, and the metaserver restarts meanwhile (its queue of deletions
        # for Z is soft state): Z comes back with both.  Both files have two replicas on the
        # three servers other than K, so they share one: that is Z.
        u_cid, u_servers = _replicas(c, u)
        z = min(set(_replicas(c, s_file)[1]) & set(u_servers))
        os.kill(c.pid(z), signal.SIGKILL)
        time.sleep(0.5)
        blob = os.urandom(256 * 1024)  # in place: a truncate would free the chunk instead
        with open(s_file, "r+b") as f:
            f.write(blob)
        digests[s_file] = hashlib.sha256(blob).hexdigest()
        u.unlink()
        del digests[u]
        os.kill(c.pid("m1"), signal.SIGKILL)
        time.sleep(0.5)
        c.up()  # restarts m1 and Z (and nothing else: the rest runs)
        wait_for(
            lambda: (
                {s["id"]: s["state"] for s in c.admin_status()["chunkservers"]}.get(z) == "alive"
            ),
            30,
            f"{z} back",
        )

        # A deleted replica file and a corrupted block, on servers other than K.
        d_cid, (x, *_rest) = _replicas(c, d_file)
        _chunk_file(c, x, d_cid).unlink()
        c_cid, (y, *_rest) = _replicas(c, c_file)
        with open(_chunk_file(c, y, c_cid), "r+b") as f:
            f.seek(100_000)
            byte = f.read(1)
            f.seek(100_000)
            f.write(bytes([byte[0] ^ 0xFF]))

        # The killed chunkserver.
        os.kill(c.pid(k), signal.SIGKILL)
        k_files = {f"/{p.name}" for p in m.glob("*.bin") if k in _replicas(c, p)[1]}
        wait_for(
            lambda: {s["id"]: s["state"] for s in c.admin_status()["chunkservers"]}[k] != "alive",
            30,
            f"{k} seen dead",
        )

        code, report = _fsck(c, "--verify", "--orphan-age", "0")
        assert code == 1
        corrupt = {(e["path"], e["server"]) for e in report["corrupt_replicas"]}
        assert (f"/{d_file.name}", x) in corrupt and (f"/{c_file.name}", y) in corrupt, report
        stale = {(e["path"], e["server"]) for e in report["stale_replicas"]}
        assert (f"/{s_file.name}", z) in stale, (stale, z, _info(c, s_file))
        assert (u_cid, z) in {(e["chunk_id"], e["server"]) for e in report["orphan_chunks"]}
        assert _paths(report, "missing") == {"/one/lost.bin"}
        assert k_files <= _paths(report, "under_goal")
        assert {f"/{d_file.name}", f"/{c_file.name}", f"/{s_file.name}"} <= _paths(
            report, "under_goal"
        )
        text = run_dfs("fsck", *admin, "--orphan-age", "0", check=False)
        assert text.returncode == 1 and "/one/lost.bin" in text.stdout

        # Repair while paused is refused with one line; resumed, it fixes all it can.
        paused = run_dfs("fsck", *admin, "--repair", check=False)
        assert paused.returncode == 2 and "paused" in paused.stderr
        run_dfs("admin", "replication", "resume", *admin)
        out = run_dfs("fsck", *admin, "--repair", "--orphan-age", "0", "--json", check=False)
        assert out.returncode == 1, out.stdout + out.stderr  # the lost chunk is left
        result = json.loads(out.stdout)
        assert result["repairs"]["lost_left"] == 1
        after = result["after"]
        assert after["counts"]["missing"] == 1 and sum(after["counts"].values()) == 1, after
        # Data loss is explicit: --zero-fill replaces the lost chunk by zeros.
        out = run_dfs("fsck", *admin, "--repair", "--zero-fill", check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "1 lost chunks replaced by zeros" in out.stdout
        again = run_dfs("fsck", *admin, check=False)
        assert again.returncode == 0, again.stdout

        assert (m / "one" / "lost.bin").read_bytes() == bytes(MiB)
        del digests[m / "one" / "lost.bin"]
        for path, digest in digests.items():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path
