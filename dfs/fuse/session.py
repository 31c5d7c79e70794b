"""``FuseSession``: serve one /dev/fuse connection on trio.

The read loop runs in one task: it reads a request (the fd is O_NONBLOCK; we park in
``trio.lowlevel.wait_readable``), parses it and starts one handler task per request.  Replies
are written with one ``os.write`` each, from the trio thread: writing a reply never waits on
the file system.  Notifications are different: the kernel may have to take inode or page locks
held by a request that is waiting for *our* reply, so they are written from a worker thread.

Invariants:

* every request that needs an answer gets exactly one (``Dispatcher`` guarantees it for
  handler outcomes; an INTERRUPT turns into ``EINTR``); none is sent for FORGET/BATCH_FORGET/
  INTERRUPT/NOTIFY_REPLY, nor after the connection ended;
* INTERRUPT cancels the target's ``CancelScope``; an INTERRUPT whose target is not in flight
  is remembered for ``INTERRUPT_MEMORY`` seconds (at most ``INTERRUPT_MEMORY_SIZE`` of them) in
  case the request shows up afterwards;
* ``ENOENT`` from writing a reply means the kernel already gave up on that request (the caller
  was killed or the request was interrupted and answered): it is ignored.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import trio

from dfs.fuse import abi, replies
from dfs.fuse import requests as rq
from dfs.fuse.dispatch import Dispatcher, needs_reply
from dfs.fuse.errors import MalformedRequest
from dfs.fuse.handshake import FuseConfig
from dfs.fuse.model import ConnectionInfo
from dfs.fuse.operations import Operations
from dfs.observability.taskdump import describe_current_task

log = logging.getLogger(__name__)

INTERRUPT_MEMORY = 1.0
#: A request unanswered for this long is logged (once) as slow, with what it is; a lock
#: request that waits for another owner is not (it may wait forever).
SLOW_REQUEST = 30.0
INTERRUPT_MEMORY_SIZE = 1024


class SessionError(Exception):
    """The FUSE connection could not be established or failed unexpectedly."""


@dataclass(frozen=True)
class SessionStatistics:
    requests: dict[str, int]
    #: Error replies by errno name (ENOENT, ...).
    errors: dict[str, int]
    in_flight: int
    interrupts: int
    malformed: int
    #: Replies the kernel no longer wanted (ENOENT on write).
    dropped_replies: int


class _NotifyChannel:
    """A dup of the /dev/fuse fd used only by notification threads.

    A thread may still be blocked in ``write`` when the session ends; it holds its own fd, so
    closing the session never lets a thread write into a reused descriptor number.  The last
    user closes the dup.
    """

    def __init__(self, fd: int) -> None:
        self._fd = os.dup(fd)
        self._lock = threading.Lock()
        self._users = 0
        self._closed = False

    def _enter(self) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._users += 1
            return True

    def write(self, message: bytes) -> bool:
        """Runs in a worker thread.  True if the kernel acted on the message."""
        if not self._enter():
            return False
        try:
            os.write(self._fd, message)
            return True
        except OSError as exc:
            # ENOENT: nothing cached for that inode/name. ENODEV/ENOTCONN: connection gone.
            if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENOTCONN):
                return False
            raise
        finally:
            with self._lock:
                self._users -= 1
                last = self._closed and self._users == 0
            if last:
                os.close(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle = self._users == 0
        if idle:
            os.close(self._fd)


class FuseSession:
    """One mounted file system's protocol loop.  The session owns ``fd`` from construction:
    ``close()`` (after ``run`` returned) releases it, which also aborts a live connection."""

    def __init__(self, fd: int, operations: Operations, config: FuseConfig | None = None) -> None:
        self.config = config or FuseConfig()
        self.config.validate()
        self._fd = fd
        self._dispatcher = Dispatcher(operations, self.config)
        self._read_size = self.config.read_buffer_size
        self._inflight: dict[int, trio.CancelScope] = {}
        #: unique -> (request, start time) of requests being answered, for slow warnings.
        self._started: dict[int, tuple[rq.Request, float]] = {}
        self._early_interrupts: OrderedDict[int, float] = OrderedDict()
        self._limiter = trio.CapacityLimiter(self.config.max_concurrency)
        self._notify = _NotifyChannel(fd)
        # Counted by opcode number: naming each request (an Enum lookup) showed in profiles.
        self._requests: Counter[int] = Counter()
        self._errors: Counter[str] = Counter()
        self._interrupts = 0
        self._malformed = 0
        self._dropped = 0
        self._running = False
        self._finished = trio.Event()
        self._closed = False
        #: Called after each answered request with ``(opcode, error, seconds)`` (``error``:
        #: the reply's negative errno, 0 for success); for metrics.  Must not raise or block.
        self.on_request_done: Callable[[int, int, float], None] | None = None

    # ---- public API ----
    @property
    def conn(self) -> ConnectionInfo | None:
        """Negotiated parameters, once INIT is done."""
        return self._dispatcher.conn

    @property
    def fd(self) -> int:
        return self._fd

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(
            requests={abi.opcode_name(op): n for op, n in self._requests.items()},
            errors=dict(self._errors),
            in_flight=len(self._inflight),
            interrupts=self._interrupts,
            malformed=self._malformed,
            dropped_replies=self._dropped,
        )

    async def wait_finished(self) -> None:
        """Wait until ``run`` has returned (unmount, DESTROY or cancellation)."""
        await self._finished.wait()

    async def notify_inval_inode(self, ino: int, offset: int = 0, length: int = 0) -> bool:
        """Drop the kernel's cached attributes and data of ``ino`` (``length`` 0 = to EOF).

        Returns False when the kernel had nothing cached or the connection is gone.
        """
        return await self._send_notify(replies.notify_inval_inode(ino, offset, length))

    async def notify_inval_entry(self, parent: int, name: bytes) -> bool:
        """Drop the kernel's cached dentry ``parent``/``name``."""
        return await self._send_notify(replies.notify_inval_entry(parent, name))

    async def notify_delete(self, parent: int, child: int, name: bytes) -> bool:
        """Tell the kernel ``parent``/``name`` (inode ``child``) was removed."""
        return await self._send_notify(replies.notify_delete(parent, child, name))

    async def notify_store(self, ino: int, offset: int, data: bytes) -> bool:
        """Push ``data`` into the kernel's page cache of ``ino``."""
        return await self._send_notify(replies.notify_store(ino, offset, data))

    def close(self) -> None:
        """Release the /dev/fuse descriptor (aborting the connection if still mounted)."""
        if self._running:
            raise RuntimeError("FuseSession.close() while run() is active")
        if self._closed:
            return
        self._closed = True
        self._notify.close()
        os.close(self._fd)

    # ---- the loop ----
    async def run(
        self, *, task_status: trio.TaskStatus[FuseSession] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until the file system is unmounted (ENODEV) or the kernel sends DESTROY.

        ``task_status.started(self)`` is called once the INIT reply has been written.  Raises
        ``SessionError`` if the connection ends before INIT completed.
        """
        if self._running or self._closed:
            raise RuntimeError("FuseSession.run() called twice")
        self._running = True
        os.set_blocking(self._fd, False)
        started = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._warn_slow)
                while True:
                    data = await self._read()
                    if data is None:
                        break
                    stop = await self._handle(data, nursery)
                    if not started and self._dispatcher.conn is not None:
                        started = True
                        task_status.started(self)
                    if stop:
                        break
                # The connection is gone: nobody can receive the outstanding replies.
                nursery.cancel_scope.cancel()
            if not started:
                raise SessionError("the FUSE connection ended before INIT completed")
        finally:
            with trio.CancelScope(shield=True):
                await self._dispatcher.run_destroy()
            self._running = False
            self._finished.set()

    async def _read(self) -> bytes | None:
        """One request, or None once the connection is gone."""
        waited = False
        while True:
            try:
                # os.read returns a bytes object the kernel filled directly (trimmed to the
                # request's size), so a 1 MiB WRITE is not copied once more out of a buffer.
                data = os.read(self._fd, self._read_size)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)
                waited = True
                continue
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # the request was interrupted before we read it
                if exc.errno == errno.ENODEV:
                    log.info("FUSE connection closed by the kernel (unmounted)")
                    return None
                raise
            if not data:
                # /dev/fuse never reads empty; a test double (a SEQPACKET socket) does at EOF.
                log.info("FUSE channel closed")
                return None
            if not waited:
                # Let handler tasks run between requests even when the kernel queue is never
                # empty (after a wait they already had their turn: no extra scheduler pass).
                await trio.lowlevel.checkpoint()
            return data

    async def _handle(self, data: bytes, nursery: trio.Nursery) -> bool:
        """Process one raw request; True when the loop must stop (DESTROY, refused INIT)."""
        try:
            req = rq.parse_request(data, setxattr_ext=self._dispatcher.setxattr_ext)
        except MalformedRequest as exc:
            self._malformed += 1
            log.warning("malformed FUSE request: %s", exc.reason)
            if exc.unique is not None and exc.opcode is not None and needs_reply(exc.opcode):
                self._write(replies.error_reply(exc.unique, errno.EIO))
            return False
        self._requests[req.opcode] += 1

        if isinstance(req, rq.Interrupt):
            self._interrupt(req.target)
            return False
        if isinstance(req, rq.Init | rq.Destroy):
            # Inline: nothing else may run before INIT is answered, nor after DESTROY.
            reply = await self._dispatcher.dispatch(req)
            if reply is not None:
                self._write(reply)
            if isinstance(req, rq.Destroy):
                return True
            return self._dispatcher.conn is None
        if not needs_reply(req.opcode):
            nursery.start_soon(self._run_no_reply, req)
            return False

        scope = trio.CancelScope()
        if self._early_interrupts.pop(req.unique, None) is not None:
            scope.cancel()
        self._inflight[req.unique] = scope
        nursery.start_soon(self._run_request, req, scope)
        return False

    def _interrupt(self, target: int) -> None:
        scope = self._inflight.get(target)
        if scope is not None:
            self._interrupts += 1
            scope.cancel()
            return
        now = trio.current_time()
        while self._early_interrupts and (
            len(self._early_interrupts) >= INTERRUPT_MEMORY_SIZE
            or next(iter(self._early_interrupts.values())) < now
        ):
            self._early_interrupts.popitem(last=False)
        self._early_interrupts[target] = now + INTERRUPT_MEMORY

    async def _run_request(self, req: rq.Request, scope: trio.CancelScope) -> None:
        reply: bytes | None = None
        start = trio.current_time()
        self._started[req.unique] = (req, start)
        undo = describe_current_task(
            lambda: (
                f"{abi.opcode_name(req.opcode)} #{req.unique} nodeid {req.nodeid}, "
                f"{trio.current_time() - start:.1f} s"
            )
        )
        try:
            with scope:
                if scope.cancel_called:
                    # Interrupted before it started: the slot below is taken without a
                    # checkpoint, so deliver the cancellation here (answered EINTR).
                    await trio.lowlevel.checkpoint()
                if isinstance(req, rq.Lk) and req.sleep:
                    # A blocked lock wait may last forever: it must not hold a handler slot.
                    reply = await self._dispatcher.dispatch(req)
                else:
                    await self._acquire_slot()
                    try:
                        reply = await self._dispatcher.dispatch(req)
                    finally:
                        self._limiter.release()
        finally:
            del self._inflight[req.unique]
            self._started.pop(req.unique, None)
            undo()
        if scope.cancelled_caught:
            reply = replies.error_reply(req.unique, errno.EINTR)
        if reply is None:
            log.error(
                "no reply produced for %s (unique %d); answering EIO",
                abi.opcode_name(req.opcode),
                req.unique,
            )
            reply = replies.error_reply(req.unique, errno.EIO)
        if self.on_request_done is not None:
            # fuse_out_header: len (u32), error (i32), unique (u64).
            error = int.from_bytes(reply[4:8], "little", signed=True)
            self.on_request_done(req.opcode, error, trio.current_time() - start)
        self._write(reply)

    async def _warn_slow(self) -> None:
        """Log each request still unanswered after ``SLOW_REQUEST`` seconds, once."""
        warned: set[int] = set()
        while True:
            await trio.sleep(SLOW_REQUEST / 3)
            now = trio.current_time()
            for unique, (req, start) in list(self._started.items()):
                if unique in warned or now - start < SLOW_REQUEST:
                    continue
                if isinstance(req, rq.Lk) and req.sleep:
                    continue
                warned.add(unique)
                log.warning(
                    "slow request: %s #%d on node %d unanswered for %.0f s "
                    "(kill -USR1 %d logs where it waits)",
                    abi.opcode_name(req.opcode),
                    unique,
                    req.nodeid,
                    now - start,
                    os.getpid(),
                )
            warned &= self._started.keys()

    async def _run_no_reply(self, req: rq.Request) -> None:
        await self._acquire_slot()
        try:
            await self._dispatcher.dispatch(req)
        finally:
            self._limiter.release()

    async def _acquire_slot(self) -> None:
        """A handler slot; a free one is taken without ``async with``'s scheduler round trip
        (one more pass through trio's loop per request, which small I/O notices)."""
        try:
            self._limiter.acquire_nowait()
        except trio.WouldBlock:
            await self._limiter.acquire()

    def _write(self, message: bytes) -> None:
        _length, error, _unique = abi.OUT_HEADER.unpack_from(message)
        if error < 0:
            self._errors[errno.errorcode.get(-error, str(-error))] += 1
        try:
            os.write(self._fd, message)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                self._dropped += 1  # the kernel no longer waits for this request
            elif exc.errno in (errno.ENODEV, errno.ENOTCONN):
                pass  # unmounted: the read loop sees it next
            else:
                log.error("writing a FUSE reply failed: %s", exc)

    async def _send_notify(self, message: bytes) -> bool:
        if self._dispatcher.conn is None or not self._running:
            return False
        return await trio.to_thread.run_sync(self._notify.write, message, abandon_on_cancel=True)
