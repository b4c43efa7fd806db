"""Plain TCP listeners and connections with less per-connection state than asyncio's.

asyncio's selector transport costs about 1.8 KB per idle connection (measured with a protocol
that holds nothing): an instance dict, an extra-info dict with both addresses, a socket
wrapper, a write buffer, bound methods, an entry in the loop's weak dictionary of transports,
and a task per accepted socket. On a gateway holding thousands of sleeping devices that was a
third of what an idle MQTT client cost. This transport keeps a socket, a protocol and a few
flags in slots; the only other cost is the loop's reader registration. Its output buffer
exists only while the kernel's send queue is full.

It implements exactly what MQTTConnection and WebSocketLink use of asyncio.Transport, with
asyncio's semantics: write buffer limits with pause_writing/resume_writing, pause/resume of
reading, write_eof (a half close, reading goes on), close after the buffer drained, abort,
connection_lost once, after the last callback, from the event loop. The tcp and ws listeners
use it; tls and wss keep asyncio's transports (start_tls() needs them, and the TLS layer's own
buffers dwarf these), and so does the Unix socket listener.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

from gateway.server.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

# A read takes at most this much (asyncio's figure); the bytes object is shrunk to what came.
MAX_READ = 256 * 1024
DEFAULT_HIGH_WATER = 64 * 1024
# After running out of file descriptors (EMFILE), accepting pauses this long, as asyncio does:
# the listening socket would otherwise report ready in a busy loop.
ACCEPT_RETRY_SECONDS = 1.0
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class SocketTransport(asyncio.Transport):
    __slots__ = (
        "_closing",
        "_eof",
        "_fd",
        "_high",
        "_loop",
        "_lost",
        "_low",
        "_out",
        "_protocol",
        "_reading",
        "_sock",
        "_write_paused",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: asyncio.Protocol
    ) -> None:
        # No super().__init__(): the extra-info dict it makes is what get_extra_info() below
        # answers from the socket itself.
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._reading = True
        self._closing = False  # close() or abort() called, or the connection failed
        self._lost = False  # connection_lost() is scheduled
        self._eof = False  # write_eof() called
        self._out: bytearray | None = None  # what the kernel did not take yet
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_HIGH_WATER // 4
        self._write_paused = False

    def start(self) -> None:
        self._protocol.connection_made(self)
        if self._reading and not self._closing:
            self._loop.add_reader(self._fd, self._read_ready)

    # --- asyncio.BaseTransport --------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        try:
            if name == "peername":
                return self._sock.getpeername()
            if name == "sockname":
                return self._sock.getsockname()
        except OSError:
            return default
        if name == "socket":
            return self._sock
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._out:
            self._schedule_lost(None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # --- reading ----------------------------------------------------------------------------

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        if self._closing or not self._reading:
            return
        self._reading = False
        self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._closing or self._reading:
            return
        self._reading = True
        self._loop.add_reader(self._fd, self._read_ready)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _read_ready(self) -> None:
        if self._closing:
            return
        try:
            data = self._sock.recv(MAX_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        if data:
            self._protocol.data_received(data)
            return
        self._stop_reading()  # end of stream: the peer is done sending
        if not self._protocol.eof_received():
            self.close()

    # --- writing ----------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._eof or not data:
            return
        if self._out:
            self._out += data
        else:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._fail(exc)
                return
            if sent == len(data):
                return
            self._out = bytearray(memoryview(data)[sent:])
            self._loop.add_writer(self._fd, self._write_ready)
        self._maybe_pause_protocol()

    def _write_ready(self) -> None:
        out = self._out
        if not out:
            return
        try:
            sent = self._sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        del out[:sent]
        if out:
            self._maybe_resume_protocol()
            return
        self._out = None
        self._loop.remove_writer(self._fd)
        self._maybe_resume_protocol()
        if self._closing:
            self._schedule_lost(None)
        elif self._eof:
            self._shutdown_write()

    def get_write_buffer_size(self) -> int:
        return len(self._out) if self._out else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def _maybe_pause_protocol(self) -> None:
        if not self._write_paused and self.get_write_buffer_size() > self._high:
            self._write_paused = True
            self._protocol.pause_writing()

    def _maybe_resume_protocol(self) -> None:
        if self._write_paused and self.get_write_buffer_size() <= self._low:
            self._write_paused = False
            self._protocol.resume_writing()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._out:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fail(exc)

    def abort(self) -> None:
        self._fail(None)

    # --- the end ----------------------------------------------------------------------------

    def _fail(self, exc: Exception | None) -> None:
        """Close at once, dropping unsent output (abort(), or the connection broke)."""
        if self._out is not None:
            self._out = None
            self._loop.remove_writer(self._fd)
        self._closing = True
        self._stop_reading()
        self._schedule_lost(exc)

    def _schedule_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        # From the loop, as asyncio does: never from inside a call of the protocol's own.
        self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()


class SocketListener:
    """Listening TCP sockets whose connections get a SocketTransport; the parts of
    asyncio.Server that gateway/server/server.py uses."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        protocol_factory: Callable[[], asyncio.Protocol],
        backlog: int,
    ) -> None:
        self._loop = loop
        self.sockets = sockets
        self._factory = protocol_factory
        self._backlog = backlog
        self._serving = False
        self._closed = False
        self._log_resources = RateLimitedLog(log, logging.ERROR)

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self._serve()

    def _serve(self) -> None:
        if self._serving or self._closed:
            return
        self._serving = True
        for sock in self.sockets:
            # listen() only now, as asyncio does: until the gateway serves, a client is
            # refused rather than left waiting in the backlog.
            sock.listen(self._backlog)
            self._loop.add_reader(sock.fileno(), self._accept_ready, sock)

    def _pause(self) -> None:
        if self._serving:
            self._serving = False
            for sock in self.sockets:
                self._loop.remove_reader(sock.fileno())

    def close(self) -> None:
        if self._closed:
            return
        self._pause()
        self._closed = True
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        return None  # nothing is left to wait for: connections are the server's to close

    def _accept_ready(self, listening: socket.socket) -> None:
        for _ in range(self._backlog):
            try:
                sock, _addr = listening.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    raise  # the loop logs it and goes on
                self._log_resources(
                    "not accepting clients for %g s: %s (raise LimitNOFILE=)",
                    ACCEPT_RETRY_SECONDS,
                    exc,
                )
                self._pause()
                self._loop.call_later(ACCEPT_RETRY_SECONDS, self._serve)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            SocketTransport(self._loop, sock, self._factory()).start()


async def listen_tcp(
    host: str,
    port: int,
    protocol_factory: Callable[[], asyncio.Protocol],
    *,
    backlog: int,
    start_serving: bool,
) -> SocketListener:
    """Bind every address ``host`` names (as loop.create_server does: SO_REUSEADDR, IPv6
    sockets IPv6-only so that "::" and "0.0.0.0" can both be listed); listen from
    ``start_serving`` on, or from the listener's start_serving()."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"error while attempting to bind on address {address!r}: {exc}"
                ) from None
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise OSError(f"getaddrinfo({host!r}) returned no addresses")
    listener = SocketListener(loop, sockets, protocol_factory, backlog)
    if start_serving:
        listener._serve()
    return listener
