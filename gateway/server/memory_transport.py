"""A connected pair of in-memory asyncio transports, for the gateway's own MQTT clients.

In-process clients (device sessions, the admin service, the upstream bridge) used to speak
MQTT over a socket pair: every batch crossed the kernel twice (write, epoll, read) on each
side of the process, about a third of the event loop's time when the upstream bridge
forwards a stream. These transports hand the bytes to the other side's protocol on the next
loop turn instead, with the flow control a socket gives: the writer's protocol is paused
above the high-water mark, and a reader that pauses reading holds the writer's bytes back.
"""

from __future__ import annotations

import asyncio

_CHUNK = 256 * 1024  # at most this much per data_received, like one socket read
_HIGH_WATER = 64 * 1024


class MemoryTransport(asyncio.Transport):
    """One end of the pair; what it writes is received by the other end's protocol."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        super().__init__({"peername": name, "sockname": name})
        self._loop = loop
        self._protocol: asyncio.BaseProtocol | None = None
        self._peer: MemoryTransport | None = None
        self._buffer = bytearray()  # written here, not yet received by the peer
        self._delivery_scheduled = False
        self._reading_paused = False
        self._writing_paused = False
        self._high = _HIGH_WATER
        self._low = _HIGH_WATER // 4
        self._closing = False  # close() or abort() was called, or the peer went away
        self._lost = False  # connection_lost was scheduled for our protocol

    # --- asyncio.BaseTransport ---------------------------------------------------------------

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop writing; what was written still reaches the peer, then it sees end of file."""
        if self._closing:
            return
        self._closing = True
        self._schedule_delivery()

    def abort(self) -> None:
        """Drop the connection now: unsent bytes are lost, the peer sees a reset."""
        self._buffer.clear()
        self._closing = True
        self._lose(None)
        peer = self._peer
        if peer is not None:
            peer._buffer.clear()
            peer._closing = True
            peer._lose(ConnectionResetError("in-process connection reset"))

    # --- asyncio.ReadTransport ----------------------------------------------------------------

    def is_reading(self) -> bool:
        return not self._reading_paused and not self._closing

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        if self._peer is not None:
            self._peer._schedule_delivery()

    # --- asyncio.WriteTransport ---------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return  # like a socket transport after close(): ignored
        self._buffer += data
        self._schedule_delivery()
        if not self._writing_paused and len(self._buffer) > self._high:
            self._writing_paused = True
            if isinstance(self._protocol, asyncio.Protocol):
                self._protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = _HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        self._high, self._low = high, low

    def can_write_eof(self) -> bool:
        return False  # a half-closed in-process connection has no use: close() instead

    def write_eof(self) -> None:
        raise NotImplementedError("in-process connections cannot be half-closed")

    # --- delivery ----------------------------------------------------------------------------

    def _schedule_delivery(self) -> None:
        if not self._delivery_scheduled and not self._lost:
            self._delivery_scheduled = True
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._delivery_scheduled = False
        peer = self._peer
        if self._lost or peer is None:
            return
        if peer._lost:
            self._buffer.clear()
        elif self._buffer and not peer._reading_paused:
            chunk = bytes(self._buffer[:_CHUNK])
            del self._buffer[:_CHUNK]
            receiver = peer._protocol
            if isinstance(receiver, asyncio.Protocol):
                receiver.data_received(chunk)
            if self._buffer:
                self._schedule_delivery()
        if self._writing_paused and len(self._buffer) <= self._low:
            self._writing_paused = False
            if isinstance(self._protocol, asyncio.Protocol) and not self._lost:
                self._protocol.resume_writing()
        if self._closing and not self._buffer:
            self._lose(None)
            peer._end_of_file()

    def _end_of_file(self) -> None:
        """The peer closed its end after everything it wrote was received."""
        if self._lost:
            return
        keep_open = False
        if isinstance(self._protocol, asyncio.Protocol):
            keep_open = bool(self._protocol.eof_received())
        if not keep_open:
            self.close()

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        protocol = self._protocol
        if protocol is not None:
            self._loop.call_soon(protocol.connection_lost, exc)


def memory_transport_pair(
    loop: asyncio.AbstractEventLoop, name: str
) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected ends; set each one's protocol, then call its connection_made."""
    a, b = MemoryTransport(loop, name), MemoryTransport(loop, name)
    a._peer, b._peer = b, a
    return a, b
