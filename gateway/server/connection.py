"""One MQTT network connection: bytes in, packets to the broker, packets out as bytes.

An ``asyncio.Protocol`` rather than streams: ``data_received`` decodes and hands a whole read's
worth of packets to the broker synchronously, so the common path (no durable state touched)
costs no task switch at all. Whenever a step must wait (authentication, a durable commit), the
connection stops reading until it is done; that keeps every client's packets in order and gives
natural back-pressure to a publisher that outruns the disk.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import TYPE_CHECKING, cast

from gateway.broker.effects import ConnectionInfo, Identity
from gateway.mqtt.aliases import InboundAliases, OutboundAliases
from gateway.mqtt.codec import StreamDecoder, encode, encode_publish
from gateway.mqtt.errors import MQTTError, UnsupportedProtocolVersion
from gateway.mqtt.packet_size import encode_for_peer
from gateway.mqtt.packets import (
    PROTOCOL_V5,
    PROTOCOL_V311,
    ConnAck,
    Connect,
    Packet,
    Publish,
)
from gateway.mqtt.reason_codes import ConnAckV311, ReasonCode

if TYPE_CHECKING:
    from gateway.server.server import Server

log = logging.getLogger(__name__)

# Past this many unsent bytes a connection is a slow consumer: QoS 0 traffic to it is dropped
# (and counted) instead of growing memory without bound. QoS 1/2 is bounded by the in-flight
# window and the session queue limits instead.
SLOW_CONSUMER_BYTES = 4 * 1024 * 1024
LINGER_SECONDS = 2.0


class MQTTConnection(asyncio.Protocol):
    def __init__(self, server: Server, listener_name: str, allow_anonymous: bool) -> None:
        self.server = server
        self.listener_name = listener_name
        self.allow_anonymous = allow_anonymous
        self.conn_id = server.next_conn_id()
        self.transport: asyncio.Transport | None = None
        self.info: ConnectionInfo | None = None
        self.decoder = StreamDecoder(max_packet_size=server.max_packet_size)
        self.protocol_version = PROTOCOL_V311
        self.connected = False  # CONNECT handed to the broker
        self.closed = False
        self.opened_at = time.monotonic()
        self.last_rx = self.opened_at
        self.keep_alive = 0
        self._pending: collections.deque[Packet] = collections.deque()
        self._busy = False  # an awaited step (auth, commit) is under way
        self._out: list[bytes] = []
        # What the client's CONNECT asked of our packets (5.0): Maximum Packet Size (0 =
        # none) and Request Problem Information (reason strings, user properties).
        self.peer_max_packet_size = 0
        self.peer_problem_info = True
        self._inbound_aliases: InboundAliases | None = None
        self._outbound_aliases: OutboundAliases | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            peer_text = f"{peer[0]}:{peer[1]}"
        else:
            peer_text = "unix" if not peer else str(peer)
        self.info = ConnectionInfo(
            conn_id=self.conn_id,
            listener=self.listener_name,
            peer=peer_text,
            allow_anonymous=self.allow_anonymous,
        )
        if not self.server.register(self):
            log.warning("refusing %s on %s: max_connections reached", peer_text, self.listener_name)
            self.closed = True
            self.transport.abort()
            return
        self.server.broker.connection_opened(self.info, time.time())

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return  # lingering after our DISCONNECT: read and ignore
        self.last_rx = time.monotonic()
        self.server.broker.stats.bytes_received += len(data)
        try:
            packets = self.decoder.feed(data)
        except MQTTError as exc:
            self._refuse_bad_input(exc)
            return
        self._pending.extend(packets)
        if not self._busy:
            self._drain()

    def eof_received(self) -> bool | None:
        return False  # the peer is done sending: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.info is None or not self.server.unregister(self):
            return
        # The broker decides about the will; it ignores connections it has already closed.
        self.server.broker.connection_lost(self.conn_id, time.time())
        self.server.flush_effects()

    def pause_writing(self) -> None:  # transport buffer above its high-water mark
        pass

    def resume_writing(self) -> None:
        pass

    # --- inbound ----------------------------------------------------------------------------

    def _drain(self) -> None:
        """Hand buffered packets to the broker until one needs to wait."""
        broker = self.server.broker
        pending = self._pending
        while pending and not self.closed:
            packet = pending.popleft()
            if not self.connected:
                if isinstance(packet, Connect):
                    self._begin_connect(packet)
                    return
                # The decoder only yields a CONNECT first; anything else is a broken client.
                self.abort()
                return
            if packet.__class__ is Publish and self._inbound_aliases is not None:
                try:
                    packet = self._inbound_aliases.resolve(packet)
                except MQTTError as exc:
                    broker.protocol_violation(self.conn_id, exc.reason_code, time.time())
                    self.server.flush_effects(origin=self)
                    return
            broker.handle(self.conn_id, packet, time.time())
        self.server.flush_effects(origin=self)

    def _begin_connect(self, packet: Connect) -> None:
        self._busy = True
        self._pause()
        self.protocol_version = packet.protocol_version
        if packet.protocol_version == PROTOCOL_V5:
            self.peer_max_packet_size = packet.properties.maximum_packet_size or 0
            self.peer_problem_info = packet.properties.request_problem_information != 0
            self._inbound_aliases = InboundAliases(self.server.topic_alias_maximum)
            client_max = packet.properties.topic_alias_maximum or 0
            if client_max:
                self._outbound_aliases = OutboundAliases(client_max)
        asyncio.get_running_loop().create_task(self._connect(packet))

    async def _connect(self, packet: Connect) -> None:
        assert self.info is not None
        try:
            if packet.properties.authentication_method is not None:
                # MQTT 5 enhanced authentication (SASL-style AUTH exchanges): no method is
                # supported, and §4.12 says to refuse rather than ignore it.
                identity = Identity(ok=False, reason_code=ReasonCode.BAD_AUTHENTICATION_METHOD)
            else:
                identity = await self.server.authenticator.authenticate(
                    packet.username, packet.password, self.info
                )
        except Exception:  # an auth backend failure must not kill the server
            log.exception("authentication failed for client %r", packet.client_id)
            self.abort()
            return
        if self.closed:
            return
        self.connected = True
        self.server.broker.connect(self.conn_id, packet, identity, time.time())
        await self.server.apply_effects(self.server.broker.take_effects(), origin=self)
        self._resume()

    def continue_after_wait(self) -> None:
        """Called by the server once an awaited commit for this connection is done."""
        self._resume()

    def _resume(self) -> None:
        self._busy = False
        if self.closed:
            return
        if self._pending:
            self._drain()
        if not self._busy and not self.closed and self.transport is not None:
            self.transport.resume_reading()

    def _pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def mark_busy(self) -> None:
        self._busy = True
        self._pause()

    def _refuse_bad_input(self, exc: MQTTError) -> None:
        log.info(
            "closing %s (%s): %s [reason 0x%02X]",
            self.info.peer if self.info else "?",
            self.listener_name,
            exc,
            exc.reason_code,
        )
        self.server.stats.malformed_packets += 1
        if not self.connected:
            if isinstance(exc, UnsupportedProtocolVersion):
                level = self.decoder.requested_protocol_level or PROTOCOL_V311
                if level == PROTOCOL_V5:
                    ack = ConnAck(reason_code=ReasonCode.UNSUPPORTED_PROTOCOL_VERSION)
                    self._write_now(encode(ack, PROTOCOL_V5))
                else:
                    ack = ConnAck(reason_code=ConnAckV311.UNACCEPTABLE_PROTOCOL_VERSION)
                    self._write_now(encode(ack, PROTOCOL_V311))
            self.close()
            return
        self.server.broker.protocol_violation(self.conn_id, exc.reason_code, time.time())
        self.server.flush_effects(origin=self)
        # The broker sends a DISCONNECT and closes; make sure nothing more is read.
        self.closed = True

    # --- outbound ---------------------------------------------------------------------------

    def queue(self, packet: Packet) -> None:
        if self.closed:
            return
        if packet.__class__ is Publish:
            if (
                packet.qos == 0
                and self.transport is not None
                and self.transport.get_write_buffer_size() > SLOW_CONSUMER_BYTES
            ):
                self.server.stats.dropped_slow_consumer += 1
                return
            if self._outbound_aliases is not None:
                packet = self._outbound_aliases.apply(packet)
            self._out.append(encode_publish(packet, self.protocol_version))
        elif self.peer_max_packet_size or not self.peer_problem_info:
            data = encode_for_peer(
                packet, self.protocol_version, self.peer_max_packet_size, self.peer_problem_info
            )
            if data is not None:
                self._out.append(data)
        else:
            self._out.append(encode(packet, self.protocol_version))

    def flush(self) -> None:
        if not self._out:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out = []
        self._write_now(data)

    def _write_now(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.server.broker.stats.bytes_sent += len(data)
            self.transport.write(data)

    def set_keep_alive(self, seconds: int) -> None:
        self.keep_alive = seconds

    def close(self) -> None:
        """Close after the buffered output has been written.

        A lingering close: closing a socket whose receive buffer still holds data makes the
        kernel send RST, and a client that is still sending would lose our final DISCONNECT
        (with its reason code). So shut down our side, drain and ignore what still arrives,
        and close for good when the client does or after LINGER_SECONDS.
        """
        self.flush()
        self.closed = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:  # the peer is already gone
            transport.close()
            return
        transport.resume_reading()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)

    def abort(self) -> None:
        self.closed = True
        self._out = []
        if self.transport is not None:
            self.transport.abort()
