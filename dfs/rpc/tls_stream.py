"""``TlsStream``: TLS over a trio stream, tuned for bulk RPC traffic.

``trio.SSLStream`` hands back at most one TLS record (16 KiB) per ``receive_some`` and goes
through the scheduler for each, and refills from the socket 64 KiB at a time; a 1 MiB frame
then costs some 64 trips through its retry loop on every hop.  This stream decrypts every
record already received in one call (into one buffer) and reads the socket in large pieces,
which is what the RPC read loops want.  The TLS itself is the standard library's (OpenSSL via
``ssl.SSLObject`` and memory BIOs), with the caller's context: same protocol versions, same
certificate checks.

Concurrency contract (the RPC layer's usage): one task receives, one task sends; ``send_all``
and ``receive_some`` may run at the same time.  Bytes that OpenSSL queues for the peer, from
either side (a receive may produce protocol replies such as a KeyUpdate), are taken from the
outgoing BIO and written to the socket under one FIFO lock, so they reach the wire in the order
OpenSSL produced them.  Like ``SSLStream``, a ``send_all`` cancelled half-way leaves the stream
broken; the RPC layer only cancels its writer when the connection ends.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from typing import Any, Final

import trio

#: Bytes asked of the socket per read: many TLS records per system call.
SOCKET_RECEIVE_SIZE: Final = 256 * 1024


class TlsStream(trio.abc.Stream):
    """TLS over ``transport``; call ``do_handshake`` before anything else."""

    def __init__(
        self,
        transport: trio.abc.Stream,
        context: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        self.transport_stream = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._send_lock = trio.StrictFIFOLock()
        #: Ciphertext of a ``try_send_now`` that the socket did not take: it goes out before
        #: anything else (the next ``_flush`` sends it first).
        self._backlog = b""
        self._broken = False
        self._closed = False

    # ---- information about the session (for peer_from_ssl and logs) ----
    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._ssl.getpeercert(binary_form)

    def version(self) -> str | None:
        return self._ssl.version()

    def cipher(self) -> tuple[str, str, int] | None:
        return self._ssl.cipher()

    # ---- internals ----
    def _check(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream is closed")
        if self._broken:
            raise trio.BrokenResourceError("the TLS stream is broken")

    async def _flush(self) -> None:
        """Write what OpenSSL queued for the peer.

        The queue is drained *before* waiting for the lock, in the same step as the operation
        that filled it: the FIFO lock then sends the pieces in the order OpenSSL produced them,
        and a receiver never ends up sending (and blocking on) a sender's bulk data.
        """
        data = self._outgoing.read()
        if not data and not self._backlog:
            return
        async with self._send_lock:
            if self._backlog:
                data, self._backlog = self._backlog + data, b""
            try:
                await self.transport_stream.send_all(data)
            except BaseException:
                # Some unknown part of a record went out: the stream cannot continue.
                self._broken = True
                raise

    async def _refill(self) -> None:
        """Read more ciphertext from the socket into the incoming BIO (EOF is recorded)."""
        try:
            data = await self.transport_stream.receive_some(SOCKET_RECEIVE_SIZE)
        except BaseException:
            self._broken = True
            raise
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def _fail(self, exc: BaseException) -> trio.BrokenResourceError:
        self._broken = True
        return trio.BrokenResourceError(f"TLS error: {exc}")

    # ---- trio.abc.Stream ----
    async def do_handshake(self) -> None:
        """Run the TLS handshake (certificates are checked by the context)."""
        self._check()
        while True:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                await self._flush()
                await self._refill()
                continue
            except (ssl.SSLError, ssl.CertificateError) as exc:
                # Tell the peer why (the alert is in the outgoing BIO), if it still listens.
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, OSError
                ):
                    await self._flush()
                raise self._fail(exc) from exc
            await self._flush()
            return

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Up to ``max_bytes`` decrypted bytes: every record already here, else wait for one.

        ``b""`` at a clean end of the TLS session.
        """
        size = max_bytes if max_bytes is not None else SOCKET_RECEIVE_SIZE
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        parts = await self.receive_parts(size)
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    async def receive_parts(self, max_bytes: int) -> list[bytes]:
        """Like ``receive_some`` but the records as received, not joined (saves a copy for a
        caller that buffers them anyway); ``[]`` at a clean end of the TLS session."""
        self._check()
        parts: list[bytes] = []
        got = 0
        waited = False
        while got < max_bytes:
            try:
                # One record per call; records already buffered cost no system call.
                part = self._ssl.read(max_bytes - got)
            except ssl.SSLWantReadError:
                if self._outgoing.pending:
                    await self._flush()
                    waited = True
                if got:
                    break
                await self._refill()
                waited = True
                continue
            except ssl.SSLZeroReturnError:
                break  # close_notify: a clean end
            except (ssl.SSLError, ssl.CertificateError) as exc:
                if got:
                    break  # deliver what we have; the error shows on the next call
                raise self._fail(exc) from exc
            if not part:
                break
            parts.append(part)
            got += len(part)
        if self._outgoing.pending:
            await self._flush()
            waited = True
        if not waited:
            # Everything came from the buffers: still let other tasks run (trio's contract
            # that every receive is a checkpoint keeps a busy peer from starving them).
            await trio.lowlevel.checkpoint()
        return parts

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check()
        if not data:
            await trio.lowlevel.checkpoint()
            return
        try:
            self._ssl.write(data)
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise self._fail(exc) from exc
        await self._flush()

    @property
    def has_backlog(self) -> bool:
        return bool(self._backlog)

    def try_send_now(self, data: bytes) -> bool:
        """Encrypt ``data`` and hand it to the socket without waiting; False (nothing done)
        when a send is in progress or the stream cannot do this.

        What the socket does not take at once stays in a backlog, written first by the next
        ``send_all`` or ``flush_backlog``: the caller must make sure one follows.  Synchronous,
        so it cannot be cancelled half-way (the reason ``send_all`` is left to one task).
        """
        self._check()
        if self._send_lock.locked() or self._backlog or not data:
            return False
        sock = getattr(self.transport_stream, "socket", None)
        if sock is None:
            return False
        try:
            self._ssl.write(data)
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise self._fail(exc) from exc
        out = self._outgoing.read()
        try:
            sent = os.write(sock.fileno(), out)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._broken = True
            raise trio.BrokenResourceError(f"send failed: {exc}") from exc
        if sent < len(out):
            self._backlog = out[sent:]
        return True

    async def flush_backlog(self) -> None:
        """Write what ``try_send_now`` left behind (nothing when there is none)."""
        self._check()
        await self._flush()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        raise NotImplementedError("TLS 1.3 streams are closed with aclose()")

    async def aclose(self) -> None:
        """Send close_notify (best effort) and close the socket."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if not self._broken:
                # close_notify is queued (unwrap then wants the peer's, we do not wait for it).
                with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLError):
                    self._ssl.unwrap()
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await self.transport_stream.aclose()
