"""Throw-away "hosts" for multi-host tests: one Linux network namespace each, on a private bridge.

    with netns_lab(3) as lab:              # skips the test unless root with a working `ip netns`
        h1, h2, h3 = lab.hosts
        proc = lab.spawn(h1, [sys.executable, "-m", "dfs", ...], log_path=tmp / "m1.log")
        lab.cut(h1)                        # h1 reaches nobody, nobody (this process too) reaches h1
        lab.heal(h1)
        lab.cut_between(h2, h3)            # only h2 <-> h3 is down; both still reach h1
        lab.partition([h1], [h2, h3])      # cut_between every pair across the groups
        lab.heal_all()
        lab.stop(proc); lab.cont(proc)     # SIGSTOP / SIGCONT: a hung host
        lab.kill9(proc)                    # a crash
        out = lab.run(h2, ["python3", "-c", "..."], timeout=10)   # one-shot, output captured

Layout of lab ``k``: a free slot 0..63 claimed with a lock file, so parallel runs and leftovers
of killed runs never collide (the bench script netns-hosts.sh uses dfsbr0, dfshN, 10.77.0.0/24)::

    bridge   dfstb<k>, 10.78.<k>.1/24 in the root namespace: this test process reaches every
             host through it, as a machine on the same LAN would
    host i   namespace dfst<k>h<i>, eth0 = 10.78.<k>.<10+i>/24, the root end of its veth dfst<k>v<i>

How faults are made (this machine has no nft, no iptables and no tc classifier or action
modules, so only iproute2 is used; both ways lose packets silently, like a real network: the
sender sees no error, TCP retransmits, new connections time out):

* ``cut(h)`` sets the root end of h's veth down: every frame to or from h is lost.  Processes
  inside h still reach each other and h's own address (the loopback route).
* ``cut_between(a, b)`` puts, in each of the two hosts, a permanent ARP entry for the other's
  address that points at a MAC address nobody owns: frames still leave, the bridge floods them
  and every host drops them.  Only that pair (IPv4 between their addresses) is affected.

Processes run through ``ip netns exec`` (which execs, so the pid is the program's) in a new
session; ``close`` kills whatever is still running in the lab's namespaces and removes the
namespaces, veths and bridge, also when the test failed.

The second half of this file is an RPC *agent*: ``python -m tests.helpers.netns agent`` runs a
dfs RPC client inside a host (for a client that sees only its side of a partition) and takes
requests on stdin; ``start_agent`` returns its test-side handle ``Agent``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import itertools
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest

SUBNET_PREFIX = "10.78"
MAX_SLOTS = 64
MAX_HOSTS = 200
LOCK_DIR = Path("/run/dfs-netns-test")
#: A locally administered unicast MAC that no interface of the lab has (see ``cut_between``).
UNOWNED_MAC = "02:00:5e:00:de:ad"
#: Bounded waits of the harness itself.
SETUP_TIMEOUT = 10.0
KILL_TIMEOUT = 5.0

REPO_ROOT = Path(__file__).resolve().parents[2]


class NetnsError(RuntimeError):
    """An ``ip`` command failed, or the lab could not be set up or removed."""


def _ip(
    *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["ip", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=SETUP_TIMEOUT,
        check=False,
    )
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _ip_batch(commands: Sequence[str], *, netns: str | None = None) -> None:
    """Several ``ip`` commands in one process (``-n`` applies to all of them)."""
    prefix = ("-n", netns) if netns else ()
    _ip(*prefix, "-batch", "-", stdin="\n".join(commands) + "\n")


def netns_unavailable_reason() -> str | None:
    """Why network-namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"dfstprobe{os.getpid()}"
    try:
        add = _ip("netns", "add", probe, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns add` failed: {exc}"
    if add.returncode != 0:
        return f"`ip netns add` does not work: {add.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def skip_unless_netns() -> None:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(f"network-namespace tests need root and `ip netns`: {reason}")


def _namespaces() -> list[str]:
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def _links() -> list[str]:
    out = _ip("-o", "link", "show").stdout
    return [line.split(": ", 2)[1].split("@", 1)[0] for line in out.splitlines() if ": " in line]


def _netns_pids(netns: str) -> list[int]:
    out = _ip("netns", "pids", netns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


# ---------------------------------------------------------------- hosts and processes
@dataclass(frozen=True)
class Host:
    """One throw-away host: a network namespace with one interface, ``eth0``."""

    name: str  # "h1"
    index: int
    netns: str
    #: The root-namespace end of the host's veth pair (in the lab's bridge).
    veth: str
    #: The host's IPv4 address on the bridge.
    address: str

    def __str__(self) -> str:
        return f"{self.name} ({self.netns}, {self.address})"


@dataclass(eq=False)
class Proc:
    """A process started in a host by ``NetnsLab.spawn``."""

    host: Host
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass(eq=False)
class NetnsLab:
    """Hosts on one bridge, plus the faults between them; make one with ``netns_lab``."""

    slot: int
    lock_fd: int
    hosts: list[Host] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    _cut: set[str] = field(default_factory=set)
    _cut_pairs: set[frozenset[Host]] = field(default_factory=set)
    _closed: bool = False

    @property
    def bridge(self) -> str:
        return f"dfstb{self.slot}"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge (this process, seen from a host)."""
        return f"{SUBNET_PREFIX}.{self.slot}.1"

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    # ---- set-up
    @classmethod
    def create(cls) -> NetnsLab:
        """Claim a free slot and make its bridge (no hosts yet)."""
        slot, fd = _claim_slot()
        lab = cls(slot=slot, lock_fd=fd)
        try:
            _ip_batch(
                [
                    f"link add name {lab.bridge} type bridge forward_delay 0 stp_state 0",
                    f"link set {lab.bridge} addrgenmode none",
                    f"addr add {lab.gateway}/24 dev {lab.bridge}",
                    f"link set {lab.bridge} up",
                ]
            )
        except BaseException:
            lab.close()
            raise
        return lab

    def add_host(self) -> Host:
        i = len(self.hosts) + 1
        if i > MAX_HOSTS:
            raise NetnsError(f"at most {MAX_HOSTS} hosts per lab")
        k = self.slot
        host = Host(
            name=f"h{i}",
            index=i,
            netns=f"dfst{k}h{i}",
            veth=f"dfst{k}v{i}",
            address=f"{SUBNET_PREFIX}.{k}.{10 + i}",
        )
        peer = f"dfst{k}p{i}"
        _ip("netns", "add", host.netns)
        self.hosts.append(host)  # from here on close() removes it
        _ip_batch(
            [
                f"link add name {host.veth} type veth peer name {peer}",
                f"link set {peer} netns {host.netns}",
                f"link set {host.veth} addrgenmode none",
                f"link set {host.veth} master {self.bridge}",
                f"link set {host.veth} up",
            ]
        )
        _ip_batch(
            [
                f"link set {peer} name eth0",
                "link set eth0 addrgenmode none",  # no IPv6 link-local noise
                "link set lo up",
                f"addr add {host.address}/24 dev eth0",
                "link set eth0 up",
            ],
            netns=host.netns,
        )
        return host

    def wait_links(self, hosts: Iterable[Host] | None = None) -> None:
        """Wait until the hosts' bridge ports forward and their eth0 has a carrier."""
        pending = [h for h in (self.hosts if hosts is None else hosts) if h.name not in self._cut]
        deadline = time.monotonic() + SETUP_TIMEOUT
        while pending:
            pending = [h for h in pending if not self._link_ready(h)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise NetnsError(f"links of {', '.join(map(str, pending))} did not come up")
            time.sleep(0.02)

    def _link_ready(self, host: Host) -> bool:
        try:
            state = Path(f"/sys/class/net/{host.veth}/brport/state").read_text().strip()
        except OSError:
            return False
        if state != "3":  # BR_STATE_FORWARDING
            return False
        return "LOWER_UP" in _ip("-n", host.netns, "-o", "link", "show", "eth0").stdout

    # ---- faults
    def cut(self, host: Host) -> None:
        """Isolate ``host`` from every other host and from the root namespace."""
        _ip("link", "set", host.veth, "down")
        self._cut.add(host.name)

    def heal(self, host: Host) -> None:
        """Undo ``cut(host)`` (pairs cut with ``cut_between`` stay cut)."""
        _ip("link", "set", host.veth, "up")
        self._cut.discard(host.name)
        self.wait_links([host])
        # ARP entries that failed during the cut would hold the first packets back until the
        # next ARP retry (about a second); forget them.  Permanent entries (cut_between) stay.
        _ip("neigh", "flush", "dev", self.bridge, check=False)
        for h in self.hosts:
            _ip("-n", h.netns, "neigh", "flush", "dev", "eth0", check=False)

    def cut_between(self, a: Host, b: Host) -> None:
        """Lose every IPv4 packet between ``a`` and ``b`` (both still reach everybody else)."""
        if a == b:
            raise ValueError("cut_between needs two different hosts")
        for src, dst in ((a, b), (b, a)):
            _ip(
                "-n",
                src.netns,
                "neigh",
                "replace",
                dst.address,
                "lladdr",
                UNOWNED_MAC,
                "dev",
                "eth0",
                "nud",
                "permanent",
            )
        self._cut_pairs.add(frozenset((a, b)))

    def heal_between(self, a: Host, b: Host) -> None:
        for src, dst in ((a, b), (b, a)):
            # The next packet resolves the real address again (ARP).
            _ip("-n", src.netns, "neigh", "del", dst.address, "dev", "eth0", check=False)
        self._cut_pairs.discard(frozenset((a, b)))

    def partition(self, *groups: Sequence[Host]) -> None:
        """``cut_between`` every pair of hosts in different groups (the root namespace, this
        process, still reaches everybody)."""
        for g1, g2 in itertools.combinations(groups, 2):
            for a in g1:
                for b in g2:
                    self.cut_between(a, b)

    def heal_all(self) -> None:
        for pair in list(self._cut_pairs):
            a, b = sorted(pair, key=lambda h: h.index)
            self.heal_between(a, b)
        for name in list(self._cut):
            self.heal(self.host(name))

    # ---- processes
    def spawn(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        pipes: bool = False,
    ) -> Proc:
        """Start ``argv`` in ``host``.  Output goes to ``log_path`` (appended); with ``pipes``
        stdin and stdout are pipes to this process and only stderr goes to the log."""
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, *argv],
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log,
                stderr=log if pipes else subprocess.STDOUT,
                start_new_session=True,
                env=full_env,
                cwd=cwd,
            )
        proc = Proc(host=host, argv=list(argv), popen=popen, log_path=log_path)
        self.procs.append(proc)
        return proc

    def run(
        self,
        host: Host,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``host`` to completion (bounded by ``timeout``), output captured."""
        return subprocess.run(
            ["ip", "netns", "exec", host.netns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            check=False,
        )

    def kill9(self, proc: Proc) -> None:
        """SIGKILL (a crash: no clean-up in the process) and reap it."""
        if proc.running():
            proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(timeout=KILL_TIMEOUT)

    def stop(self, proc: Proc) -> None:
        """SIGSTOP: the process freezes (a hung host); its sockets stay open."""
        proc.popen.send_signal(signal.SIGSTOP)

    def cont(self, proc: Proc) -> None:
        proc.popen.send_signal(signal.SIGCONT)

    def terminate(self, proc: Proc, timeout: float = KILL_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; return the exit status."""
        if proc.running():
            proc.popen.send_signal(signal.SIGCONT)
            proc.popen.send_signal(signal.SIGTERM)
            try:
                return proc.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.popen.send_signal(signal.SIGKILL)
        return proc.popen.wait(timeout=KILL_TIMEOUT)

    # ---- tear-down
    def close(self) -> None:
        """Kill every process in the lab's hosts; remove hosts, veths and bridge; release the
        slot.  Safe to call twice.  Raises NetnsError if something could not be removed."""
        if self._closed:
            return
        self._closed = True
        problems: list[str] = []
        for proc in self.procs:
            if proc.running():
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGKILL)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=KILL_TIMEOUT)
            except subprocess.TimeoutExpired:
                problems.append(f"pid {proc.pid} ({proc.argv[:3]}) did not die")
            for pipe in (proc.popen.stdin, proc.popen.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        # Anything else in our namespaces was started from here too (e.g. by a child).
        problems += _kill_all_in(h.netns for h in self.hosts)
        for host in self.hosts:
            _ip("link", "del", host.veth, check=False)
            result = _ip("netns", "del", host.netns, check=False)
            if result.returncode != 0 and host.netns in _namespaces():
                problems.append(f"cannot delete {host.netns}: {result.stderr.strip()}")
        if self.bridge in _links():
            result = _ip("link", "del", self.bridge, check=False)
            if result.returncode != 0:
                problems.append(f"cannot delete {self.bridge}: {result.stderr.strip()}")
        os.close(self.lock_fd)
        if problems:
            raise NetnsError("lab clean-up: " + "; ".join(problems))


def _kill_all_in(namespaces: Iterable[str]) -> list[str]:
    names = list(namespaces)
    deadline = time.monotonic() + KILL_TIMEOUT
    while True:
        left = {ns: _netns_pids(ns) for ns in names if ns in _namespaces()}
        left = {ns: pids for ns, pids in left.items() if pids}
        if not left:
            return []
        if time.monotonic() > deadline:
            return [f"{ns} still has processes {pids}" for ns, pids in left.items()]
        for pids in left.values():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _claim_slot() -> tuple[int, int]:
    """Lock the first free slot; remove what a dead run left in it (namespaces still holding
    processes are left alone and the slot is skipped)."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for k in range(MAX_SLOTS):
        fd = os.open(LOCK_DIR / f"slot{k}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if _clear_leftovers(k):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return k, fd
        os.close(fd)
    raise NetnsError(f"no free lab slot among {MAX_SLOTS} (see {LOCK_DIR})")


def _clear_leftovers(k: int) -> bool:
    stale = [n for n in _namespaces() if re.fullmatch(rf"dfst{k}h\d+", n)]
    if any(_netns_pids(n) for n in stale):
        return False
    for n in stale:
        _ip("netns", "del", n, check=False)
    for link in _links():
        if re.fullmatch(rf"dfst{k}[vp]\d+|dfstb{k}", link):
            _ip("link", "del", link, check=False)
    return True


@contextlib.contextmanager
def netns_lab(hosts: int) -> Iterator[NetnsLab]:
    """A lab with ``hosts`` hosts, removed on exit; skips the test where it cannot run."""
    skip_unless_netns()
    lab = NetnsLab.create()
    try:
        for _ in range(hosts):
            lab.add_host()
        lab.wait_links()
        yield lab
    finally:
        lab.close()


# ---------------------------------------------------------------- RPC agent
# The agent speaks one request or answer per line: base64 of a msgpack map (msgpack keeps
# bytes, which dfs names are).  Request: {"id", "method", "params", "timeout", "to",
# "idempotent"}; ``to`` is an address, or "" for "the metadata leader" (an ``RpcMetaClient``
# over ``--metaservers``, following NotLeader as a real client does).  Answer: {"id", "ok",
# "elapsed"} plus "result", or "code" / "message" / "details" of the DfsError.  The first
# line out is {"ready": True}; the agent exits when its stdin closes.


def _encode(obj: Any) -> bytes:
    return base64.b64encode(msgpack.packb(obj, use_bin_type=True)) + b"\n"


def _decode(line: bytes) -> Any:
    return msgpack.unpackb(base64.b64decode(line), raw=False)


@dataclass(frozen=True)
class Answer:
    """The outcome of one agent request."""

    id: int
    ok: bool
    result: Any = None
    code: str = ""
    message: str = ""
    elapsed: float = 0.0

    def __str__(self) -> str:
        outcome = "ok" if self.ok else f"{self.code}: {self.message}"
        return f"#{self.id} {outcome} after {self.elapsed:.2f} s"


class AgentError(RuntimeError):
    """The agent process died or did not answer in time."""


class Agent:
    """Test-side handle of an agent process: ``send`` requests, collect ``result``s (in any
    order; the agent runs requests concurrently).  Blocking; from trio, call ``result`` in
    ``trio.to_thread.run_sync``."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self._ids = itertools.count(1)
        self._buffer = b""
        self._answers: dict[int, Answer] = {}
        self._ready = False
        self._lock = threading.Lock()

    def wait_ready(self, timeout: float) -> None:
        self._read_until(lambda: self._ready, timeout, "ready")

    def send(
        self,
        method: str,
        params: Mapping[str, Any],
        *,
        to: str = "",
        timeout: float = 5.0,
        idempotent: bool = True,
    ) -> int:
        req_id = next(self._ids)
        request = {
            "id": req_id,
            "method": method,
            "params": dict(params),
            "timeout": timeout,
            "to": to,
            "idempotent": idempotent,
        }
        stdin = self.proc.popen.stdin
        assert stdin is not None
        try:
            stdin.write(_encode(request))
            stdin.flush()
        except BrokenPipeError:
            raise AgentError(f"agent exited; its log:\n{self.proc.log()[-3000:]}") from None
        return req_id

    def result(self, req_id: int, timeout: float) -> Answer:
        """Wait (at most ``timeout`` seconds) for the answer to ``req_id``."""
        self._read_until(lambda: req_id in self._answers, timeout, f"request #{req_id}")
        return self._answers.pop(req_id)

    def call(
        self,
        method: str,
        params: Mapping[str, Any],
        *,
        to: str = "",
        timeout: float = 5.0,
        idempotent: bool = True,
    ) -> Answer:
        req_id = self.send(method, params, to=to, timeout=timeout, idempotent=idempotent)
        return self.result(req_id, timeout + 5.0)

    def close(self) -> None:
        """Close stdin (the agent cancels what is in flight and exits) and reap it."""
        stdin = self.proc.popen.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()
        try:
            self.proc.popen.wait(timeout=KILL_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.popen.kill()
            self.proc.popen.wait(timeout=KILL_TIMEOUT)

    def _read_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        stdout = self.proc.popen.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        with self._lock:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AgentError(f"agent in {self.proc.host}: no {what} within {timeout} s")
                readable, _, _ = select.select([stdout.fileno()], [], [], remaining)
                if not readable:
                    continue
                data = os.read(stdout.fileno(), 1 << 16)
                if not data:
                    raise AgentError(
                        f"agent in {self.proc.host} exited waiting for {what}; its log:\n"
                        + self.proc.log()[-3000:]
                    )
                self._buffer += data
                while b"\n" in self._buffer:
                    line, self._buffer = self._buffer.split(b"\n", 1)
                    self._take(_decode(line))

    def _take(self, msg: dict[str, Any]) -> None:
        if msg.get("ready"):
            self._ready = True
            return
        answer = Answer(
            id=int(msg["id"]),
            ok=bool(msg["ok"]),
            result=msg.get("result"),
            code=str(msg.get("code", "")),
            message=str(msg.get("message", "")),
            elapsed=float(msg.get("elapsed", 0.0)),
        )
        self._answers[answer.id] = answer


def start_agent(
    lab: NetnsLab,
    host: Host,
    *,
    ca: Path,
    cert: Path,
    key: Path,
    log_path: Path,
    metaservers: Sequence[str] = (),
    name: str = "netns-agent",
) -> Agent:
    """Start an agent in ``host`` with the given TLS identity; call ``wait_ready`` before
    timing anything (the imports take most of a second)."""
    argv = [
        sys.executable,
        "-m",
        "tests.helpers.netns",
        "agent",
        "--ca",
        str(ca),
        "--cert",
        str(cert),
        "--key",
        str(key),
        "--name",
        name,
        "--metaservers",
        ",".join(metaservers),
    ]
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = lab.spawn(
        host, argv, log_path=log_path, env={"PYTHONPATH": pythonpath}, cwd=REPO_ROOT, pipes=True
    )
    return Agent(proc)


async def _agent_main(args: argparse.Namespace) -> None:
    import trio

    from dfs.client.remote import RpcMetaClient
    from dfs.errors import DfsError
    from dfs.rpc.client import RpcClientPool
    from dfs.security.identity import Role, TlsFiles

    tls = TlsFiles(ca_cert=Path(args.ca), cert=Path(args.cert), key=Path(args.key))
    metaservers = [a for a in args.metaservers.split(",") if a]
    out = sys.stdout.buffer

    def emit(obj: dict[str, Any]) -> None:
        out.write(_encode(obj))
        out.flush()

    async def handle(pool: RpcClientPool, req: dict[str, Any]) -> None:
        start = trio.current_time()
        reply: dict[str, Any] = {"id": req["id"]}
        try:
            if req["to"]:
                result = await pool.call(
                    req["to"], req["method"], req["params"], timeout=req["timeout"]
                )
            else:
                meta = RpcMetaClient(pool, metaservers, op_timeout=req["timeout"])
                result = await meta.request(
                    req["method"], req["params"], idempotent=req["idempotent"]
                )
            reply.update(ok=True, result=result)
        except DfsError as exc:
            reply.update(ok=False, code=exc.code, message=exc.message, details=exc.details)
        except Exception as exc:  # report it, keep serving
            reply.update(ok=False, code="agent_exception", message=repr(exc))
        reply["elapsed"] = trio.current_time() - start
        emit(reply)

    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with (
        RpcClientPool(tls, name=args.name, expect_roles={Role.METASERVER}) as pool,
        trio.open_nursery() as nursery,
    ):
        emit({"ready": True})
        buffer = b""
        while data := await stdin.receive_some():
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                nursery.start_soon(handle, pool, _decode(line))
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    import trio

    parser = argparse.ArgumentParser(prog="python -m tests.helpers.netns")
    sub = parser.add_subparsers(dest="command", required=True)
    agent = sub.add_parser("agent", help="serve dfs RPC requests from stdin (see the docstring)")
    for opt in ("--ca", "--cert", "--key"):
        agent.add_argument(opt, required=True)
    agent.add_argument("--name", default="netns-agent")
    agent.add_argument("--metaservers", default="", help="comma-separated HOST:PORT list")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    trio.run(_agent_main, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
