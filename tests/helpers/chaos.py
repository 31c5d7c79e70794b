"""A seeded fault scheduler for a dfs cluster on network-namespace hosts (``netns.py``).

    schedule = make_schedule(seed=7, faults=30, metaservers=["m1", "m2", "m3"],
                             chunkservers=["cs1", "cs2", "cs3"], clients=["c1", "c2"])
    chaos = Chaos(cluster, schedule, log_path=tmp / "faults.log")
    chaos.run()              # blocking: every fault begun and healed, in schedule order
    chaos.heal_everything()  # network healed, paused processes continued, dead ones restarted

One seed gives one schedule: the kinds, targets, start times and durations of every fault
(``make_schedule``).  Only "the metadata leader" is resolved when the fault begins (which
server leads then depends on the run).  The schedule never asks more of the cluster than it
tolerates while staying available, so that every operation may be delayed but none has to fail:

* the *metadata lane*: at most one of the three metaservers impaired at a time (killed with
  SIGKILL and restarted, paused with SIGSTOP/SIGCONT, its host cut off the network, or its
  host partitioned from the other metaservers only), with a pause after each fault so that a
  restarted member catches up before the next one goes;
* the *chunk lane*: at most one of the three chunkservers impaired at a time (killed and
  restarted, paused, its host cut off, its disk filled, or the link between a client host and
  its host cut); with goal 2 every chunk keeps a replica;
* *corruption*: bytes flipped in one chunk data file on a chunkserver other than the one the
  chunk lane impairs at that moment, never twice in the same chunk (so a chunk never has two
  bad replicas), only in a chunk the metadata leader sees at its goal with no stale or bad
  replica (a chunk left with one copy by a chunkserver fault is not corrupted until it is
  copied again), never in a chunk changed in the last few seconds or in a chunk the cluster
  names as excluded (one being rewritten all the time, like a counter).

Every fault is healed after ``duration`` seconds (at most a few).  Each begin and end is
logged with its time (wall clock and seconds since the start) to ``log_path`` and kept in
``Chaos.events``.

The cluster is reached through the small ``ChaosCluster`` protocol, which the test
implements: process handles and restarts, data directories, the current leader.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from tests.helpers.netns import Host, NetnsLab, Proc

log = logging.getLogger(__name__)

META_KINDS = ("kill", "kill_leader", "pause", "cut", "partition")
CHUNK_KINDS = ("kill", "pause", "cut", "fill", "cut_client")
#: Relative frequency of each (lane, kind).
WEIGHTS: dict[tuple[str, str], float] = {
    ("meta", "kill"): 2,
    ("meta", "kill_leader"): 3,
    ("meta", "pause"): 2,
    ("meta", "cut"): 2,
    ("meta", "partition"): 2,
    ("chunk", "kill"): 3,
    ("chunk", "pause"): 2,
    ("chunk", "cut"): 2,
    ("chunk", "fill"): 2,
    ("chunk", "cut_client"): 1,
    ("corrupt", "corrupt"): 2,
}
#: Seconds a fault lasts (uniform in this range).
DURATION = (1.0, 4.0)
#: Seconds between the starts of consecutive faults (uniform; lanes overlap).
GAP = (0.5, 2.5)
#: Seconds a lane rests after a fault healed (a restarted metaserver catches up meanwhile).
REST = {"meta": 3.0, "chunk": 2.0}
#: A chunk changed more recently than this is not corrupted (it may be being written).
QUIET_CHUNK_AGE = 5.0


@dataclass(frozen=True)
class Fault:
    """One fault of a schedule: starts ``at`` seconds after the schedule began."""

    number: int
    at: float
    lane: str  # "meta", "chunk" or "corrupt"
    kind: str
    #: A server name; "leader" for kill_leader (resolved when it begins).
    target: str
    duration: float
    #: cut_client: the client host; corrupt: a seed for the chunk and bytes chosen.
    other: str = ""

    def __str__(self) -> str:
        extra = f" ({self.other})" if self.other else ""
        return (
            f"#{self.number} {self.lane}/{self.kind} {self.target}{extra} "
            f"at {self.at:.1f} s for {self.duration:.1f} s"
        )


def make_schedule(
    seed: int,
    faults: int,
    metaservers: list[str],
    chunkservers: list[str],
    clients: list[str],
) -> list[Fault]:
    """``faults`` faults from ``seed`` (see the module docstring for the rules)."""
    rng = random.Random(seed)
    kinds = list(WEIGHTS)
    weights = [WEIGHTS[k] for k in kinds]
    lane_free = {"meta": 0.0, "chunk": 0.0}
    out: list[Fault] = []
    t = 1.0
    for number in range(1, faults + 1):
        lane, kind = rng.choices(kinds, weights)[0]
        duration = round(rng.uniform(*DURATION), 2)
        other = ""
        if lane == "corrupt":
            target = rng.choice(chunkservers)
            other = str(rng.randrange(1 << 30))
            duration = 0.0
            start = t
        else:
            start = max(t, lane_free[lane])
            lane_free[lane] = start + duration + REST[lane]
            if lane == "meta":
                target = "leader" if kind == "kill_leader" else rng.choice(metaservers)
            else:
                target = rng.choice(chunkservers)
                if kind == "cut_client":
                    other = rng.choice(clients)
        out.append(Fault(number, round(start, 2), lane, kind, target, duration, other))
        t = start + rng.uniform(*GAP)
    return out


def _fill(path: Path) -> int:
    """Make ``path`` take every free byte of its file system; return its size."""
    size = 0
    with open(path, "wb") as f:
        for step in (64 << 20, 4 << 20, 256 << 10, 4 << 10):
            while True:
                try:
                    os.posix_fallocate(f.fileno(), size, step)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
                size += step
    return size


class ChaosCluster(Protocol):
    """What the scheduler needs of the cluster under test."""

    lab: NetnsLab

    def host_of(self, name: str) -> Host:
        """The host a daemon (``m1``, ``cs2``) or a client (``c1``) runs on."""
        ...

    def proc(self, name: str) -> Proc:
        """The current process of daemon ``name``."""
        ...

    def start(self, name: str) -> None:
        """Start daemon ``name`` again (after it was killed)."""
        ...

    def chunk_dir(self, name: str) -> Path:
        """The ``chunks`` directory of chunkserver ``name``."""
        ...

    def fill_path(self, name: str) -> Path:
        """A file on the file system of chunkserver ``name``'s data directory (outside it)
        that may be made as large as the free space."""
        ...

    def leader(self) -> str | None:
        """The current metadata leader's id, or None when it cannot be told quickly."""
        ...

    def excluded_chunks(self) -> set[int]:
        """Chunk ids never to corrupt."""
        ...

    def chunks_below_par(self) -> set[int] | None:
        """Chunk ids the metadata leader does not see at their goal with every replica valid
        (under goal, missing, stale or corrupt replicas), or None when it cannot tell now.
        A corruption only goes to a chunk with a full set of good replicas: flipping bytes in
        the last valid copy would be a second fault on the same chunk."""
        ...


@dataclass
class Event:
    wall: str
    offset: float
    fault: Fault
    what: str  # "begin", "end", "skip"
    detail: str = ""

    def __str__(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.wall} +{self.offset:7.2f} s {self.what:<5} {self.fault}{detail}"


@dataclass
class Chaos:
    """Runs a schedule against a cluster (blocking; see the module docstring)."""

    cluster: ChaosCluster
    schedule: list[Fault]
    log_path: Path | None = None
    metaservers: list[str] = field(default_factory=lambda: ["m1", "m2", "m3"])
    chunkservers: list[str] = field(default_factory=lambda: ["cs1", "cs2", "cs3"])
    events: list[Event] = field(default_factory=list)
    #: Chunk ids already corrupted (never twice the same chunk).
    corrupted: set[int] = field(default_factory=set)
    #: Daemons killed and not restarted yet, processes stopped, fill files present.
    _dead: set[str] = field(default_factory=set)
    _stopped: list[Proc] = field(default_factory=list)
    _filled: set[str] = field(default_factory=set)
    _impaired_cs: set[str] = field(default_factory=set)
    _t0: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- running
    def run(self, stop: Callable[[], bool] = lambda: False, at_least: int | None = None) -> None:
        """Begin and end every fault at its time; returns when all are healed (or at once
        after ``stop()`` becomes true, leaving the rest to ``heal_everything``).  With
        ``at_least``, no fault begins once that many did: a schedule with spare faults
        still makes ``at_least`` when some cannot be made (no chunk fit to corrupt...)."""
        actions: list[tuple[float, int, str, Fault]] = []
        for f in self.schedule:
            actions.append((f.at, 1, "begin", f))
            if f.lane != "corrupt":
                actions.append((f.at + f.duration, 0, "end", f))
        actions.sort(key=lambda a: (a[0], a[1], a[3].number))
        self._t0 = time.monotonic()
        state: dict[int, object] = {}
        for at, _, what, fault in actions:
            while (wait := self._t0 + at - time.monotonic()) > 0:
                if stop():
                    return
                time.sleep(min(wait, 0.2))
            if stop():
                return
            begun = sum(1 for e in self.events if e.what == "begin")
            try:
                if what == "begin":
                    if at_least is not None and begun >= at_least:
                        continue
                    state[fault.number] = self._begin(fault)
                elif fault.number in state:
                    self._end(fault, state[fault.number])
            except Exception as exc:  # a fault that cannot be made is logged, the run goes on
                self._log(fault, "skip", f"{what} failed: {exc!r}")

    def _log(self, fault: Fault, what: str, detail: str = "") -> None:
        ev = Event(
            wall=f"{datetime.now():%H:%M:%S.%f}"[:-3],
            offset=time.monotonic() - self._t0,
            fault=fault,
            what=what,
            detail=detail,
        )
        self.events.append(ev)
        log.info("chaos %s", ev)
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(f"{ev}\n")

    def _begin(self, fault: Fault) -> object:
        c, lab = self.cluster, self.cluster.lab
        target = fault.target
        if target == "leader":
            target = c.leader() or self.metaservers[0]
        if fault.lane == "corrupt":
            return self._corrupt(fault)
        if fault.lane == "chunk":
            self._impaired_cs.add(target)
        kind = "kill" if fault.kind == "kill_leader" else fault.kind
        host = c.host_of(target)
        if kind == "kill":
            lab.kill9(c.proc(target))
            self._dead.add(target)
        elif kind == "pause":
            proc = c.proc(target)
            lab.stop(proc)
            self._stopped.append(proc)
        elif kind == "cut":
            lab.cut(host)
        elif kind == "partition":
            peers = [c.host_of(m) for m in self.metaservers if m != target and c.host_of(m) != host]
            lab.partition([host], peers)
        elif kind == "cut_client":
            lab.cut_between(c.host_of(fault.other), host)
        elif kind == "fill":
            path = c.fill_path(target)
            self._filled.add(target)
            size = _fill(path)
            self._log(fault, "begin", f"{target}: {size >> 20} MiB filler")
            return target
        else:
            raise ValueError(f"unknown fault kind {fault.kind}")
        self._log(fault, "begin", target)
        return target

    def _end(self, fault: Fault, target: object) -> None:
        c, lab = self.cluster, self.cluster.lab
        if not isinstance(target, str):
            return  # the begin failed
        kind = "kill" if fault.kind == "kill_leader" else fault.kind
        host = c.host_of(target)
        if kind == "kill":
            c.start(target)
            self._dead.discard(target)
        elif kind == "pause":
            proc = c.proc(target)
            lab.cont(proc)
            with contextlib.suppress(ValueError):
                self._stopped.remove(proc)
        elif kind == "cut":
            lab.heal(host)
        elif kind == "partition":
            for m in self.metaservers:
                if m != target and c.host_of(m) != host:
                    lab.heal_between(host, c.host_of(m))
        elif kind == "cut_client":
            lab.heal_between(c.host_of(fault.other), host)
        elif kind == "fill":
            with contextlib.suppress(FileNotFoundError):
                c.fill_path(target).unlink()
            self._filled.discard(target)
        self._impaired_cs.discard(target)
        self._log(fault, "end", target)

    def _corrupt(self, fault: Fault) -> object:
        """Flip bytes in one quiet chunk data file on ``fault.target`` (or, if that server
        is the one the chunk lane impairs, on the next one)."""
        c = self.cluster
        rng = random.Random(int(fault.other))
        servers = sorted({fault.target, *self.chunkservers} - self._impaired_cs)
        server = fault.target if fault.target in servers else servers[0]
        below_par = c.chunks_below_par()
        if below_par is None:
            self._log(fault, "skip", "the leader's view of the replicas is not available")
            return None
        excluded = c.excluded_chunks() | self.corrupted | below_par
        now = time.time()
        candidates = []
        for path in sorted(c.chunk_dir(server).glob("*/*")):
            if path.suffix or "." in path.name:
                continue
            try:
                cid = int(path.name, 16)
                st = path.stat()
            except (ValueError, OSError):
                continue
            if cid in excluded or st.st_size == 0 or now - st.st_mtime < QUIET_CHUNK_AGE:
                continue
            candidates.append((path, cid, st.st_size))
        if not candidates:
            self._log(fault, "skip", f"{server}: no quiet chunk to corrupt")
            return None
        path, cid, size = rng.choice(candidates)
        offset = rng.randrange(size)
        count = min(16, size - offset)
        fd = os.open(path, os.O_RDWR)
        try:
            old = os.pread(fd, count, offset)
            os.pwrite(fd, bytes(b ^ 0xFF for b in old), offset)
        finally:
            os.close(fd)
        self.corrupted.add(cid)
        self._log(fault, "begin", f"{server}: chunk {cid:016x} bytes {offset}..{offset + count}")
        return None

    # ---- after the run
    def heal_everything(self) -> list[str]:
        """Undo every fault still in effect; return what was done."""
        c, lab = self.cluster, self.cluster.lab
        done = []
        lab.heal_all()
        for proc in self._stopped:
            lab.cont(proc)
            done.append(f"continued pid {proc.pid}")
        self._stopped.clear()
        for name in sorted(self._filled):
            with contextlib.suppress(FileNotFoundError):
                c.fill_path(name).unlink()
            done.append(f"removed the filler of {name}")
        self._filled.clear()
        for name in sorted(self._dead):
            c.start(name)
            done.append(f"restarted {name}")
        self._dead.clear()
        self._impaired_cs.clear()
        return done

    def counts(self) -> dict[str, int]:
        """How many faults of each lane/kind began."""
        out: dict[str, int] = {}
        for ev in self.events:
            if ev.what == "begin":
                key = f"{ev.fault.lane}/{ev.fault.kind}"
                out[key] = out.get(key, 0) + 1
        return out
