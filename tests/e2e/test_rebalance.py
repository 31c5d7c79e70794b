"""Operations on a real cluster with live readers: `dfs rebalance` after two empty chunkservers
join, `dfs chunkserver decommission` with no chunk ever under its goal, maintenance without a
re-replication storm.

The data set is small in the suite (DFS_REBALANCE_MIB, default 96 MiB); the measurement in
docs/benchmarks.md runs the same test with DFS_REBALANCE_MIB=2048.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.localcluster import Cluster, add_chunkserver, local_cluster, run_dfs, wait_for

pytestmark = pytest.mark.mount

MiB = 1 << 20


class Reader(threading.Thread):
    """Reads every file again and again, checking each one's digest, until stopped."""

    def __init__(self, files: dict[Path, str]) -> None:
        super().__init__(daemon=True)
        self.files = files
        self.stop = threading.Event()
        self.reads = 0
        self.errors: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + 3600
        while not self.stop.is_set() and time.monotonic() < deadline:
            for path, digest in self.files.items():
                if self.stop.is_set():
                    return
                try:
                    with open(path, "rb") as f:
                        got = hashlib.sha256(f.read()).hexdigest()
                except OSError as exc:
                    self.errors.append(f"{path.name}: {exc}")
                    continue
                self.reads += 1
                if got != digest:
                    self.errors.append(f"{path.name}: digest mismatch")


def _status(c: Cluster) -> dict[str, Any]:
    out = run_dfs("status", "--config", str(c.state / "admin.toml"), "--json", check=False)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _servers(c: Cluster) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in _status(c)["chunkservers"]}


def _write_files(c: Cluster, total_mib: int) -> dict[Path, str]:
    size = 4 * MiB if total_mib <= 256 else 64 * MiB
    files: dict[Path, str] = {}
    (c.mnt / "data").mkdir()
    for i in range(max(1, total_mib * MiB // size)):
        blob = os.urandom(size)
        path = c.mnt / "data" / f"f{i:04d}"
        path.write_bytes(blob)
        files[path] = hashlib.sha256(blob).hexdigest()
    return files


def _drop_caches() -> None:
    # The readers must go to the chunkservers, not the page cache.
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def test_rebalance_decommission_and_maintenance_with_readers(tmp_path: Path) -> None:
    total_mib = int(os.environ.get("DFS_REBALANCE_MIB", "96"))
    capacity = max(512, total_mib * 4) * MiB
    extra: list[subprocess.Popen[bytes]] = []
    with local_cluster(
        tmp_path,
        "--chunkservers", "2", "--metaservers", "1",
        "--set", f"chunkserver.capacity_bytes={capacity}",
        "--set", "metaserver.replication_grace=3",
        "--set", "metaserver.chunkserver_timeout=3",
        "--set", "client.attr_timeout=0.1",
    ) as c:  # fmt: skip
        admin = ("--config", str(c.state / "admin.toml"))
        try:
            files = _write_files(c, total_mib)
            wait_for(lambda: _status(c)["counts"]["under_goal"] == 0, 60, "writes settled")
            # Two empty chunkservers join the running cluster (config + certificate).
            extra += [add_chunkserver(c, "cs3"), add_chunkserver(c, "cs4")]
            wait_for(
                lambda: all(_servers(c).get(s, {}).get("state") == "alive" for s in ("cs3", "cs4")),
                30,
                "cs3 and cs4 to register",
            )
            dry = json.loads(
                run_dfs("rebalance", *admin, "--threshold", "5", "--dry-run", "--json").stdout
            )
            assert dry["moves"] > 0 and dry["before"]["cs3"] == 0.0

            # Ctrl-C in the middle of a (slow) rebalance: it stops, and the cluster is
            # consistent: nothing under its goal, fsck clean once deletions are handed out.
            slow = subprocess.Popen(
                [sys.executable, "-m", "dfs", "rebalance", *admin, "--threshold", "5",
                 "--bandwidth", "2"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(3)
            slow.send_signal(signal.SIGINT)
            out_c, err_c = slow.communicate(timeout=60)
            assert slow.returncode == 130, out_c + err_c
            assert "stopped" in out_c and "Traceback" not in err_c
            assert _status(c)["counts"]["under_goal"] == 0
            wait_for(lambda: run_dfs("fsck", *admin, check=False).returncode == 0, 30, "fsck clean")

            reader = Reader(files)
            _drop_caches()
            reader.start()
            try:
                t0 = time.monotonic()
                out = run_dfs("rebalance", *admin, "--threshold", "5", "--json", timeout=1800)
                elapsed = time.monotonic() - t0
            finally:
                reader.stop.set()
                reader.join(timeout=120)
            report = json.loads(out.stdout)
            assert report["state"] == "balanced", report
            mean = report["mean"]
            assert all(abs(u - mean) <= 5 for u in report["utilization"].values()), report
            assert reader.errors == [] and reader.reads > 0
            print(
                f"\nrebalance: {report['moves']} moves, {report['bytes'] / MiB:.0f} MiB in "
                f"{elapsed:.1f} s ({report['bytes'] / MiB / elapsed:.1f} MiB/s); "
                f"{reader.reads} verified reads during it; utilization {report['utilization']}"
            )

            # What the chunkservers report themselves agrees once deletions are done.
            def reported_balanced() -> bool:
                s = _servers(c)
                pct = {i: 100 * v["used"] / v["capacity"] for i, v in s.items()}
                return bool(max(pct.values()) - min(pct.values()) <= 2 * 5 + 1)

            wait_for(reported_balanced, 30, "chunkservers to report balanced use")
            assert run_dfs("fsck", *admin, check=False).returncode == 0

            # Decommission cs1 while reading: no chunk is ever under its goal.
            reader = Reader(files)
            _drop_caches()
            reader.start()
            samples = under = 0
            try:
                run_dfs("chunkserver", "decommission", "cs1", *admin)
                deadline = time.monotonic() + 600
                while time.monotonic() < deadline:
                    st = _status(c)
                    samples += 1
                    under += st["counts"]["under_goal"] + st["counts"]["missing"]
                    cs1 = next(s for s in st["chunkservers"] if s["id"] == "cs1")
                    if cs1["mode"] == "decommissioned":
                        break
                    time.sleep(0.2)
            finally:
                reader.stop.set()
                reader.join(timeout=120)
            assert cs1["mode"] == "decommissioned", cs1
            assert under == 0 and samples > 1
            assert reader.errors == []
            listing = run_dfs("chunkserver", "list", *admin).stdout
            assert "DECOMMISSIONED" in listing
            # Safe to remove: stop it; every file still reads back and fsck is clean.
            os.kill(c.pid("cs1"), signal.SIGKILL)
            _drop_caches()
            for path, digest in files.items():
                assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
            wait_for(lambda: _status(c)["counts"]["under_goal"] == 0, 30, "nothing under goal")

            # Maintenance: cs2 stops for longer than the grace period; nothing is copied.
            run_dfs("chunkserver", "maintenance", "cs2", "--for", "600", *admin)
            copies_before = _status(c)["replication"]["copies"]
            os.kill(c.pid("cs2"), signal.SIGKILL)
            time.sleep(3 + 3 + 4)  # heartbeat timeout + grace + a margin
            st = _status(c)
            cs2 = next(s for s in st["chunkservers"] if s["id"] == "cs2")
            assert cs2["state"] == "dead" and cs2["mode"] == "maintenance"
            assert st["replication"]["copies"] == copies_before
            run_dfs("chunkserver", "recommission", "cs2", *admin)
            # Its grace has long passed: recommissioned and still absent, it is given up and
            # its chunks copied back to their goal.
            wait_for(lambda: _status(c)["counts"]["under_goal"] == 0, 120, "re-replication")
            assert _status(c)["replication"]["copies"] > copies_before

            # Mistakes are one line and a non-zero exit.
            bad = run_dfs("chunkserver", "decommission", "nope", *admin, check=False)
            assert bad.returncode != 0 and "Traceback" not in bad.stderr
            assert len(bad.stderr.strip().splitlines()) == 1
        finally:
            for p in extra:
                p.kill()
                p.wait(timeout=30)
