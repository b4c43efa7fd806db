"""One MQTT connection driven packet by packet, for a client that owns its packet ids.

:class:`gateway.client.mqtt.MQTTClient` suits components that publish one message at a time.
The upstream bridge needs more: MQTT 3.1.1 as well as 5, packet ids it chooses (it reuses the
local broker's, see gateway/upstream), acknowledgements it sends when it decides, and many
messages in flight. A :class:`Link` does only the connection's own work:

* CONNECT/CONNACK over a connector (TCP, TLS or in-process streams);
* every packet received is handed to ``on_packet`` synchronously, in order;
* :meth:`send` queues an encoded packet; everything queued in one turn of the event loop goes
  out in one write (a bridge forwarding a read of 200 messages makes one write, not 200);
* keep-alive that notices a dead *or frozen* peer: a stopped broker leaves the TCP connection
  open and our writes still land in the socket buffer, so only silence tells. After
  ``keep_alive`` seconds without a packet from the peer a PINGREQ goes out; after twice that
  the link is dropped.

A link is used once: after it closed (:meth:`wait_closed` returns the reason), make a new one.

The connector hands over streams (as for MQTTClient), but the link then takes the transport
over with a protocol of its own: received bytes are decoded and dispatched in the transport's
callback, without a reader task woken for every read (a bridge at full speed reads thousands
of times a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

from gateway.client.mqtt import ConnectionClosed, Connector, ConnectRefused, MQTTClientError
from gateway.mqtt.codec import StreamDecoder, encode, encode_publish
from gateway.mqtt.errors import MQTTError
from gateway.mqtt.packets import (
    PROTOCOL_V5,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Publish,
)

log = logging.getLogger(__name__)

PacketHandler = Callable[[Packet], None]

_READ_SIZE = 256 * 1024
_PINGREQ = encode(PingReq(), PROTOCOL_V5)  # the same two bytes in 3.1.1


class LinkStalled(ConnectionClosed):
    """The peer stopped reading: our unsent data grew past the limit."""


class _LinkProtocol(asyncio.Protocol):
    def __init__(self, link: Link) -> None:
        self.link = link
        self.lost = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.link._received(data)

    def eof_received(self) -> bool:
        self.link._finish(ConnectionClosed(f"{self.link.name}: the broker closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        why = f": {describe_os_error(exc)}" if exc is not None else ""
        self.link._finish(ConnectionClosed(f"{self.link.name}: connection lost{why}"))
        if not self.lost.done():
            self.lost.set_result(None)


class Link:
    """One MQTT connection (3.1.1 or 5) that a client drives packet by packet."""

    def __init__(
        self,
        connector: Connector,
        on_packet: PacketHandler,
        *,
        protocol_version: int = PROTOCOL_V5,
        connect_timeout: float = 10.0,
        max_packet_size: int = 256 * 1024 * 1024,
        max_write_buffer: int = 64 * 1024 * 1024,
        name: str = "link",
    ) -> None:
        self.on_packet = on_packet  # may be replaced, e.g. once a handshake is over
        # Called once all packets of one read were handled: a relay flushes what they made it
        # send right away, instead of at the end of the loop turn.
        self.after_read: Callable[[], None] | None = None
        self.protocol_version = protocol_version
        self.name = name
        self._connector = connector
        self._connect_timeout = connect_timeout
        self._max_write_buffer = max_write_buffer
        self._decoder = StreamDecoder(max_packet_size, protocol_version=protocol_version)
        self._transport: asyncio.WriteTransport | None = None
        # Kept, unused, for the link's life: a StreamWriter that is garbage-collected closes
        # its transport.
        self._writer: asyncio.StreamWriter | None = None
        self._protocol: _LinkProtocol | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._connack: asyncio.Future[ConnAck] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = asyncio.Event()
        self._close_reason: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.keep_alive = 0
        self.last_received = 0.0
        self.last_sent = 0.0
        self._ping_outstanding = False
        self.connack: ConnAck | None = None

    # --- state ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def close_reason(self) -> BaseException | None:
        return self._close_reason

    async def wait_closed(self) -> BaseException | None:
        """Wait until the link is gone; the reason (None after our own :meth:`disconnect`)."""
        await self._closed.wait()
        return self._close_reason

    # --- connect / close --------------------------------------------------------------------

    async def open(self, connect: Connect) -> ConnAck:
        """Connect and send ``connect``; the CONNACK, or ConnectRefused / ConnectionClosed.
        Packets that follow the CONNACK go to ``on_packet``."""
        if self._loop is not None:
            raise MQTTClientError("this link was opened once already; make a new one")
        loop = self._loop = asyncio.get_running_loop()
        try:
            _, writer = await asyncio.wait_for(self._connector(), self._connect_timeout)
        except TimeoutError:
            self._finish(ConnectionClosed("connection timed out"))
            raise ConnectionClosed("connection timed out") from None
        except (OSError, ConnectionError) as exc:
            unreachable = ConnectionClosed(describe_os_error(exc))
            self._finish(unreachable)
            raise unreachable from exc
        # Nothing can have arrived yet: a broker says nothing before our CONNECT.
        self._writer = writer
        transport = writer.transport
        protocol = self._protocol = _LinkProtocol(self)
        transport.set_protocol(protocol)
        self._transport = transport
        self._connack = loop.create_future()
        self.last_received = loop.time()
        self.send(connect)
        try:
            ack = await asyncio.wait_for(asyncio.shield(self._connack), self._connect_timeout)
        except TimeoutError:
            await self.abort(ConnectionClosed("no CONNACK in time"))
            raise ConnectionClosed("no CONNACK in time") from None
        except ConnectionClosed as exc:
            # Why it closed says more than "closed before CONNACK".
            why = self._close_reason or exc
            await self.abort(why)
            raise why from None
        except BaseException:  # our caller gave up: leave nothing running
            await self.abort(ConnectionClosed("connect did not complete"))
            raise
        if ack.reason_code:
            refused = ConnectRefused(ack.reason_code)
            await self.abort(refused)
            raise refused
        self.connack = ack
        server_keep_alive = ack.properties.server_keep_alive
        self.keep_alive = connect.keep_alive if server_keep_alive is None else server_keep_alive
        if self.keep_alive:
            self._tasks.append(loop.create_task(self._keep_alive_loop()))
        return ack

    async def disconnect(self, packet: Disconnect | None = None, timeout: float = 2.0) -> None:
        """Send DISCONNECT (after everything queued), wait for it to leave, close."""
        if self.closed:
            return
        with contextlib.suppress(ConnectionClosed):
            self.send(packet if packet is not None else Disconnect())
            self.flush()
        self._finish(None)  # closing the transport sends what it still holds first
        await self._wait_lost(timeout)

    async def abort(self, reason: BaseException | None) -> None:
        """Drop the link at once (no DISCONNECT: the peer sees a lost connection)."""
        self._finish(reason)
        transport = self._transport
        if transport is not None:
            transport.abort()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._wait_lost(2.0)

    async def _wait_lost(self, timeout: float) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(protocol.lost), timeout)
        except TimeoutError:
            if self._transport is not None:
                self._transport.abort()

    # --- sending ----------------------------------------------------------------------------

    def send(self, packet: Packet) -> None:
        """Queue ``packet``; it is written with everything else queued in this loop turn."""
        if isinstance(packet, Publish):
            self.send_bytes(encode_publish(packet, self.protocol_version))
        else:
            self.send_bytes(encode(packet, self.protocol_version))

    def send_bytes(self, data: bytes) -> None:
        if self._closed.is_set():
            raise ConnectionClosed(f"{self.name} is closed") from self._close_reason
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is queued now (normally left to the end of the loop turn)."""
        self._flush_scheduled = False
        out = self._out
        if not out or self._closed.is_set():
            out.clear()
            return
        transport = self._transport
        assert transport is not None and self._loop is not None
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        try:
            transport.write(data)
        except (OSError, ConnectionError, RuntimeError) as exc:
            self._finish(ConnectionClosed(f"{self.name}: write failed: {exc}"))
            return
        self.last_sent = self._loop.time()
        if transport.get_write_buffer_size() > self._max_write_buffer:
            self._finish(LinkStalled(f"{self.name}: the peer does not read what we send"))

    @property
    def write_buffer_size(self) -> int:
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

    # --- internals --------------------------------------------------------------------------

    def _finish(self, reason: BaseException | None) -> None:
        if self._closed.is_set():
            return
        self._close_reason = reason
        self._closed.set()
        self._out.clear()
        connack = self._connack
        if connack is not None and not connack.done():
            connack.set_exception(
                reason if isinstance(reason, ConnectionClosed) else ConnectionClosed("closed")
            )
            connack.exception()  # retrieved: the waiter may be gone already
        if self._transport is not None:
            self._transport.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if reason is not None:
            log.debug("%s closed: %s", self.name, reason)

    def _received(self, data: bytes) -> None:
        if self._closed.is_set():
            return
        assert self._loop is not None
        self.last_received = self._loop.time()
        try:
            for packet in self._decoder.feed(data):
                self._dispatch(packet)
                if self._closed.is_set():
                    return
            if self.after_read is not None:
                self.after_read()
        except MQTTError as exc:
            self._finish(ConnectionClosed(f"{self.name}: bad packet from the broker: {exc}"))
        except ConnectionClosed as exc:
            self._finish(exc)  # a handler could not send: the other side is gone
        except Exception as exc:  # a bug in a handler: end this link, not the process
            log.exception("%s: packet handler failed", self.name)
            self._finish(ConnectionClosed(f"{self.name}: internal error: {exc!r}"))

    def _dispatch(self, packet: Packet) -> None:
        connack = self._connack
        if isinstance(packet, ConnAck):
            if connack is not None and not connack.done():
                connack.set_result(packet)
            else:
                self._finish(ConnectionClosed(f"{self.name}: a second CONNACK"))
            return
        if connack is None or not connack.done():
            self._finish(ConnectionClosed(f"{self.name}: {packet.type.name} before CONNACK"))
            return
        if isinstance(packet, PingResp):
            self._ping_outstanding = False
            return
        if isinstance(packet, Disconnect):
            why = f"DISCONNECT from the broker, reason 0x{packet.reason_code:02X}"
            if packet.properties.reason_string:
                why += f" ({packet.properties.reason_string})"
            self._finish(ConnectionClosed(f"{self.name}: {why}"))
            return
        self.on_packet(packet)

    async def _keep_alive_loop(self) -> None:
        loop = self._loop
        assert loop is not None
        interval = float(self.keep_alive)
        while not self._closed.is_set():
            now = loop.time()
            quiet = now - self.last_received
            if quiet >= 2 * interval:
                self._finish(
                    ConnectionClosed(f"{self.name}: nothing from the broker for {quiet:.0f} s")
                )
                return
            if not self._ping_outstanding and (
                quiet >= interval or now - self.last_sent >= interval
            ):
                self._ping_outstanding = True
                try:
                    self.send_bytes(_PINGREQ)
                except ConnectionClosed:
                    return
            # Wake for whichever comes first: the next ping, or the dead-peer deadline.
            next_check = min(
                self.last_received + 2 * interval,
                self.last_received + interval,
                self.last_sent + interval,
            )
            if self._ping_outstanding:
                next_check = self.last_received + 2 * interval
            await asyncio.sleep(max(0.05, next_check - loop.time()))


def describe_os_error(exc: BaseException) -> str:
    """One lower-case line for why a connection failed or closed (the state topic, the log)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {(exc.reason or str(exc)).lower().replace('_', ' ')}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
