"""One MQTT network connection: bytes in, packets to the broker, packets out as bytes.

An ``asyncio.Protocol`` rather than streams: ``data_received`` decodes and hands a whole read's
worth of packets to the broker synchronously, so the common path (no durable state touched)
costs no task switch at all. Whenever a step must wait (authentication, a durable commit), the
connection stops reading until it is done; that keeps every client's packets in order and gives
natural back-pressure to a publisher that outruns the disk.

It also stops reading while its own send buffer is above WRITE_HIGH_WATER: whatever a client
provokes (PINGRESP, SUBACK, PUBACK, retained messages) then waits until it reads what it was
sent, so a client that never reads costs a bounded buffer, not the gateway's memory. And it
hands a long run of packets to the broker in batches, letting the other connections go in
between. The reasons to stop reading are independent; reading resumes only when none holds.

TLS is started here, after the server admitted the connection (gateway/server/server.py): the
TLS layer allocates a large buffer per connection, which must not exist for connections that
are refused at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import time
from typing import Protocol, cast

from gateway.broker.core import Broker
from gateway.broker.effects import ConnectionInfo, Effects, Identity
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
    PubAck,
    Publish,
)
from gateway.mqtt.reason_codes import ConnAckV311, ReasonCode
from gateway.server.sockets import end_linger, peer_address, unacknowledged

log = logging.getLogger(__name__)

# Past this many unsent bytes a connection is a slow consumer: QoS 0 traffic to it is dropped
# (and counted) instead of growing memory without bound. QoS 1/2 is bounded by the in-flight
# window and the session queue limits instead.
SLOW_CONSUMER_BYTES = 4 * 1024 * 1024
LINGER_SECONDS = 2.0
# Above this many unsent bytes the connection stops reading its client (asyncio's default
# high-water mark, named here because the memory bound per client depends on it); reading
# resumes below a quarter of it.
WRITE_HIGH_WATER = 64 * 1024
# A TLS connection being closed waits this long for its peer's close_notify (asyncio: 30 s).
TLS_SHUTDOWN_SECONDS = 5.0
# Packets handed to the broker before their answers are performed (see _drain). Larger than a
# read of any well-behaved client, so that group commits of a publisher are not split.
DRAIN_BATCH = 1024
# A subscriber draining its queue sends a read's worth of PUBACKs; the messages they make room
# for are written every this many, not after the whole read, so that it starts on them
# while the rest are handled (both sides busy, rather than taking turns).
ACK_PIPELINE = 32
# While its password is checked a client is still read from (a paused socket would not notice
# that the client left, and its check must then be dropped), up to this many bytes.
AUTH_INPUT_LIMIT = 64 * 1024


class Authenticates(Protocol):
    async def authenticate(
        self,
        username: str | None,
        password: bytes | None,
        info: ConnectionInfo,
        deadline: float | None = None,
    ) -> Identity: ...


class ConnectionCounters(Protocol):
    """The server's figures a connection adds to itself (ServerStats has them)."""

    write_pauses: int
    malformed_packets: int


class ConnectionHost(Protocol):
    """What a connection needs from the server that accepted it (gateway/server/server.py
    implements it): the broker, the limits, admission, and where to report what happened.
    Declared here so that imports go one way, server -> connection."""

    @property
    def broker(self) -> Broker: ...

    @property
    def authenticator(self) -> Authenticates: ...

    @property
    def stats(self) -> ConnectionCounters: ...

    @property
    def max_packet_size(self) -> int: ...

    @property
    def topic_alias_maximum(self) -> int: ...

    @property
    def connect_timeout(self) -> float: ...

    def next_conn_id(self) -> int: ...

    def register(self, conn: MQTTConnection) -> bool: ...

    def register_trusted(self, conn: MQTTConnection) -> None: ...

    def unregister(self, conn: MQTTConnection) -> bool: ...

    def connect_received(self, conn: MQTTConnection) -> None: ...

    def flush_effects(self, origin: MQTTConnection | None = None) -> None: ...

    def flush_if_relaxed(self, origin: MQTTConnection) -> bool: ...

    async def apply_effects(
        self, effects: Effects, origin: MQTTConnection | None = None
    ) -> None: ...

    def dropped_for_slow_consumer(self, conn: MQTTConnection) -> None: ...

    def connect_timed_out(self, conn: MQTTConnection) -> None: ...

    def write_stalled(self, conn: MQTTConnection, stalled: bool) -> None: ...

    def tls_failed(self, conn: MQTTConnection, error: BaseException | None) -> None: ...

    def websocket_refused(self, conn: MQTTConnection, status: int, reason: str) -> None: ...

    def websocket_bad_frame(self, conn: MQTTConnection, what: str) -> None: ...


class MQTTConnection(asyncio.Protocol):
    # Slots: thousands of idle connections are held at once, and an instance dict costs
    # about a kilobyte each (bench/bench_broker.py idle-conns).
    __slots__ = (
        "_auth_input",
        "_busy",
        "_connect_task",
        "_drained",
        "_early",
        "_handshaking",
        "_inbound_aliases",
        "_out",
        "_out_bytes",
        "_outbound_aliases",
        "_pending",
        "_tls",
        "_unacked",
        "_write_paused",
        "_written",
        "_yielding",
        "allow_anonymous",
        "authenticating",
        "closed",
        "conn_id",
        "connected",
        "decoder",
        "info",
        "keep_alive",
        "last_rx",
        "listener_name",
        "opened_at",
        "peer_max_packet_size",
        "peer_problem_info",
        "pending",
        "protocol_version",
        "server",
        "source",
        "stalled_since",
        "timer_slot",
        "transport",
        "waiting",
    )

    def __init__(
        self,
        server: ConnectionHost,
        listener_name: str,
        allow_anonymous: bool,
        tls: ssl.SSLContext | None = None,
    ) -> None:
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
        self.source: str | None = None  # the peer's address (None: Unix socket, in-process)
        self.pending = False  # counted by the server as accepted but not yet CONNECTed
        self.waiting = False  # ... or waiting, unread, for a turn of its address to be so
        self.authenticating = False  # CONNECT received, its credentials being checked
        self.stalled_since: float | None = None  # send buffer full and not draining since
        self.timer_slot: int | None = None  # the server's timer wheel (timer_wheel.py)
        self._tls = tls
        self._handshaking = False
        # Containers are made when there is something to hold and dropped when empty: an
        # idle connection holds none (an empty deque alone costs 600 bytes).
        self._early: list[bytes] | None = None  # decrypted before start_tls() returned
        # The TLS handshake or the CONNECT's check, forgotten once done: a finished task
        # still holds its coroutine and context (about a kilobyte).
        self._connect_task: asyncio.Task[None] | None = None
        self._pending: collections.deque[Packet] | None = None  # decoded, not yet handled
        self._busy = False  # an awaited step (auth, commit) is under way
        self._write_paused = False  # the transport's buffer is above its high-water mark
        self._yielding = False  # a long run of packets lets other connections go first
        self._written = 0  # bytes handed to the transport
        self._auth_input = 0  # bytes read while authenticating
        self._drained = 0  # bytes that had left the transport at the last progress check
        self._unacked = 0  # bytes in the kernel's queue the peer had not acknowledged then
        self._out: list[bytes] | None = None  # encoded, not yet handed to the transport
        self._out_bytes = 0
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
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            peer_text = f"{peer[0]}:{peer[1]}"
            self.source = peer_address(peer[0])
        else:
            peer_text = "unix" if not peer else str(peer)
        self.info = ConnectionInfo(
            conn_id=self.conn_id,
            listener=self.listener_name,
            peer=peer_text,
            allow_anonymous=self.allow_anonymous,
        )
        if not self.server.register(self):  # it logged and counted why
            self.closed = True
            self.transport.abort()
            return
        self.server.broker.connection_opened(self.info, time.time())
        if self.waiting:
            self.transport.pause_reading()
        elif self._tls is not None:
            self._begin_tls()

    def take_turn(self) -> None:
        """The server let this waiting connection start (gateway/server/pending.py)."""
        if self.closed or self.transport is None:
            return
        if self._tls is not None:
            self._begin_tls()  # start_tls() resumes reading the socket itself
        else:
            self.transport.resume_reading()

    def _begin_tls(self) -> None:
        assert self.transport is not None and self._tls is not None
        self._handshaking = True
        loop = asyncio.get_running_loop()
        self._connect_task = loop.create_task(self._start_tls(self.transport, self._tls))

    async def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        """The TLS handshake, within what is left of the connect timeout."""
        left = self.opened_at + self.server.connect_timeout - time.monotonic()
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
        self._connect_task = None
        if tls is None or self.closed:
            # The TLS layer does not report a connection lost during its handshake.
            if self.closed:
                pass  # aborted by the server (connect timeout, shutdown): already counted
            elif time.monotonic() - self.opened_at >= self.server.connect_timeout:
                self.server.connect_timed_out(self)  # asyncio's handshake timeout, set above
            else:
                self.server.tls_failed(self, error)
            if tls is not None:
                cast(asyncio.Transport, tls).abort()
            raw.abort()
            self.connection_lost(None)
            return
        self.transport = cast(asyncio.Transport, tls)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        early, self._early = self._early, None
        for data in early or ():
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return  # lingering after our DISCONNECT: read and ignore
        if self._handshaking:  # the TLS layer delivers before start_tls() has returned
            if self._early is None:
                self._early = []
            self._early.append(data)
            return
        self.last_rx = time.monotonic()
        self.server.broker.stats.bytes_received += len(data)
        if self.authenticating:
            self._auth_input += len(data)
            if self._auth_input > AUTH_INPUT_LIMIT:
                self._pause()
        try:
            packets = self.decoder.feed(data)
        except MQTTError as exc:
            self._refuse_bad_input(exc)
            return
        if packets:
            if self._pending is None:
                self._pending = collections.deque(packets)
            else:
                self._pending.extend(packets)
        if not self._busy and not self._write_paused and not self._yielding:
            self._drain()

    def eof_received(self) -> bool | None:
        return False  # the peer is done sending: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.authenticating and self._connect_task is not None:
            self._connect_task.cancel()  # a check still waiting for its turn never runs
        if self.info is None or not self.server.unregister(self):
            return
        # The broker decides about the will; it ignores connections it has already closed.
        self.server.broker.connection_lost(self.conn_id, time.time())
        self.server.flush_effects()

    def pause_writing(self) -> None:  # transport buffer above its high-water mark
        self._write_paused = True
        self.stalled_since = time.monotonic()
        self._unacked = unacknowledged(self.transport)
        self.server.stats.write_pauses += 1
        self.server.write_stalled(self, True)
        self._pause()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.stalled_since = None
        # Whatever the client sent while we did not read is still in the socket; it must not
        # count as silence towards its keep-alive.
        self.last_rx = time.monotonic()
        self.server.write_stalled(self, False)
        self._continue()

    def check_progress(self, now: float) -> None:
        """While paused for writing: restart the stall clock if the client took anything
        since the last check (a slow reader is not a stalled one). The kernel's queue counts
        too: on loopback it holds megabytes, and the socket reports room only once a good
        part of it is free, long after a slow reader started taking from it."""
        if self.transport is None:
            return
        drained = self._written - self.transport.get_write_buffer_size()
        unacked = unacknowledged(self.transport)
        if (drained > self._drained or unacked < self._unacked) and self.stalled_since is not None:
            self.stalled_since = now
        self._drained, self._unacked = drained, unacked

    # --- inbound ----------------------------------------------------------------------------

    def _drain(self) -> None:
        """Hand buffered packets to the broker until one needs to wait.

        Every DRAIN_BATCH packets, what the broker answered is performed and this client's
        share written at once, and the other connections get their turn before the next
        batch: one read can hold 100,000 PINGREQs, whose answers as objects took ~20 MB, and
        whose handling held up everyone else for a quarter of a second. Written in batches,
        a full send buffer stops the loop (pause_writing) after one batch.
        """
        pending = self._pending
        if pending is None:
            self.server.flush_effects(origin=self)
            return
        try:
            self._drain_from(pending)
        finally:
            if not pending and self._pending is pending:
                self._pending = None

    def _drain_from(self, pending: collections.deque[Packet]) -> None:
        broker = self.server.broker
        handled = acks = 0
        while pending and not self.closed and not self._write_paused:
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
            handled += 1
            if packet.__class__ is PubAck:
                acks += 1
                if acks % ACK_PIPELINE == 0 and pending and self.server.flush_if_relaxed(self):
                    self.flush()
            if handled == DRAIN_BATCH and pending:
                self.server.flush_effects(origin=self)
                if self._busy:  # a commit to wait for: continue_after_wait() goes on
                    return
                self.flush()
                if pending and not self._write_paused and not self.closed:
                    self._yielding = True
                    self._pause()
                    asyncio.get_running_loop().call_soon(self._end_yield)
                return
        self.server.flush_effects(origin=self)
        # What this client's own packets produced for it (acks, and the next messages of its
        # queue after its PUBACKs) is written now rather than at the turn's end with the
        # others: a subscriber's in-flight window is refilled once per round trip, and with
        # ten busy publishers the rest of the turn doubled that round trip.
        self.flush()

    def _end_yield(self) -> None:
        self._yielding = False
        self._continue()

    def _begin_connect(self, packet: Connect) -> None:
        self.server.connect_received(self)
        self.authenticating = True
        self._busy = True  # reading goes on (AUTH_INPUT_LIMIT); packets wait in _pending
        self.protocol_version = packet.protocol_version
        if packet.protocol_version == PROTOCOL_V5:
            self.peer_max_packet_size = packet.properties.maximum_packet_size or 0
            self.peer_problem_info = packet.properties.request_problem_information != 0
            self._inbound_aliases = InboundAliases(self.server.topic_alias_maximum)
            client_max = packet.properties.topic_alias_maximum or 0
            if client_max:
                self._outbound_aliases = OutboundAliases(client_max)
        self._connect_task = asyncio.get_running_loop().create_task(self._connect(packet))

    async def _connect(self, packet: Connect) -> None:
        assert self.info is not None
        # A check still waiting for its turn at the connect timeout is answered "busy"
        # rather than cut off without a word; one already hashing is let finish.
        deadline = self.opened_at + self.server.connect_timeout
        try:
            if packet.properties.authentication_method is not None:
                # MQTT 5 enhanced authentication (SASL-style AUTH exchanges): no method is
                # supported, and §4.12 says to refuse rather than ignore it.
                identity = Identity(ok=False, reason_code=ReasonCode.BAD_AUTHENTICATION_METHOD)
            else:
                identity = await self.server.authenticator.authenticate(
                    packet.username, packet.password, self.info, deadline
                )
        except asyncio.CancelledError:
            return  # the client went away (connection_lost) while its check waited
        except Exception:  # an auth backend failure must not kill the server
            log.exception("authentication failed for client %r", packet.client_id)
            self.abort()
            return
        finally:
            self.authenticating = False
            self._connect_task = None
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
        self._continue()

    def _continue(self) -> None:
        """Go on reading, unless a wait (``_busy``), a full send buffer or a turn given to
        the other connections still holds."""
        if self.closed or self._busy or self._write_paused or self._yielding:
            return
        if self._pending:
            self._drain()
        if (
            not self._busy
            and not self._write_paused
            and not self._yielding
            and not self.closed
            and self.transport is not None
        ):
            self.transport.resume_reading()

    def _pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def mark_busy(self) -> None:
        self._busy = True
        self._pause()

    def input_error(self, exc: MQTTError) -> None:
        """Bad input found by the layer below (a WebSocket message over max_packet_size):
        handled like the decoder's own errors."""
        self._refuse_bad_input(exc)

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
            # What is queued but not yet handed to the transport counts too: one SUBSCRIBE
            # can fan out every retained message at once.
            if (
                packet.qos == 0
                and self.transport is not None
                and self._out_bytes + self.transport.get_write_buffer_size() > SLOW_CONSUMER_BYTES
            ):
                self.server.dropped_for_slow_consumer(self)
                return
            if self._outbound_aliases is not None:
                packet = self._outbound_aliases.apply(packet)
            data = encode_publish(packet, self.protocol_version)
        elif self.peer_max_packet_size or not self.peer_problem_info:
            fitted = encode_for_peer(
                packet, self.protocol_version, self.peer_max_packet_size, self.peer_problem_info
            )
            if fitted is None:
                return
            data = fitted
        else:
            data = encode(packet, self.protocol_version)
        if self._out is None:
            self._out = [data]
        else:
            self._out.append(data)
        self._out_bytes += len(data)

    def flush(self) -> None:
        if self._out is None:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out = None
        self._out_bytes = 0
        self._write_now(data)

    def _write_now(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.server.broker.stats.bytes_sent += len(data)
            self._written += len(data)
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
        if self._handshaking:  # nothing was sent over TLS yet: nothing to flush
            self.abort()
            return
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
            transport.abort()
            return
        transport.resume_reading()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, end_linger, transport)

    def abort(self) -> None:
        self.closed = True
        self._out = None
        self._out_bytes = 0
        if self.transport is not None:
            self.transport.abort()
