"""One upstream connection: a link to the upstream broker and a persistent session in ours,
kept connected, reconnected with back-off, and reported on.

The two links live and die together. Each attempt opens the upstream link first (nothing
local is touched while the upstream is unreachable), then the bridge's session in the local
broker (clean start 0, never expires: its queue is what waits to go up), and forwards between
them (pipe.py) until either link drops. Then both are closed and the next attempt starts
from scratch: whatever was in flight is resent by the two persistent sessions themselves,
with the same packet ids, exactly as after a crash of the gateway. There is no second path
for "reconnect" that a crash would not exercise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterable

from gateway.client.link import Link, describe_os_error
from gateway.client.mqtt import ConnectionClosed, ConnectRefused, MQTTClientError
from gateway.mqtt.packets import (
    PROTOCOL_V5,
    ConnAck,
    Connect,
    Packet,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
)
from gateway.mqtt.reason_codes import ConnAckV311, ReasonCode
from gateway.upstream.backoff import Backoff
from gateway.upstream.local import LocalBroker
from gateway.upstream.pipe import Pipe, PipeCounters
from gateway.upstream.ratelog import RateLimitedLog
from gateway.upstream.remote import (
    OFFLINE,
    ONLINE,
    client_id_of,
    connect_packet,
    connector_for,
    notification_topic_of,
)
from gateway.upstream.rules import TopicMap
from gateway.upstream.settings import UpstreamConfig
from gateway.upstream.status import State, UpstreamStatus

log = logging.getLogger("gateway.upstream")

SESSION_NEVER_EXPIRES = 0xFFFFFFFF
CONTROL_TIMEOUT = 10.0  # SUBACK, PUBACK of the notification
# QoS 0 messages are dropped while this much waits unsent to the side they go to.
CONGESTED_BYTES = 1024 * 1024
# A link that stayed up this long was not flapping: the next outage starts the back-off anew.
STABLE_AFTER = 30.0


class UpstreamBridge:
    """Keeps one ``upstream:`` entry connected and forwarding; :meth:`status` reports it."""

    def __init__(
        self,
        config: UpstreamConfig,
        local: LocalBroker,
        topic_prefix: str = "gw",
        *,
        on_change: Callable[[UpstreamBridge], None] | None = None,
        window: int = 100,
        drain_timeout: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.name = config.name
        self.client_id = client_id_of(config)
        self.notification_topic = notification_topic_of(config)
        self.topics = TopicMap(config.topics, topic_prefix)
        self.counters = PipeCounters()
        self._local = local
        self._on_change = on_change
        self.window = max(1, min(window, local.max_inflight_out))
        self._drain_timeout = drain_timeout
        self._clock = wall_clock
        self._backoff = Backoff(config.reconnect_min, config.reconnect_max)
        self._warn = RateLimitedLog(log)
        self.state: State = "connecting"
        self.since = wall_clock()
        self.last_error: str | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._remote: Link | None = None
        self._local_link: Link | None = None
        self._pipe: Pipe | None = None
        self._remote_waiters: dict[int, asyncio.Future[Packet]] = {}
        # The local session is new (first start, a store that was lost, an admin deleted
        # it) until a link pair has been set up on it.
        self._local_new = False
        self._orphans_released: asyncio.Future[None] | None = None
        self._local_waiters: dict[int, asyncio.Future[Packet]] = {}

    # --- life cycle -------------------------------------------------------------------------

    async def prime(self) -> None:
        """Create the local session (or bring its subscriptions and queue limits up to date)
        before anything else runs: what is published locally must be queued for the upstream
        from the first start on, even if the upstream is never reachable. The connection asks
        to be sent nothing (queue-hold) and is closed at once."""
        link = Link(self._local.connect, self._from_local, name=f"local {self.name}")
        self._local_link = link
        try:
            ack = await link.open(self._local_connect(hold=True))
            self._local_new = not ack.session_present
            await self._subscribe_locally(link, ack.session_present)
        finally:
            await link.disconnect()
            self._local_link = None
            self._local_waiters.clear()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop cleanly: let what is in flight be acknowledged (briefly), tell the upstream
        "offline", DISCONNECT both links. What is still queued stays queued."""
        self._stopping.set()
        task = self._task
        if task is None:
            return
        if self.state != "connected":
            task.cancel()  # connecting or waiting to: nothing to finish
        try:
            await asyncio.wait_for(task, timeout)
        except (asyncio.CancelledError, TimeoutError):
            pass
        except Exception:
            log.exception("upstream %s: stopping failed", self.name)
        await self._abort_links(None)
        self._set_state("disconnected", None)

    # --- status -----------------------------------------------------------------------------

    def status(self, rate_out: float = 0.0, rate_in: float = 0.0) -> UpstreamStatus:
        cfg = self.config
        figures = self._local.figures(cfg.local_client_id)
        counters = self.counters
        return UpstreamStatus(
            name=cfg.name,
            host=cfg.host,
            port=cfg.port,
            protocol=cfg.protocol,
            client_id=self.client_id,
            state=self.state,
            since=round(self.since, 3),
            queued=figures.queued if figures is not None else 0,
            forwarded=counters.forwarded,
            received=counters.received,
            dropped=(figures.dropped if figures is not None else 0)
            + counters.refused_out
            + counters.dropped_qos0,
            duplicates=counters.duplicates,
            rate_out=round(rate_out, 1),
            rate_in=round(rate_in, 1),
            last_error=self.last_error,
        )

    def _set_state(self, state: State, error: str | None) -> None:
        if error is not None:
            self.last_error = error
        if state == self.state:
            if error is not None and self._on_change is not None:
                self._on_change(self)
            return
        self.state = state
        self.since = self._clock()
        if state == "connected":
            log.info(
                "upstream %s: connected to %s:%d as %r",
                self.name,
                self.config.host,
                self.config.port,
                self.client_id,
            )
        elif state == "disconnected" and error is not None:
            self._warn.warning("disconnected", "upstream %s: disconnected: %s", self.name, error)
        if self._on_change is not None:
            self._on_change(self)

    # --- the connection loop ----------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            self._set_state("connecting", None)
            try:
                await self._open_pair()
            except asyncio.CancelledError:
                await self._abort_links(None)
                raise
            except Exception as exc:  # any failure is a reason to try again later
                await self._abort_links(None)
                if not isinstance(exc, MQTTClientError | OSError | ssl.SSLError):
                    log.exception("upstream %s: connecting failed", self.name)
                why: BaseException = exc
                if isinstance(exc, ConnectionClosed) and isinstance(exc.__cause__, Exception):
                    # "is closed" (we sent on a link that had just failed) says less than why
                    # it failed, e.g. a bad packet that came with the CONNACK.
                    why = exc.__cause__
                self._set_state("disconnected", describe_error(why))
                await self._pause()
                continue
            up_at = loop.time()
            self._set_state("connected", None)
            reason = await self._watch()
            if self._stopping.is_set():
                await self._close_pair()
                return
            await self._abort_links(None)
            self._set_state("disconnected", reason)
            if loop.time() - up_at >= STABLE_AFTER:
                self._backoff.reset()
            await self._pause()

    async def _pause(self) -> None:
        delay = self._backoff.next_delay()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def _watch(self) -> str:
        """Wait until either link drops (its reason) or we are told to stop ("")."""
        remote, local = self._remote, self._local_link
        assert remote is not None and local is not None
        waits = {
            asyncio.ensure_future(remote.wait_closed()),
            asyncio.ensure_future(local.wait_closed()),
            asyncio.ensure_future(self._stopping.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if self._stopping.is_set() and not remote.closed and not local.closed:
            return ""
        if remote.closed:
            return describe_error(remote.close_reason) if remote.close_reason else "closed"
        why = describe_error(local.close_reason) if local.close_reason else "closed"
        return f"local session: {why}"

    async def _open_pair(self) -> None:
        cfg = self.config
        local = self._local
        early_remote: list[Packet] = []
        early_local: list[Packet] = []
        in_window = min(self.window, local.receive_maximum)
        remote = self._remote = Link(
            connector_for(cfg),
            early_remote.append,
            protocol_version=cfg.protocol,
            name=f"upstream {cfg.name}",
        )
        remote_ack = await remote.open(connect_packet(cfg, in_window, local.max_packet_size))
        local_link = self._local_link = Link(
            local.connect,
            early_local.append,
            protocol_version=PROTOCOL_V5,
            name=f"local {cfg.name}",
        )
        local_ack = await local_link.open(self._local_connect())
        pipe = self._pipe = self._new_pipe(remote, local_link, remote_ack, local_ack)
        remote.on_packet = self._from_remote
        local_link.on_packet = self._from_local

        # A read on either side is answered at once on both: the upstream's receive maximum
        # bounds what is in flight, so every round trip saved is throughput.
        def flush_both() -> None:
            remote.flush()
            local_link.flush()

        remote.after_read = local_link.after_read = flush_both
        for packet in early_remote:
            self._from_remote(packet)
        for packet in early_local:
            self._from_local(packet)
        await self._subscribe_locally(local_link, local_ack.session_present)
        local_new = self._local_new or not local_ack.session_present
        if local_new and remote_ack.session_present:
            await self._release_upstream_orphans(remote)
        self._local_new = False
        if not remote_ack.session_present:
            await self._forget_stale_inbound(local_link)
            await self._subscribe_upstream(remote)
        self._publish_notification(remote, ONLINE)
        pipe.start()

    def _local_connect(self, hold: bool = False) -> Connect:
        queue = self.config.queue
        policy = (
            ("queue-max-messages", str(queue.max_messages)),
            ("queue-max-bytes", str(queue.max_bytes)),
            ("queue-overflow", queue.overflow),
        )
        props = Properties(
            session_expiry_interval=SESSION_NEVER_EXPIRES,
            receive_maximum=self.window,
            user_properties=(*policy, ("queue-hold", "1")) if hold else policy,
        )
        return Connect(
            client_id=self.config.local_client_id,
            protocol_version=PROTOCOL_V5,
            clean_start=False,
            keep_alive=0,
            properties=props,
        )

    def _new_pipe(self, remote: Link, local: Link, remote_ack: ConnAck, local_ack: ConnAck) -> Pipe:
        v5 = self.config.protocol == PROTOCOL_V5
        rp = remote_ack.properties
        lp = local_ack.properties
        return Pipe(
            self.topics,
            _sender(remote),
            _sender(local),
            counters=self.counters,
            remote_version=self.config.protocol,
            remote_quota=(rp.receive_maximum or 65535) if v5 else self.window,
            local_quota=min(self.window, lp.receive_maximum or 65535),
            remote_max_qos=rp.maximum_qos if v5 and rp.maximum_qos is not None else 2,
            remote_retain=rp.retain_available != 0 if v5 else True,
            remote_max_packet_size=(rp.maximum_packet_size or 0) if v5 else 0,
            local_max_packet_size=lp.maximum_packet_size or 0,
            warn=self._warn,
            name=self.name,
            on_retry_later=self._retry_later,
            remote_congested=lambda: remote.write_buffer_size > CONGESTED_BYTES,
            local_congested=lambda: local.write_buffer_size > CONGESTED_BYTES,
        )

    def _retry_later(self, why: str) -> None:
        """The upstream cannot take a message now (quota exceeded): it stays unacknowledged
        locally, and the link is dropped so that it is sent again after the back-off (MQTT 5
        allows a resend only on a new connection)."""
        remote = self._remote
        if remote is not None and not remote.closed:
            self._warn.warning("retry-later", "upstream %s: %s; reconnecting", self.name, why)
            asyncio.get_running_loop().create_task(remote.abort(ConnectionClosed(why)))

    # --- packets ----------------------------------------------------------------------------

    def _from_remote(self, packet: Packet) -> None:
        released = self._orphans_released
        if released is not None and isinstance(packet, PubComp):
            if packet.packet_id == 0xFFFF and not released.done():
                released.set_result(None)
            return
        waiters = self._remote_waiters
        if waiters and isinstance(packet, PubAck | SubAck):
            waiter = waiters.pop(packet.packet_id, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(packet)
                return
        pipe = self._pipe
        if pipe is not None:
            pipe.from_remote(packet)

    def _from_local(self, packet: Packet) -> None:
        waiters = self._local_waiters
        if waiters and isinstance(packet, SubAck | UnsubAck | PubComp):
            waiter = waiters.pop(packet.packet_id, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(packet)
                return
        pipe = self._pipe
        if pipe is not None:
            pipe.from_local(packet)

    async def _exchange(
        self, link: Link, waiters: dict[int, asyncio.Future[Packet]], packet: Packet, pid: int
    ) -> Packet:
        waiter: asyncio.Future[Packet] = asyncio.get_running_loop().create_future()
        waiters[pid] = waiter
        closed: asyncio.Future[object] = asyncio.ensure_future(link.wait_closed())
        try:
            link.send(packet)
            done, _ = await asyncio.wait(
                (waiter, closed), timeout=CONTROL_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            closed.cancel()
            waiters.pop(pid, None)
        if waiter in done:
            return waiter.result()
        if link.closed:
            raise link.close_reason or ConnectionClosed(f"{link.name} closed")
        raise ConnectionClosed(f"{link.name}: no answer to {packet.type.name} in time")

    # --- set-up steps -----------------------------------------------------------------------

    def _free_pids(self, count: int, taken: Iterable[int]) -> list[int]:
        used = set(taken)
        free: list[int] = []
        pid = 1
        while len(free) < count:
            if pid not in used:
                free.append(pid)
            pid += 1
        return free

    async def _subscribe_locally(self, link: Link, session_present: bool) -> None:
        """Make the local session's subscriptions those of the rules: No Local (what the
        bridge publishes locally never comes back to it) and retain as published. Retained
        messages are sent only for a subscription that is new (retain handling 1)."""
        wanted = self.topics.local_subscriptions
        figures = self._local.figures(self.config.local_client_id)
        current = set(figures.subscriptions) if figures is not None and session_present else set()
        stale = sorted(current - {f for f, _ in wanted})
        if wanted:
            subs = tuple(
                Subscription(f, q, no_local=True, retain_as_published=True, retain_handling=1)
                for f, q in wanted
            )
            ack = await self._exchange(link, self._local_waiters, Subscribe(1, subs), 1)
            assert isinstance(ack, SubAck)
            for (flt, _), code in zip(wanted, ack.reason_codes, strict=False):
                if code >= 0x80:
                    log.error(
                        "upstream %s: the local broker refused the subscription %r "
                        "(reason code 0x%02X)",
                        self.name,
                        flt,
                        code,
                    )
        if stale:
            await self._exchange(link, self._local_waiters, Unsubscribe(2, tuple(stale)), 2)

    async def _release_upstream_orphans(self, link: Link) -> None:
        """Our local session is new but the upstream kept its session: it may hold QoS 2
        messages from us awaiting a PUBREL that the old local session would have sent. They
        fill its receive maximum (it answers 0x97 to anything new) and it would take a new
        message that reuses such a packet id for a resend and drop it. So release every
        packet id once (4 bytes each; unknown ones just get their PUBCOMP) before forwarding:
        what those messages held is delivered, at least once."""
        loop = asyncio.get_running_loop()
        released = self._orphans_released = loop.create_future()
        try:
            link.send_bytes(
                b"".join(bytes((0x62, 0x02, pid >> 8, pid & 0xFF)) for pid in range(1, 0x10000))
            )
            closed = asyncio.ensure_future(link.wait_closed())
            try:
                await asyncio.wait(
                    (released, closed), timeout=CONTROL_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                closed.cancel()
            if not released.done():
                raise link.close_reason or ConnectionClosed(
                    f"{link.name}: no answer to the release of stale packet ids"
                )
        finally:
            self._orphans_released = None
        log.info(
            "upstream %s: new local session, kept upstream session: released its packet ids",
            self.name,
        )

    async def _forget_stale_inbound(self, link: Link) -> None:
        """The upstream has a new session: it numbers its messages afresh, so QoS 2 packet
        ids the local broker still holds from the old one (awaiting a PUBREL that will never
        come) would make it take new messages for resends and drop them. Release them."""
        _, inbound = self._local.packet_ids(self.config.local_client_id)
        for pid in sorted(inbound):
            await self._exchange(link, self._local_waiters, PubRel(pid), pid)
        if inbound:
            log.info(
                "upstream %s: new upstream session; released %d stale QoS 2 packet id(s)",
                self.name,
                len(inbound),
            )

    async def _subscribe_upstream(self, link: Link) -> None:
        wanted = self.topics.remote_subscriptions
        if not wanted:
            return
        v5 = self.config.protocol == PROTOCOL_V5
        subs = tuple(Subscription(f, q, no_local=v5, retain_as_published=v5) for f, q in wanted)
        (pid,) = self._free_pids(1, self._taken_upstream())
        ack = await self._exchange(link, self._remote_waiters, Subscribe(pid, subs), pid)
        assert isinstance(ack, SubAck)
        refused = [
            f for (f, _), code in zip(wanted, ack.reason_codes, strict=False) if code >= 0x80
        ]
        if refused:
            error = f"upstream refused the subscription(s) {', '.join(refused)}"
            log.error("upstream %s: %s", self.name, error)
            self.last_error = error

    def _taken_upstream(self) -> set[int]:
        """Packet ids the upstream may still hold state for: those in flight to the bridge
        from its local session (they go up with the same ids) and those the pipe holds."""
        in_flight, _ = self._local.packet_ids(self.config.local_client_id)
        pipe = self._pipe
        return set(in_flight) | (pipe.out_packet_ids() if pipe is not None else set())

    def _publish_notification(self, link: Link, payload: bytes) -> None:
        """Retained, at QoS 0: a QoS 1 publish would need room in the upstream's receive
        maximum, which after a reconnect may be taken by our own unfinished QoS 2 exchanges
        (Mosquitto answers 0x97 and drops the link). Over TCP it arrives before anything that
        follows; if the link breaks first, the will says "offline" anyway."""
        link.send(Publish(self.notification_topic, payload, 0, True))

    # --- closing ----------------------------------------------------------------------------

    async def _close_pair(self) -> None:
        """The clean stop: drain what is in flight (briefly), "offline", DISCONNECT."""
        pipe, remote, local = self._pipe, self._remote, self._local_link
        if pipe is not None:
            pipe.forwarding = False
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._drain_timeout
            while pipe.out_in_flight and loop.time() < deadline:
                if remote is None or remote.closed or local is None or local.closed:
                    break
                await asyncio.sleep(0.01)
        if local is not None:
            await local.disconnect()
        if remote is not None and not remote.closed:
            try:
                self._publish_notification(remote, OFFLINE)
            except MQTTClientError as exc:
                log.info("upstream %s: could not say offline: %s", self.name, exc)
            await remote.disconnect()
        self._forget_links()

    async def _abort_links(self, reason: BaseException | None) -> None:
        remote, local = self._remote, self._local_link
        if local is not None:
            await local.disconnect()
        if remote is not None:
            await remote.abort(reason)
        self._forget_links()

    def _forget_links(self) -> None:
        self._remote = self._local_link = None
        self._pipe = None
        for waiters in (self._remote_waiters, self._local_waiters):
            for waiter in waiters.values():
                waiter.cancel()
            waiters.clear()


def _sender(link: Link) -> Callable[[Packet], None]:
    """link.send, quiet once the link is gone: the pair is closed as a whole by _watch, and
    one side's loss must not break the other side's read loop meanwhile."""
    send = link.send

    def safe_send(packet: Packet) -> None:
        try:
            send(packet)
        except ConnectionClosed:
            pass

    return safe_send


_CONNACK_V311 = {
    ConnAckV311.UNACCEPTABLE_PROTOCOL_VERSION: "unacceptable protocol version",
    ConnAckV311.IDENTIFIER_REJECTED: "client identifier rejected",
    ConnAckV311.SERVER_UNAVAILABLE: "server unavailable",
    ConnAckV311.BAD_USER_NAME_OR_PASSWORD: "bad user name or password",
    ConnAckV311.NOT_AUTHORIZED: "not authorized",
}


def describe_error(exc: BaseException) -> str:
    """One line for the state topic and the log."""
    if isinstance(exc, ConnectRefused):
        code = exc.reason_code
        if code < 0x80:
            text = _CONNACK_V311.get(ConnAckV311(code), "refused") if code <= 5 else "refused"
        else:
            try:
                text = ReasonCode(code).name.lower().replace("_", " ")
            except ValueError:
                text = "refused"
        return f"CONNECT refused: {text} (0x{code:02X})"
    return describe_os_error(exc)
