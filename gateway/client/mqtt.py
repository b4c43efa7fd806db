"""A small asyncio MQTT 5 client for the gateway's own components.

Built on the sans-I/O codec of :mod:`gateway.mqtt`, so devices talk plain MQTT to the broker
like any outside client (DESIGN §5). Two things set it apart from a general-purpose client:

* **Manual acknowledgement.** An incoming QoS 1/2 PUBLISH is acknowledged only after the
  message handler returned True. A handler that returns False or raises leaves the message
  unacknowledged, so a persistent session gets it again on the next connect: that is how a
  command that a device did not confirm stays queued.
* **No hidden reconnects.** A broken link ends the client: pending calls fail with
  :class:`ConnectionClosed` and :meth:`MQTTClient.wait_closed` returns. Whoever owns the
  client decides if and when to connect again (a device session does so when the device wakes).

Incoming messages are handled one at a time, in arrival order, by one task, so the handler
never sees two messages at once and the read loop keeps answering acks and pings meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gateway.mqtt.codec import StreamDecoder, encode
from gateway.mqtt.errors import MQTTError
from gateway.mqtt.packets import (
    NO_PROPERTIES,
    PROTOCOL_V5,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    Will,
)

log = logging.getLogger(__name__)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connector = Callable[[], Awaitable[Streams]]
# Returns True when the message was handled and may be acknowledged.
MessageHandler = Callable[[Publish], Awaitable[bool]]

_READ_SIZE = 65536


class MQTTClientError(Exception):
    """Base class of this client's errors."""


class ConnectionClosed(MQTTClientError):
    """The link to the broker is gone (or was never there)."""


class ConnectRefused(MQTTClientError):
    def __init__(self, reason_code: int) -> None:
        super().__init__(f"CONNECT refused with reason code 0x{reason_code:02X}")
        self.reason_code = reason_code


class PublishFailed(MQTTClientError):
    def __init__(self, topic: str, reason_code: int, reason: str | None = None) -> None:
        why = f": {reason}" if reason else ""
        super().__init__(f"PUBLISH to {topic!r} refused with reason code 0x{reason_code:02X}{why}")
        self.reason_code = reason_code
        self.reason = reason


class MQTTClient:
    """One MQTT 5 connection; create a new client for each connect."""

    def __init__(
        self,
        connector: Connector,
        on_message: MessageHandler | None = None,
        *,
        connect_timeout: float = 10.0,
    ) -> None:
        self._connector = connector
        self._on_message = on_message
        self._connect_timeout = connect_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._decoder = StreamDecoder(protocol_version=PROTOCOL_V5)
        self._connack: asyncio.Future[ConnAck] | None = None
        self._waiting: dict[int, asyncio.Future[Packet]] = {}  # packet id -> PUBACK/SUBACK
        self._pong: asyncio.Future[None] | None = None
        self._next_id = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._inbox: asyncio.Queue[Publish] = asyncio.Queue()
        self._send_quota: asyncio.Semaphore | None = None
        self._keep_alive = 0
        self._last_send = 0.0
        self._closed = asyncio.Event()
        self._close_reason: BaseException | None = None
        self._connected = False
        self.connack: ConnAck | None = None

    # --- state ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected and not self._closed.is_set()

    @property
    def keep_alive(self) -> int:
        """The keep-alive in force (the server's, if it overrode ours)."""
        return self._keep_alive

    async def wait_closed(self) -> BaseException | None:
        """Wait until the link is gone; None after our own clean :meth:`disconnect`."""
        await self._closed.wait()
        return self._close_reason

    # --- connect / disconnect ---------------------------------------------------------------

    async def connect(
        self,
        client_id: str,
        *,
        clean_start: bool = True,
        session_expiry: int = 0,
        will: Will | None = None,
        keep_alive: int = 60,
        receive_maximum: int | None = None,
        username: str | None = None,
        password: bytes | None = None,
        user_properties: tuple[tuple[str, str], ...] = (),
    ) -> ConnAck:
        """Open the link and send CONNECT; raises ConnectRefused or ConnectionClosed."""
        if self._writer is not None:
            raise MQTTClientError("this client was already connected once; make a new one")
        connack = await self._open_link()
        props = Properties(
            session_expiry_interval=session_expiry or None,
            receive_maximum=receive_maximum,
            user_properties=user_properties,
        )
        self._send(
            Connect(
                client_id=client_id,
                protocol_version=PROTOCOL_V5,
                clean_start=clean_start,
                keep_alive=keep_alive,
                will=will,
                username=username,
                password=password,
                properties=props,
            )
        )
        ack = await self._accepted(connack)
        self._run_session(ack, keep_alive)
        return ack

    async def _open_link(self) -> asyncio.Future[ConnAck]:
        """The streams, and the read loop that will see the CONNACK (the future returned)."""
        loop = asyncio.get_running_loop()
        try:
            self._reader, self._writer = await self._connector()
        except OSError as exc:
            self._finish(ConnectionClosed(f"cannot reach the broker: {exc}"))
            raise ConnectionClosed(f"cannot reach the broker: {exc}") from exc
        self._connack = connack = loop.create_future()
        self._tasks.append(loop.create_task(self._read_loop()))
        return connack

    async def _accepted(self, connack: asyncio.Future[ConnAck]) -> ConnAck:
        """The server's CONNACK accepting us; anything else closes the link and raises."""
        try:
            ack = await asyncio.wait_for(connack, self._connect_timeout)
        except TimeoutError:
            await self._abandon(ConnectionClosed("no CONNACK in time"))
            raise ConnectionClosed("no CONNACK in time") from None
        except BaseException:  # the link closed, or our caller gave up: leave nothing running
            await self._abandon(ConnectionClosed("connect did not complete"))
            raise
        if ack.reason_code >= 0x80:
            await self._abandon(ConnectRefused(ack.reason_code))
            raise ConnectRefused(ack.reason_code)
        return ack

    def _run_session(self, ack: ConnAck, keep_alive: int) -> None:
        """Connected: the server's limits in force, messages handled, pings sent."""
        loop = asyncio.get_running_loop()
        self.connack = ack
        self._connected = True
        server_max = ack.properties.receive_maximum or 65535
        self._send_quota = asyncio.Semaphore(server_max)
        server_keep_alive = ack.properties.server_keep_alive
        self._keep_alive = server_keep_alive if server_keep_alive is not None else keep_alive
        self._tasks.append(loop.create_task(self._dispatch_loop()))
        if self._keep_alive:
            self._tasks.append(loop.create_task(self._ping_loop()))

    async def disconnect(self, reason_code: int = 0) -> None:
        """Send DISCONNECT and close. Reason 0 discards the will; 0x04 asks for it."""
        if self._closed.is_set():
            return
        with contextlib.suppress(ConnectionClosed):
            self._send(Disconnect(reason_code))
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(OSError, ConnectionError):
                await writer.drain()
        self._finish(None)
        await self._stop_tasks()

    async def close(self) -> None:
        """Drop the link without DISCONNECT: the broker sees a lost connection."""
        self._finish(ConnectionClosed("closed by the client"))
        await self._stop_tasks()

    # --- publish / subscribe ----------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
    ) -> None:
        """Publish; for QoS 1 wait for the PUBACK (raises PublishFailed on a refusal)."""
        if qos not in (0, 1):
            raise ValueError("this client publishes at QoS 0 or 1")
        if qos == 0:
            self._send(Publish(topic, payload, 0, retain, properties=properties))
            return
        quota = self._send_quota
        if quota is None:
            raise ConnectionClosed("not connected")
        async with quota:
            pid, waiter = self._new_waiter()
            self._send(Publish(topic, payload, 1, retain, packet_id=pid, properties=properties))
            ack = await self._await(pid, waiter)
        assert isinstance(ack, PubAck)
        if ack.reason_code >= 0x80:
            raise PublishFailed(topic, ack.reason_code, ack.properties.reason_string)

    async def subscribe(self, topic_filter: str, qos: int = 1) -> tuple[int, ...]:
        """Subscribe to one filter; returns the SUBACK reason codes (granted QoS or >= 0x80)."""
        pid, waiter = self._new_waiter()
        self._send(Subscribe(pid, (Subscription(topic_filter, qos),)))
        ack = await self._await(pid, waiter)
        assert isinstance(ack, SubAck)
        return ack.reason_codes

    # --- internals --------------------------------------------------------------------------

    def _new_waiter(self) -> tuple[int, asyncio.Future[Packet]]:
        if self._closed.is_set():
            raise ConnectionClosed("not connected") from self._close_reason
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._waiting:
                break
        else:
            raise MQTTClientError("no free packet identifier")
        waiter: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = waiter
        return self._next_id, waiter

    async def _await(self, pid: int, waiter: asyncio.Future[Packet]) -> Packet:
        try:
            return await waiter
        finally:
            self._waiting.pop(pid, None)

    def _send(self, packet: Packet) -> None:
        writer = self._writer
        if writer is None or self._closed.is_set() or writer.is_closing():
            raise ConnectionClosed("not connected") from self._close_reason
        writer.write(encode(packet, PROTOCOL_V5))
        self._last_send = asyncio.get_running_loop().time()

    def _finish(self, reason: BaseException | None) -> None:
        """Mark the link gone: fail everything waiting on it, close the socket."""
        if self._closed.is_set():
            return
        self._close_reason = reason
        self._connected = False
        self._closed.set()
        error = reason if reason is not None else ConnectionClosed("disconnected")
        for fut in [self._connack, self._pong, *self._waiting.values()]:
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionClosed(str(error)))
                fut.exception()  # retrieved: nobody may be waiting on it any more
        if self._writer is not None:
            self._writer.close()
        # Nothing more can arrive or be acknowledged: stop the helpers (a handler still
        # running is cancelled, and its message stays unacknowledged).
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if reason is not None:
            log.debug("MQTT link closed: %s", reason)

    async def _abandon(self, reason: BaseException) -> None:
        self._finish(reason)
        await self._stop_tasks()

    async def _stop_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._writer is not None:
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()

    async def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        try:
            while True:
                data = await reader.read(_READ_SIZE)
                if not data:
                    self._finish(ConnectionClosed("the broker closed the connection"))
                    return
                for packet in self._decoder.feed(data):
                    self._on_packet(packet)
                    if self._closed.is_set():
                        return
        except MQTTError as exc:
            self._finish(ConnectionClosed(f"bad packet from the broker: {exc}"))
        except ConnectionClosed:
            pass  # an answer could not be sent: the link is already marked gone
        except (OSError, ConnectionError) as exc:
            self._finish(ConnectionClosed(f"link error: {exc}"))

    def _on_packet(self, packet: Packet) -> None:
        if isinstance(packet, Publish):
            self._inbox.put_nowait(packet)
        elif isinstance(packet, PubAck | SubAck):
            waiter = self._waiting.get(packet.packet_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(packet)
        elif isinstance(packet, PubRel):
            # We send PUBREC only once the message was handled, so there is nothing to
            # release: complete the exchange (also for a PUBREL resent after a reconnect).
            self._send(PubComp(packet.packet_id))
        elif isinstance(packet, PingResp):
            if self._pong is not None and not self._pong.done():
                self._pong.set_result(None)
        elif isinstance(packet, ConnAck):
            if self._connack is not None and not self._connack.done():
                self._connack.set_result(packet)
        elif isinstance(packet, Disconnect):
            self._finish(
                ConnectionClosed(f"DISCONNECT from the broker, reason 0x{packet.reason_code:02X}")
            )
        else:
            self._finish(ConnectionClosed(f"unexpected {packet.type.name} from the broker"))

    async def _dispatch_loop(self) -> None:
        while True:
            message = await self._inbox.get()
            if self._closed.is_set():
                return
            handled = False
            if self._on_message is not None:
                try:
                    handled = await self._on_message(message)
                except Exception:
                    log.exception("message handler failed for %r", message.topic)
                    handled = False
            else:
                handled = True
            if not handled or message.qos == 0 or message.packet_id is None:
                continue
            try:
                if message.qos == 1:
                    self._send(PubAck(message.packet_id))
                else:
                    self._send(PubRec(message.packet_id))
            except ConnectionClosed:
                return  # not acknowledged: the broker delivers it again next time

    async def _ping_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._keep_alive
        while not self._closed.is_set():
            idle = loop.time() - self._last_send
            if idle < interval:
                await asyncio.sleep(interval - idle)
                continue
            self._pong = loop.create_future()
            try:
                self._send(PingReq())
                await asyncio.wait_for(self._pong, interval)
            except TimeoutError:
                self._finish(ConnectionClosed("no PINGRESP from the broker"))
                return
            except ConnectionClosed:
                return
