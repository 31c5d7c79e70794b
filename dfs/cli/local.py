"""``dfs local``: a whole cluster as background processes on this machine.

State directory layout (kept between runs, so a second ``up`` brings back the same data)::

    STATE/cluster.json        ports, ids and the mount point chosen by the first ``up``
    STATE/ca/                 the cluster CA (ca.crt, ca.key)
    STATE/certs/              one certificate per process, plus client and admin
    STATE/<id>.toml           the config of each daemon (m1..m3, cs1, cs2, cs3); the metaservers
                              form one Raft group (``[metaserver] members``)
    STATE/client.toml         ready-made config for ``dfs mount MOUNTPOINT --config``
    STATE/mount.toml          the config of the cluster's own mount (client.toml plus its
                              ``[http]`` listener; a second mount must not take the same port)
    STATE/admin.toml          ready-made config for admin commands (``dfs status``)
    STATE/data/<id>/          each daemon's data directory
    STATE/logs/<id>.log       each process's log
    STATE/run/<id>.pid        pid files of running processes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dfs.config import write_config
from dfs.errors import ConfigError
from dfs.fuse.mount import is_mounted as fuse_is_mounted
from dfs.fuse.mount import unmount

DEFAULT_STATE_DIR = Path(
    os.environ.get("DFS_LOCAL_DIR")
    or Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "dfs" / "local"
)

#: How long ``up`` waits for each process to become ready.
READY_TIMEOUT = 30.0
#: How long ``down`` waits for a process to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT = 10.0


class LocalError(ConfigError):
    """A problem with the local cluster reported to the user in one line."""


@dataclass
class ProcSpec:
    """One process of the local cluster."""

    id: str
    role: str  # metaserver | chunkserver | mount
    address: str  # host:port, or the mount point for a mount
    #: Loopback host:port of its HTTP listener (/metrics; the dashboard on metaservers);
    #: empty in clusters created before it existed.
    http: str = ""

    def argv(self, state: Path) -> list[str]:
        base = [sys.executable, "-m", "dfs"]
        if self.role == "mount":
            config = "mount.toml" if self.http else "client.toml"
            return [*base, "mount", self.address, "--config", str(state / config)]
        return [*base, self.role, "--config", str(state / f"{self.id}.toml")]


@dataclass
class LocalCluster:
    state: Path
    procs: list[ProcSpec]

    @property
    def mountpoint(self) -> Path:
        return Path(next(p.address for p in self.procs if p.role == "mount"))

    def meta_addresses(self) -> list[str]:
        return [p.address for p in self.procs if p.role == "metaserver"]

    def save(self) -> None:
        data = {"version": 1, "procs": [asdict(p) for p in self.procs]}
        tmp = self.state / "cluster.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.state / "cluster.json")

    @classmethod
    def load(cls, state: Path) -> LocalCluster:
        path = state / "cluster.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LocalError(f"no local cluster in {state} (run 'dfs local up' first)") from None
        except (OSError, ValueError) as exc:
            raise LocalError(f"{path}: cannot read: {exc}") from None
        return cls(state=state, procs=[ProcSpec(**p) for p in data["procs"]])


#: Ports handed out by ``_free_port`` in this process: a port just released may be handed
#: out by the kernel again, and two daemons configured with one port cannot both start.
_handed_out: set[int] = set()


def _free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise LocalError("no free TCP port on 127.0.0.1")


def parse_settings(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["metaserver.replication_grace=30", ...]`` -> ``{"metaserver": {...}}``, checked
    against the config classes (a LocalError names the bad item)."""
    import tomllib

    from dfs.config import ChunkserverConfig, ClientConfig, MetaserverConfig

    classes: dict[str, Any] = {
        "metaserver": MetaserverConfig,
        "chunkserver": ChunkserverConfig,
        "client": ClientConfig,
    }
    fixed = {"id", "listen", "data_dir", "members", "zone"}
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or section not in classes:
            raise LocalError(
                f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION one of "
                f"{', '.join(classes)}"
            )
        if name not in classes[section].__dataclass_fields__ or name in fixed:
            raise LocalError(f"--set {item!r}: [{section}] has no setting {name!r} to change")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # a bare word: a string
        out.setdefault(section, {})[name] = value
    return out


def _create(
    state: Path,
    mountpoint: Path,
    chunkservers: int,
    metaservers: int,
    settings: dict[str, dict[str, Any]] | None = None,
) -> LocalCluster:
    """Lay out a new state directory: CA, certificates, configs.  The metaservers form a new
    Raft group (a new state directory only: existing data never joins a new group)."""
    from dfs.security.ca import init_ca, issue_certificate
    from dfs.security.identity import Role

    if chunkservers < 1:
        raise LocalError("--chunkservers must be at least 1")
    if metaservers not in (1, 3, 5):
        raise LocalError("--metaservers must be 1, 3 or 5")
    for sub in ("logs", "run", "data", "certs"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    init_ca(state / "ca", cluster_name="dfs-local")
    certs = state / "certs"
    procs = [
        ProcSpec(f"m{i}", "metaserver", f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}")
        for i in range(1, metaservers + 1)
    ]
    procs += [
        ProcSpec(f"cs{i}", "chunkserver", f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}")
        for i in range(1, chunkservers + 1)
    ]
    procs.append(ProcSpec("mount", "mount", str(mountpoint), f"127.0.0.1:{_free_port()}"))
    cluster = LocalCluster(state=state, procs=procs)
    metas = cluster.meta_addresses()
    members = [f"{p.id}={p.address}" for p in procs if p.role == "metaserver"]
    for p in procs:
        if p.role == "mount":
            continue
        role = Role.METASERVER if p.role == "metaserver" else Role.CHUNKSERVER
        files = issue_certificate(state / "ca", role, p.id, certs)
        tables: dict[str, dict[str, Any]] = {
            "cluster": {"metaservers": metas},
            "tls": {"ca": str(files.ca_cert), "cert": str(files.cert), "key": str(files.key)},
            "http": {"listen": p.http},
        }
        data_dir = str(state / "data" / p.id)
        if p.role == "metaserver":
            tables["metaserver"] = {
                "id": p.id,
                "listen": p.address,
                "data_dir": data_dir,
                "members": members,
                **(settings or {}).get("metaserver", {}),
            }
        else:
            tables["chunkserver"] = {
                "id": p.id,
                "listen": p.address,
                "data_dir": data_dir,
                "zone": p.id,
                **(settings or {}).get("chunkserver", {}),
            }
        write_config(state / f"{p.id}.toml", tables)
    for name, role in (("client", Role.CLIENT), ("admin", Role.ADMIN)):
        files = issue_certificate(state / "ca", role, name, certs)
        write_config(
            state / f"{name}.toml",
            {
                "cluster": {"metaservers": metas},
                "tls": {"ca": str(files.ca_cert), "cert": str(files.cert), "key": str(files.key)},
                "client": dict((settings or {}).get("client", {})),
            },
        )
        if name == "client":
            mount = next(p for p in procs if p.role == "mount")
            write_config(
                state / "mount.toml",
                {
                    "cluster": {"metaservers": metas},
                    "tls": {
                        "ca": str(files.ca_cert),
                        "cert": str(files.cert),
                        "key": str(files.key),
                    },
                    "client": dict((settings or {}).get("client", {})),
                    "http": {"listen": mount.http},
                },
            )
    cluster.save()
    return cluster


# ---------------------------------------------------------------- process bookkeeping
def _pid_file(state: Path, proc: ProcSpec) -> Path:
    return state / "run" / f"{proc.id}.pid"


def running_pid(state: Path, proc: ProcSpec) -> int | None:
    """The pid of ``proc`` if it is alive (checked against its command line), else None."""
    try:
        pid = int(_pid_file(state, proc).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    expected = [a.encode() for a in proc.argv(state)[1:]]
    if cmdline[1 : 1 + len(expected)] != expected:
        return None
    try:
        stat_fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if stat_fields[0] in ("Z", "X"):  # exited, not yet reaped
        return None
    return pid


def is_mounted(mountpoint: Path) -> bool:
    """Whether something is mounted at ``mountpoint``, without touching it: a stat of a
    mount whose servers are dead would wait for the client's operation timeout."""
    return fuse_is_mounted(str(mountpoint))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start(state: Path, proc: ProcSpec) -> subprocess.Popen[bytes]:
    log_path = state / "logs" / f"{proc.id}.log"
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "ab") as logf, open(os.devnull, "rb") as devnull:
        child = subprocess.Popen(
            proc.argv(state),
            stdin=devnull,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=str(state),
        )
    _pid_file(state, proc).write_text(f"{child.pid}\n")
    return child


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_ready(state: Path, proc: ProcSpec, child: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    log_path = state / "logs" / f"{proc.id}.log"
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            raise LocalError(
                f"{proc.id} exited with code {child.returncode}; last lines of {log_path}:\n"
                + _tail(log_path)
            )
        ready = is_mounted(Path(proc.address)) if proc.role == "mount" else _port_open(proc.address)
        if ready:
            return
        time.sleep(0.05)
    raise LocalError(f"{proc.id} did not become ready within {READY_TIMEOUT:.0f} s; see {log_path}")


# ---------------------------------------------------------------- commands
def cmd_up(args: argparse.Namespace) -> int:
    state = Path(args.dir).expanduser().absolute()
    new = not (state / "cluster.json").exists()
    settings = parse_settings(getattr(args, "set", None) or [])
    if settings and not new:
        raise LocalError(f"--set applies to a new cluster only; edit the configs in {state}")
    if new:
        if state.exists() and any(state.iterdir()):
            raise LocalError(f"{state} exists, is not empty and holds no local cluster")
        mountpoint = Path(args.mount).expanduser().absolute() if args.mount else state / "mnt"
        state.mkdir(parents=True, exist_ok=True)
        cluster = _create(state, mountpoint, args.chunkservers, args.metaservers, settings)
    else:
        cluster = LocalCluster.load(state)
        if args.mount and Path(args.mount).expanduser().absolute() != cluster.mountpoint:
            raise LocalError(
                f"this cluster mounts at {cluster.mountpoint}; 'dfs local down' and edit "
                f"{state / 'cluster.json'} to move it"
            )
    mnt = cluster.mountpoint
    mount_proc = next(p for p in cluster.procs if p.role == "mount")
    if is_mounted(mnt) and running_pid(state, mount_proc) is None:
        # A mount left behind by a client that died ("transport endpoint is not connected").
        unmount(str(mnt), lazy=True)
    if not is_mounted(mnt):
        # Never stat a live mount here: with its metaservers down (``up`` is about to start
        # them) the stat would wait for the client's operation timeout.
        mnt.mkdir(parents=True, exist_ok=True)
    started: list[str] = []
    # Order matters: the metaservers first, chunkservers register with their leader, the mount
    # last, once the leader knows every chunkserver.
    for role in ("metaserver", "chunkserver", "mount"):
        if role == "mount" and started:
            _wait_cluster(cluster)
        children: list[tuple[ProcSpec, subprocess.Popen[bytes]]] = []
        for proc in cluster.procs:
            if proc.role != role:
                continue
            if running_pid(state, proc) is not None and (proc.role != "mount" or is_mounted(mnt)):
                continue
            if proc.role == "mount" and is_mounted(mnt):
                raise LocalError(f"{mnt} is already mounted by something else")
            children.append((proc, _start(state, proc)))
            started.append(proc.id)
        for proc, child in children:
            _wait_ready(state, proc, child)
    print(f"dfs local cluster {'created' if new else 'up'} in {state}")
    print(f"  started: {', '.join(started) if started else 'nothing (all running)'}")
    for proc in cluster.procs:
        if proc.role != "mount":
            metrics = f"  metrics http://{proc.http}/metrics" if proc.http else ""
            print(f"  {proc.role:<11} {proc.id:<5} {proc.address:<16}{metrics}")
    print(f"  mounted at {mnt}")
    if mount_proc.http:
        print(f"  mount metrics: http://{mount_proc.http}/metrics")
    dashboards = [f"http://{p.http}/" for p in cluster.procs if p.role == "metaserver" and p.http]
    if dashboards:
        print(
            f"  dashboard:     {' '.join(dashboards)}  (any metaserver; the leader's is complete)"
        )
    print(f"  second client: dfs mount MOUNTPOINT --config {state / 'client.toml'}")
    print(f"  admin:         dfs status --config {state / 'admin.toml'}")
    return 0


def _admin_status(cluster: LocalCluster, timeout: float = 5.0) -> dict[str, Any] | None:
    from dfs.cli.admin import fetch_status
    from dfs.config import load_config

    try:
        cfg = load_config(cluster.state / "admin.toml")
        return fetch_status(cfg, timeout=timeout)
    except Exception:
        return None


def _wait_cluster(cluster: LocalCluster) -> None:
    """Wait until the metaservers elected a leader, the namespace is initialised and the
    leader has heard from every chunkserver (so the mount can write)."""
    want = {p.id for p in cluster.procs if p.role == "chunkserver"}
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        status = _admin_status(cluster, timeout=2.0)
        if status is not None and status.get("initialised", True):
            alive = {c["id"] for c in status.get("chunkservers", []) if c.get("state") == "alive"}
            if want <= alive:
                return
        time.sleep(0.1)
    raise LocalError(
        "no metadata leader, or chunkservers did not register with it in time; see logs/"
    )


def _member_views(cluster: LocalCluster, timeout: float = 3.0) -> dict[str, dict[str, Any]]:
    """Each reachable metaserver's own Raft view (``admin.status`` of that member), by id."""
    import trio

    from dfs.cli.admin import member_status
    from dfs.config import load_config

    try:
        cfg = load_config(cluster.state / "admin.toml")
    except Exception:
        return {}
    views: dict[str, dict[str, Any]] = {}

    async def ask(proc: ProcSpec) -> None:
        try:
            status = await member_status(cfg, proc.address, timeout)
        except Exception:
            return
        for m in status.get("metaservers", []) if isinstance(status, dict) else []:
            if m.get("id") == proc.id:
                views[proc.id] = m

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for proc in cluster.procs:
                if proc.role == "metaserver" and running_pid(cluster.state, proc) is not None:
                    nursery.start_soon(ask, proc)

    trio.run(main)
    return views


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_exit(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
        if alive:
            time.sleep(0.05)
    return alive


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def cmd_down(args: argparse.Namespace) -> int:
    state = Path(args.dir).expanduser().absolute()
    cluster = LocalCluster.load(state)
    mnt = cluster.mountpoint
    stopped: list[str] = []
    # Unmount first (works even when every server is dead: a lazy detach as the fallback),
    # then stop the mount process, then the servers.
    if is_mounted(mnt):
        try:
            unmount(str(mnt))
        except Exception:
            unmount(str(mnt), lazy=True)
    for role in ("mount", "chunkserver", "metaserver"):
        pids = []
        for proc in cluster.procs:
            if proc.role == role and (pid := running_pid(state, proc)) is not None:
                _signal(pid, signal.SIGTERM)
                pids.append(pid)
                stopped.append(proc.id)
        for pid in _wait_exit(pids, STOP_TIMEOUT):
            _signal(pid, signal.SIGKILL)
        _wait_exit(pids, 2.0)
    for proc in cluster.procs:
        _pid_file(state, proc).unlink(missing_ok=True)
    print(f"dfs local cluster in {state} stopped ({', '.join(stopped) or 'nothing was running'})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = Path(args.dir).expanduser().absolute()
    cluster = LocalCluster.load(state)
    status = _admin_status(cluster)
    cs_state: dict[str, str] = {}
    if status is not None:
        cs_state = {c["id"]: c.get("state", "?") for c in status.get("chunkservers", [])}
    meta_state = _member_views(cluster)
    rows = []
    for proc in cluster.procs:
        pid = running_pid(state, proc)
        if pid is None:
            health = "stopped"
        elif proc.role == "mount":
            health = "mounted" if is_mounted(Path(proc.address)) else "not mounted"
        elif proc.role == "chunkserver":
            health = cs_state.get(proc.id, "unregistered" if status else "unknown")
        else:
            m = meta_state.get(proc.id)
            health = str(m.get("role", "running")) if m else "unreachable"
        row: dict[str, Any] = {
            "role": proc.role,
            "id": proc.id,
            "pid": pid,
            "address": proc.address,
            "health": health,
            "http": proc.http,
        }
        if proc.role == "metaserver" and proc.id in meta_state:
            m = meta_state[proc.id]
            row.update({k: m.get(k) for k in ("term", "leader", "commit_index", "applied_index")})
        rows.append(row)
    healthy = all(
        r["health"] not in ("stopped", "unreachable", "not mounted", "dead") for r in rows
    )
    if args.json:
        print(
            json.dumps({"state_dir": str(state), "healthy": healthy, "processes": rows}, indent=2)
        )
    else:
        width = max(len("ADDRESS"), *(len(r["address"]) for r in rows)) + 2
        print(f"{'ROLE':<12}{'ID':<7}{'PID':<9}{'ADDRESS':<{width}}HEALTH")
        for r in rows:
            pid_text = str(r["pid"]) if r["pid"] else "-"
            raft = (
                f"  term {r['term']} commit {r['commit_index']} applied {r['applied_index']}"
                if "term" in r
                else ""
            )
            print(
                f"{r['role']:<12}{r['id']:<7}{pid_text:<9}{r['address']:<{width}}"
                f"{r['health']}{raft}"
            )
    return 0 if healthy else 1
