"""Byte movement shared by the RPC client and server: the frame writer and stream errors.

Frames are written by one writer task per connection that takes them from a rendezvous
channel, rather than by each sender under a lock.  Two reasons:

* cancelling a task in the middle of ``SSLStream.send_all`` breaks the TLS stream for every
  other user of the connection; a sender cancelled while waiting for the writer simply never
  hands its frame over, and the writer itself is only cancelled when the connection ends;
* frames that queue up while the writer is busy go out in one ``send_all`` (one TLS record, one
  system call), which is what makes many small concurrent calls cheap.

The channel has no buffer, so a slow peer pushes back on the senders (bounded memory).  A
sender that finds the writer idle writes a small frame itself, synchronously
(``TlsStream.try_send_now``): no cancellation can interrupt that, and it saves small calls a
hand-over to the writer task.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Final, Protocol

import trio

from dfs.rpc.codec import RpcConnection
from dfs.rpc.tls_stream import TlsStream

#: Most bytes one receive may return: ``TlsStream`` hands over every record already received,
#: up to a whole 1 MiB data frame, in one call.
RECEIVE_SIZE: Final = 1024 * 1024 + 4096
#: Small frames waiting for the writer are coalesced up to about this many bytes.
_COALESCE_LIMIT: Final = 64 * 1024
#: Frames up to this size may be written directly by their sender (``FrameWriter.send``).
_DIRECT_LIMIT: Final = 64 * 1024

#: What a failing or closed connection raises (trio wraps TLS failures in BrokenResourceError).
STREAM_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ssl.SSLError)


class SendMarker(Protocol):
    """Told (``sent = True``) when its frame is handed to the stream."""

    sent: bool


class FrameWriter:
    """Serialises frames onto one stream; see the module docstring."""

    def __init__(self, stream: trio.abc.SendStream) -> None:
        self._stream = stream
        #: The writer task is parked waiting for a frame (nothing of ours is being sent).
        self._idle = False
        send, receive = trio.open_memory_channel[tuple[bytes, SendMarker | None]](0)
        self._send_channel = send
        self._receive_channel = receive

    async def send(self, frame: bytes, marker: SendMarker | None = None) -> None:
        """Hand ``frame`` to the writer task.

        Raises ``trio.BrokenResourceError`` or ``trio.ClosedResourceError`` if the writer has
        stopped (the frame was then certainly not sent).  Safe to cancel.

        When the writer is idle, a small frame is written by the caller at once (synchronously,
        so it cannot be cancelled half-way): that saves a hand-over to the writer task, one
        pass through the scheduler per small call.  Frames are independent messages, so one
        going ahead of a frame just handed to the writer is fine.
        """
        stream = self._stream
        if self._idle and len(frame) <= _DIRECT_LIMIT and isinstance(stream, TlsStream):
            try:
                direct = stream.try_send_now(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.close()
                raise
            if direct:
                if marker is not None:
                    marker.sent = True
                if stream.has_backlog:
                    # The socket took only part of it: the writer finishes the job (if it
                    # was just handed a frame instead, its send_all writes the rest first).
                    with contextlib.suppress(trio.WouldBlock):
                        self._send_channel.send_nowait((b"", None))
                await trio.lowlevel.checkpoint()
                return
        await self._send_channel.send((frame, marker))

    def close(self) -> None:
        """Stop accepting frames; blocked and later ``send`` calls raise."""
        self._receive_channel.close()
        self._send_channel.close()

    async def run(self) -> None:
        """Write frames until the stream fails (raises one of ``STREAM_ERRORS``)."""
        receive = self._receive_channel
        try:
            while True:
                self._idle = True
                try:
                    frame, marker = await receive.receive()
                finally:
                    self._idle = False
                if not frame:
                    assert isinstance(self._stream, TlsStream)
                    await self._stream.flush_backlog()
                    continue
                if marker is not None:
                    marker.sent = True
                if len(frame) >= _COALESCE_LIMIT:
                    await self._stream.send_all(frame)
                    continue
                batch = [frame]
                total = len(frame)
                while total < _COALESCE_LIMIT:
                    try:
                        frame, marker = receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    if marker is not None:
                        marker.sent = True
                    batch.append(frame)
                    total += len(frame)
                await self._stream.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
        finally:
            self.close()


async def receive_into(stream: TlsStream, codec: RpcConnection) -> None:
    """Feed the next received bytes to ``codec`` record by record (EOF as ``b""``); the codec
    joins them once per frame, so they are not joined here first."""
    parts = await stream.receive_parts(RECEIVE_SIZE)
    if not parts:
        codec.receive_data(b"")
    for part in parts:
        codec.receive_data(part)


def describe(exc: BaseException) -> str:
    """A one-line reason for a connection failure (with the TLS cause when there is one)."""
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else None
    target = cause if cause is not None else exc
    text = str(target) or type(target).__name__
    return f"{type(target).__name__}: {text}" if str(target) else text


#: How long a graceful close (TLS close_notify) may take before the socket is just closed.
CLOSE_TIMEOUT: Final = 0.5


async def close_stream(stream: trio.abc.AsyncResource) -> None:
    """Close ``stream`` gracefully if that is quick, else forcefully; never raises, never hangs.

    Shielded: it also runs while the surrounding scope is being cancelled.
    """
    with trio.CancelScope(shield=True):
        with trio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(*STREAM_ERRORS):
            await stream.aclose()
        await trio.aclose_forcefully(stream)
