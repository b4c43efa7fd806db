"""MQTT over WebSockets (MQTT 3.1.1 §6, 5.0 §6): a layer between a socket and an MQTTConnection.

The WebSocket protocol itself (HTTP upgrade, frames, masking, close handshake) is the
`websockets` library's sans-I/O ``ServerProtocol``; this module only moves bytes. It is the
socket's ``asyncio.Protocol`` and, towards the MQTT connection, its transport: the
MQTTConnection is made at accept and registered with the server before any byte is read, so
max_connections, the pending caps per address and in total, the connect timeout (which covers
the TLS handshake and the HTTP upgrade: a slow upgrade request is a slow CONNECT) and
password-check admission are exactly those of the tcp/tls listeners. For wss, TLS starts only
once the server admitted the connection, as for tls.

Binary frame payloads go to the MQTT decoder as a byte stream, so a packet may span frames and
a frame may hold several packets. Back-pressure is the TCP path's: when the MQTT connection
stops reading, so does the socket, and payloads already parsed wait here; a full send buffer
pauses the MQTT connection through the socket's own pause_writing().
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import ssl
import time
from typing import Any, cast
from urllib.parse import urlsplit

from websockets.exceptions import PayloadTooBig
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import OPEN, State
from websockets.server import ServerProtocol

from gateway.mqtt.errors import PacketTooLarge
from gateway.server.connection import (
    LINGER_SECONDS,
    TLS_SHUTDOWN_SECONDS,
    WRITE_HIGH_WATER,
    ConnectionHost,
    MQTTConnection,
)

log = logging.getLogger(__name__)

# WebSocket subprotocols we answer, in order of preference: "mqtt" is the standard's;
# "mqttv3.1" is what old browser clients (Paho JavaScript 1.0) ask for. Mosquitto takes the same
# two. A request naming neither, or none at all, is refused (400), as Mosquitto refuses it.
SUBPROTOCOLS = ("mqtt", "mqttv3.1")
# The whole HTTP upgrade request, request line and headers (Mosquitto's default is 4096):
# more is refused with 431 before it costs more memory.
MAX_UPGRADE_REQUEST = 8192


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """May a request with this Origin (sent by browsers, and by paho as the broker's own
    address) and Host header connect? ``allowed``: the listener's origins, "*" = any.

    Besides the listed ones, a request without Origin (no browser) and a same-origin one
    (a page served from the very address it connects to) may. Same-origin counts only for an
    IP address or localhost: a DNS name could be rebound to this machine by a hostile page."""
    if origin is None or "*" in allowed or origin in allowed:
        return True
    if host is None:
        return False
    netloc = urlsplit(origin).netloc.lower()
    if netloc != host.lower():
        return False
    name = urlsplit(f"//{netloc}").hostname or ""
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class WebSocketLink(asyncio.Protocol):
    __slots__ = (
        "_early",
        "_ended",
        "_handshaking",
        "_held",
        "_high_water",
        "_linger",
        "_lost",
        "_origins",
        "_paused",
        "_raw",
        "_request_bytes",
        "_started",
        "_tls",
        "_tls_task",
        "_url_path",
        "_ws",
        "mqtt",
        "server",
    )

    def __init__(
        self,
        server: ConnectionHost,
        listener_name: str,
        allow_anonymous: bool,
        url_path: str,
        tls: ssl.SSLContext | None = None,
        origins: tuple[str, ...] = ("*",),
    ) -> None:
        self.server = server
        self.mqtt = MQTTConnection(server, listener_name, allow_anonymous)
        # One message carries at most max_packet_size bytes: one whole packet, or several
        # smaller ones, or part of one; the MQTT decoder checks each packet's own size.
        self._ws = ServerProtocol(
            subprotocols=[cast(Any, name) for name in SUBPROTOCOLS],
            max_size=server.max_packet_size,
            logger=_quiet,
        )
        self._url_path = url_path
        self._origins = origins
        self._tls = tls
        self._tls_task: asyncio.Task[None] | None = None
        self._raw: asyncio.Transport | None = None
        self._started = False  # reading (or the TLS handshake) began
        self._handshaking = False
        self._early: list[bytes] = []  # decrypted before start_tls() returned its transport
        self._paused = False  # the MQTT connection asked us not to read
        self._held: collections.deque[bytes] = collections.deque()  # payloads not yet passed
        self._request_bytes = 0
        self._high_water = WRITE_HIGH_WATER
        self._ended = False  # our side of the stream is finished (EOF sent or closed)
        self._lost = False
        self._linger: asyncio.TimerHandle | None = None

    # --- towards the socket (asyncio.Protocol) ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = cast(asyncio.Transport, transport)
        # Registered here, before any byte: it may be refused or told to wait its turn.
        self.mqtt.connection_made(cast(asyncio.Transport, self))
        if not self.mqtt.closed and not self.mqtt.waiting:
            self._start()

    def data_received(self, data: bytes) -> None:
        if self._handshaking:  # the TLS layer delivers before start_tls() has returned
            self._early.append(data)
            return
        ws = self._ws
        if ws.state is State.CONNECTING:
            self._request_bytes += len(data)
            if self._request_bytes > MAX_UPGRADE_REQUEST:
                self._refuse(431, "upgrade request too large")
                return
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Request):
                self._answer_upgrade(event)
            elif not isinstance(event, Frame):
                continue
            elif event.opcode is Opcode.BINARY or event.opcode is Opcode.CONT:
                self._pass(cast(bytes, event.data))  # received frames hold bytes
            elif event.opcode is Opcode.TEXT:
                self._bad_frames("a text frame (MQTT travels in binary frames only)")
                if ws.state is OPEN:
                    ws.fail(CloseCode.UNSUPPORTED_DATA, "MQTT needs binary frames")
                break
            # Ping is answered by the protocol object, pong needs nothing, close is echoed.
        if isinstance(ws.parser_exc, PayloadTooBig) and not self._ended:
            self._too_big()
        elif ws.parser_exc is not None and not self._ended:
            self._bad_frames(f"a broken WebSocket frame ({ws.parser_exc})")
        self._send()

    def eof_received(self) -> bool | None:
        return False  # the peer is done sending: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        if self._linger is not None:
            self._linger.cancel()
        self.mqtt.connection_lost(exc)

    def pause_writing(self) -> None:
        self.mqtt.pause_writing()

    def resume_writing(self) -> None:
        self.mqtt.resume_writing()

    # --- towards the MQTT connection (its transport) ------------------------------------------

    def write(self, data: bytes) -> None:
        ws = self._ws
        if ws.state is OPEN:
            ws.send_binary(data)
            self._send()
        elif self._raw is not None and not self._ended and ws.close_sent is not None:
            # The last words after a WebSocket error we closed for (DISCONNECT 0x95 for a
            # too-big message), before the close frame that is held back for them.
            self._raw.write(Frame(Opcode.BINARY, data).serialize(mask=False, extensions=[]))

    def pause_reading(self) -> None:
        self._paused = True
        if self._raw is not None and not self._raw.is_closing():
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._started:  # the server gave this waiting connection its turn
            self._start()
            return
        self._paused = False
        while self._held and not self._paused:
            self.mqtt.data_received(self._held.popleft())
        if not self._paused and self._raw is not None and not self._raw.is_closing():
            self._raw.resume_reading()

    def is_reading(self) -> bool:
        return not self._paused

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high_water = high if high is not None else WRITE_HIGH_WATER
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high=high, low=low)

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size() if self._raw is not None else 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self._raw is None:
            return default
        return self._raw.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._ended or self._raw is None or self._raw.is_closing()

    def can_write_eof(self) -> bool:
        return False  # close() below is the WebSocket closing handshake

    def close(self) -> None:
        """Start the WebSocket closing handshake (or, before the upgrade, just close)."""
        ws = self._ws
        if ws.state is OPEN:
            ws.send_close(CloseCode.NORMAL_CLOSURE)
        elif ws.state is State.CONNECTING and not ws.eof_sent:
            self._end()
            return
        self._send()
        self._linger_then_abort()

    def abort(self) -> None:
        self._ended = True
        self._held.clear()
        if self._raw is not None:
            self._raw.abort()

    # --- the upgrade --------------------------------------------------------------------------

    def _start(self) -> None:
        self._started = True
        if self._tls is not None:
            self._handshaking = True
            loop = asyncio.get_running_loop()
            self._tls_task = loop.create_task(self._start_tls(self._tls))
        elif self._raw is not None:
            self._paused = False
            self._raw.resume_reading()

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        """The TLS handshake, within what is left of the connect timeout (as connection.py
        does it for tls listeners)."""
        raw = self._raw
        assert raw is not None
        left = self.mqtt.opened_at + self.server.connect_timeout - time.monotonic()
        error: BaseException | None = None
        tls: asyncio.BaseTransport | None = None
        try:
            tls = await asyncio.get_running_loop().start_tls(
                raw,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=max(left, 0.001),
                ssl_shutdown_timeout=TLS_SHUTDOWN_SECONDS,
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            error = exc
        self._handshaking = False
        if tls is None or self.mqtt.closed:
            if self.mqtt.closed:
                pass  # aborted by the server (connect timeout, shutdown): already counted
            elif time.monotonic() - self.mqtt.opened_at >= self.server.connect_timeout:
                self.server.connect_timed_out(self.mqtt)
            else:
                self.server.tls_failed(self.mqtt, error)
            if tls is not None:
                cast(asyncio.Transport, tls).abort()
            raw.abort()
            self.connection_lost(None)  # the TLS layer does not report it during a handshake
            return
        self._raw = cast(asyncio.Transport, tls)
        self._raw.set_write_buffer_limits(high=self._high_water)
        if self._paused:
            self._raw.pause_reading()
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def _answer_upgrade(self, request: Request) -> None:
        ws = self._ws
        origin = request.headers.get("Origin")
        if request.path.split("?", 1)[0] != self._url_path:
            response = ws.reject(404, f"Not Found: MQTT over WebSocket is at {self._url_path}\n")
            reason = f"path {request.path[:100]!r} is not {self._url_path!r}"
        elif not origin_allowed(origin, request.headers.get("Host"), self._origins):
            response = ws.reject(403, "Forbidden: web pages of this origin may not connect\n")
            reason = f"origin {str(origin)[:100]!r} not allowed (listener origins)"
        else:
            response = ws.accept(request)
            reason = str(ws.handshake_exc or "")
        ws.send_response(response)
        if response.status_code != 101:
            self.server.websocket_refused(self.mqtt, response.status_code, reason)

    def _refuse(self, status: int, reason: str) -> None:
        ws = self._ws
        ws.send_response(ws.reject(status, f"{reason}\n"))
        self.server.websocket_refused(self.mqtt, status, reason)
        self._send()

    # --- frames -------------------------------------------------------------------------------

    def _pass(self, payload: bytes) -> None:
        if not payload or self.mqtt.closed:
            return
        if self._paused or self._held:
            self._held.append(payload)
        else:
            self.mqtt.data_received(payload)

    def _too_big(self) -> None:
        """A message over max_packet_size: what the MQTT connection says about a too-big
        packet (DISCONNECT 0x95 to an MQTT 5 client) goes out before the WebSocket's close
        frame (1009), which the protocol object has already queued."""
        self._held.clear()
        final = self._ws.data_to_send()
        limit = self.server.max_packet_size
        self.mqtt.input_error(
            PacketTooLarge(f"WebSocket message over {limit} bytes (limits.max_packet_size)")
        )
        self._write_all(final)

    def _bad_frames(self, what: str) -> None:
        self._held.clear()
        self.server.websocket_bad_frame(self.mqtt, what)

    # --- output -------------------------------------------------------------------------------

    def _send(self) -> None:
        self._write_all(self._ws.data_to_send())

    def _write_all(self, chunks: list[bytes]) -> None:
        raw = self._raw
        if raw is None or self._ended:
            return
        data = [chunk for chunk in chunks if chunk]
        if data:
            raw.write(b"".join(data) if len(data) > 1 else data[0])
        if len(data) < len(chunks):  # an empty chunk: the protocol object ends the stream
            self._end()

    def _end(self) -> None:
        """Our side is done. A half-close where the transport can (the peer still reading
        our last frame is not cut off by a reset), then close for good when the peer does or
        after LINGER_SECONDS."""
        raw = self._raw
        if raw is None or self._ended:
            return
        self._ended = True
        self._held.clear()
        if raw.is_closing():
            return
        if raw.can_write_eof():
            try:
                raw.write_eof()
            except OSError:
                raw.abort()
                return
            raw.resume_reading()  # read and discard what still comes, until the peer closes
        else:
            raw.close()
        self._linger_then_abort()

    def _linger_then_abort(self) -> None:
        if self._linger is None and not self._lost:
            self._linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, self._give_up)

    def _give_up(self) -> None:
        if self._raw is not None and not self._lost:
            self._raw.abort()


_quiet = logging.getLogger("gateway.server.websocket.protocol")
_quiet.setLevel(logging.WARNING)  # websockets logs every open and close at info level
