"""Drive a real local cluster through the ``dfs`` command, as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DFS = [sys.executable, "-m", "dfs"]


def need_fuse() -> None:
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        pytest.skip("real-mount tests need root and /dev/fuse")


def run_dfs(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*DFS, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"dfs {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@dataclass
class Cluster:
    state: Path
    mnt: Path

    def up(self) -> subprocess.CompletedProcess[str]:
        return run_dfs("local", "up", "--dir", str(self.state), "--mount", str(self.mnt))

    def down(self) -> subprocess.CompletedProcess[str]:
        return run_dfs("local", "down", "--dir", str(self.state))

    def status(self) -> dict[str, Any]:
        out = run_dfs("local", "status", "--dir", str(self.state), "--json", check=False)
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def admin_status(self) -> dict[str, Any]:
        out = run_dfs("status", "--config", str(self.state / "admin.toml"), "--json", check=False)
        result: dict[str, Any] = json.loads(out.stdout)
        return result

    def http_addresses(self) -> dict[str, str]:
        """Each process's loopback HTTP listener (``/metrics``; dashboard on metaservers)."""
        procs = json.loads((self.state / "cluster.json").read_text())["procs"]
        return {p["id"]: p["http"] for p in procs if p.get("http")}

    def pid(self, proc_id: str) -> int:
        return int((self.state / "run" / f"{proc_id}.pid").read_text())

    def chunk_dirs(self) -> list[Path]:
        return sorted((self.state / "data").glob("cs*"))

    def log(self, proc_id: str) -> str:
        return (self.state / "logs" / f"{proc_id}.log").read_text(errors="replace")

    def force_cleanup(self) -> None:
        """Last resort after a failed test: detach the mount and kill what is left."""
        subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True, check=False)
        for pid_file in (self.state / "run").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


@contextlib.contextmanager
def local_cluster(tmp: Path, *create_args: str) -> Iterator[Cluster]:
    """A new local cluster under ``tmp``; ``create_args`` go to its first ``dfs local up``
    (e.g. ``"--chunkservers", "4", "--set", "metaserver.replication_grace=2"``)."""
    need_fuse()
    cluster = Cluster(state=tmp / "state", mnt=tmp / "mnt")
    try:
        run_dfs(
            "local", "up", "--dir", str(cluster.state), "--mount", str(cluster.mnt), *create_args
        )
    except BaseException:
        cluster.force_cleanup()  # what did start must not outlive the test
        raise
    try:
        yield cluster
    finally:
        try:
            cluster.down()
        finally:
            cluster.force_cleanup()


@contextlib.contextmanager
def second_mount(cluster: Cluster, where: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Another client process mounting the same cluster at ``where``."""
    where.mkdir(exist_ok=True)
    log = open(where.parent / f"{where.name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [*DFS, "mount", str(where), "--config", str(cluster.state / "client.toml")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: os.path.ismount(where), 30, f"the second mount at {where}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
        log.close()


def add_chunkserver(cluster: Cluster, cs_id: str, **settings: Any) -> subprocess.Popen[bytes]:
    """Join a new chunkserver to the running cluster the way an operator does: a certificate
    from the cluster CA, a config naming the metaservers, and ``dfs chunkserver --config``.
    The caller stops the returned process (``dfs local down`` does not know it)."""
    import tomllib

    from dfs.config import write_config

    state = cluster.state
    run_dfs(
        "ca", "issue", cs_id, "--role", "chunkserver", "--ca", str(state / "ca"),
        "--out", str(state / "certs"),
    )  # fmt: skip
    base = tomllib.loads((state / "cs1.toml").read_text())
    base.pop("http", None)  # cs1's own metrics listener
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base["tls"]["cert"] = str(state / "certs" / f"{cs_id}.crt")
    base["tls"]["key"] = str(state / "certs" / f"{cs_id}.key")
    base["chunkserver"].update(
        id=cs_id,
        listen=f"127.0.0.1:{port}",
        data_dir=str(state / "data" / cs_id),
        zone=cs_id,
        **settings,
    )
    config = state / f"{cs_id}.toml"
    write_config(config, base)
    log = open(state / "logs" / f"{cs_id}.log", "ab")  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(
            [*DFS, "chunkserver", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def wait_for(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
