"""Replacing a metaserver online (``dfs admin meta remove`` / ``add``) on real processes.

A local cluster of three metaservers serves a writer through the kernel mount the whole
time; the leader itself is removed (it hands leadership over first), an empty fourth
metaserver started with ``join = true`` is added, catches up by InstallSnapshot, becomes a
voter, and the group then survives the loss of one of the original members (whichever of
the two left leads; chunkservers and clients follow a leader added online, which is not in
their config).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest
import tomli_w

from tests.e2e.localcluster import Cluster, local_cluster, run_dfs, wait_for
from tests.helpers.metagroup import free_port

pytestmark = pytest.mark.mount


class Writer(threading.Thread):
    """Creates small files through the mount until stopped; records every failure."""

    def __init__(self, where: Path) -> None:
        super().__init__(daemon=True)
        self.where = where
        self.stop = threading.Event()
        self.written: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + 300
        i = 0
        while not self.stop.is_set() and time.monotonic() < deadline and i < 100_000:
            name = f"w{i}"
            try:
                (self.where / name).write_bytes(name.encode())
                self.written.append(name)
            except OSError as exc:
                self.errors.append(f"{name}: {exc}")
            i += 1
            time.sleep(0.01)


def _metaservers(cluster: Cluster) -> list[dict[str, object]]:
    members: list[dict[str, object]] = cluster.admin_status()["metaservers"]
    return members


def test_replace_a_metaserver_online(tmp_path: Path) -> None:
    with local_cluster(tmp_path) as c:
        admin = ["--config", str(c.state / "admin.toml")]
        work = c.mnt / "replace"
        work.mkdir()
        writer = Writer(work)
        writer.start()
        m4: subprocess.Popen[bytes] | None = None
        try:
            time.sleep(1.0)
            # 1. Remove the leader itself: it hands over leadership first.
            leader = next(m["id"] for m in _metaservers(c) if m["role"] == "leader")
            assert isinstance(leader, str)
            out = run_dfs("admin", "meta", "remove", leader, *admin).stdout
            assert f"metaserver {leader} is no longer a member" in out
            listed = run_dfs("admin", "meta", "list", *admin).stdout
            assert leader not in listed.splitlines()[0], listed
            os.kill(c.pid(leader), signal.SIGTERM)

            # 2. An empty metaserver joins.
            port = free_port()
            run_dfs(
                "ca", "issue", "m4", "--role", "metaserver",
                "--ca", str(c.state / "ca"), "--out", str(c.state / "certs"),
            )  # fmt: skip
            cfg = tomllib.loads((c.state / "m1.toml").read_text())
            cfg.pop("http", None)  # m1's own metrics listener
            members = [m for m in cfg["metaserver"]["members"] if not m.startswith(f"{leader}=")]
            cfg["tls"]["cert"] = str(c.state / "certs" / "m4.crt")
            cfg["tls"]["key"] = str(c.state / "certs" / "m4.key")
            cfg["metaserver"].update(
                id="m4",
                listen=f"127.0.0.1:{port}",
                data_dir=str(c.state / "data" / "m4"),
                members=[*members, f"m4=127.0.0.1:{port}"],
                join=True,
            )
            (c.state / "m4.toml").write_text(tomli_w.dumps(cfg))
            log = (c.state / "logs" / "m4.log").open("wb")
            m4 = subprocess.Popen(
                [sys.executable, "-m", "dfs", "metaserver", "--config", str(c.state / "m4.toml")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            wait_for(lambda: _port_open(port), 20, "m4 to listen")
            out = run_dfs("admin", "meta", "add", f"127.0.0.1:{port}", *admin).stdout
            assert "metaserver m4 at" in out and "is a voting member" in out
            m4_log = (c.state / "logs" / "m4.log").read_text(errors="replace")
            assert "installed the leader's snapshot" in m4_log, m4_log[-2000:]
            views = {str(m["id"]): m for m in _metaservers(c)}
            assert set(views) == ({"m1", "m2", "m3", "m4"} - {leader})
            wait_for(
                lambda: len({m["applied_index"] for m in _metaservers(c)}) == 1,
                15,
                "every member to apply the same log",
            )

            # 3. The new group tolerates the loss of one original member.
            victim = next(i for i in ("m1", "m2", "m3") if i != leader)
            os.kill(c.pid(victim), signal.SIGKILL)
            (work / "after-loss").write_bytes(b"still serving")
            time.sleep(0.5)
            # Check while m4 is still up: m4 and one original member are the majority of
            # three (opening a file is a metadata commit; m4 may be the leader).
            assert (work / "after-loss").read_bytes() == b"still serving"
            writer.stop.set()
            writer.join(timeout=60)
            assert not writer.errors, writer.errors[:10]
            assert len(writer.written) > 50
            names = set(os.listdir(work))
            assert set(writer.written) <= names
        finally:
            writer.stop.set()
            writer.join(timeout=60)
            if m4 is not None:
                m4.terminate()
                try:
                    m4.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    m4.kill()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
