"""The broker core: the API its asyncio shell (gateway.server) calls.

Pure logic. The shell feeds it packets and the time, and performs what it asks for, in
order, after committing the store operations it emitted (see ``effects.Effects``). Because
every packet the broker produces while handling one input is released only after that
input's store operations are durable, a PUBACK never overtakes the write it acknowledges.

A session is *persistent* when its expiry interval is > 0; only persistent sessions are
mirrored in the store (``Session.stored``), so clean sessions never cost a write.

``Broker`` is made of mixin classes, one module each, every one built on the one below it
(so a module only calls down) and all on the single owner of the state, state.BrokerState:

    connect, inbound_publish, subscribe, timers   the inputs: packets and the clock
    admin         an administrator's actions (kick, delete, cancel) and what pollers read
    disconnect    how a connection ends, and what becomes of its session
    wills         which will a CONNECT may carry, when it is published
    routing       a publication to every matching subscription
    delivery      per session: queue, in-flight window, acknowledgements, redelivery
    durability    store operations, message reference counts
    state         BrokerState

restore (start-up from a Snapshot) builds on state alone.
"""

from __future__ import annotations

from typing import cast

from gateway.broker.admin import Admin, entries_of
from gateway.broker.connect import Connects
from gateway.broker.effects import ConnectionInfo, Effects, Identity, Send
from gateway.broker.inbound_publish import InboundPublish
from gateway.broker.queue_policy import pending_list
from gateway.broker.records import Message, Snapshot
from gateway.broker.restore import Restore
from gateway.broker.router import Publication
from gateway.broker.routing import inbound_properties
from gateway.broker.session import Session
from gateway.broker.session_info import SessionInfo, session_info
from gateway.broker.stats import Gauges, sys_topics
from gateway.broker.subscribe import Subscriptions
from gateway.broker.tick import Ticks
from gateway.mqtt.codec import is_valid_topic_name
from gateway.mqtt.packets import (
    NO_PROPERTIES,
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
    Subscribe,
    Unsubscribe,
    Will,
)
from gateway.mqtt.reason_codes import ReasonCode

__all__ = ["VERSION", "Broker", "SessionInfo"]

VERSION = "0.1.0"

_PROTOCOL_ERROR = ReasonCode.PROTOCOL_ERROR.value


class Broker(Connects, InboundPublish, Subscriptions, Ticks, Admin, Restore):
    """The broker. Every method takes the current time: the core never reads a clock."""

    def take_effects(self) -> Effects:
        if self.outbox.pending_dirty or self.outbox.notices:
            self._publish_reports()
        # The list itself stays: the outbox appends to the same object.
        actions = self._actions[:]
        self._actions.clear()
        store = self.ledger.take()
        self.stats.messages_sent += len(actions) - self._non_send
        self._non_send = 0
        return Effects(actions, store)

    def _publish_reports(self) -> None:
        """The pending lists and notices of trusted sessions' queue policies
        (queue_policy.py), published as part of the step that changed them. Publishing one
        can cause another (a report queued for a session with a policy): bounded."""
        for _ in range(8):
            outbox = self.outbox
            dirty, outbox.pending_dirty = outbox.pending_dirty, {}
            for s in dirty.values():
                topic = s.pending_topic
                if topic is not None and self.sessions.get(s.client_id) is s:
                    payload = pending_list(entries_of(s))
                    self.publish_local(topic, payload, 1, True, NO_PROPERTIES, self._now)
            notices, outbox.notices = outbox.notices, []
            for topic, payload in notices:
                self.publish_local(topic, payload, 1, False, NO_PROPERTIES, self._now)
            if not (outbox.pending_dirty or outbox.notices):
                return

    def connection_opened(self, info: ConnectionInfo, now: float) -> None:
        self._clock(now)
        self.sessions.open(info)

    def connect(self, conn_id: int, packet: Connect, identity: Identity, now: float) -> None:
        self._clock(now)
        conn = self.sessions.connection(conn_id)
        if conn is None:
            return
        self.stats.messages_received += 1
        if conn.session is not None:
            self._violation(conn, _PROTOCOL_ERROR, now)  # a second CONNECT (§3.1.0-2)
            return
        self._connect(conn, packet, identity, now)

    def handle(self, conn_id: int, packet: Packet, now: float) -> None:
        conn = self.sessions.connection(conn_id)
        if conn is None:
            return  # already closed by the broker; the shell may still hold packets
        # Not _clock(): connection_opened() started the clock, and this is the hot path.
        self._now = now
        self.stats.messages_received += 1
        s = conn.session
        if s is None:
            self._violation(conn, _PROTOCOL_ERROR, now)
            return
        cls = packet.__class__
        if cls is Publish:
            self._on_publish(conn, s, cast(Publish, packet), now)
        elif cls is PubAck:
            self.outbox.puback(conn, s, cast(PubAck, packet).packet_id, now)
        elif cls is PubRec:
            self.outbox.pubrec(conn, s, cast(PubRec, packet), now)
        elif cls is PubRel:
            self._on_pubrel(conn, s, cast(PubRel, packet).packet_id)
        elif cls is PubComp:
            self.outbox.pubcomp(conn, s, cast(PubComp, packet).packet_id, now)
        elif cls is Subscribe:
            self._on_subscribe(conn, s, cast(Subscribe, packet), now)
        elif cls is Unsubscribe:
            self._on_unsubscribe(conn, s, cast(Unsubscribe, packet))
        elif cls is PingReq:
            self._actions.append(Send(conn.conn_id, PingResp()))
        elif cls is Disconnect:
            self._on_disconnect(conn, s, cast(Disconnect, packet), now)
        else:
            # CONNECT again, AUTH (no enhanced authentication is offered) or a packet only a
            # server sends.
            self._violation(conn, _PROTOCOL_ERROR, now)

    def protocol_violation(self, conn_id: int, reason_code: int, now: float) -> None:
        self._clock(now)
        conn = self.sessions.connection(conn_id)
        if conn is not None:
            self._violation(conn, reason_code, now)

    def connection_lost(self, conn_id: int, now: float) -> None:
        self._clock(now)
        conn = self.sessions.close(conn_id)
        if conn is None:
            return
        s = self._unlink(conn)
        if s is not None:
            self._event("disconnect", s.client_id, "connection lost")
            self._after_disconnect(s, conn.will, now)

    def shutdown(self, now: float) -> None:
        self._clock(now)
        gone: list[tuple[Session, Will | None]] = []
        # First detach everybody, so that wills published below go to sessions' queues
        # (durably, for persistent ones) and not to connections that are closing.
        for conn in list(self.sessions.conns.values()):
            s = self._detach(conn, ReasonCode.SERVER_SHUTTING_DOWN)
            if s is not None:
                gone.append((s, conn.will))
        for s, will in gone:
            self._after_disconnect(s, will, now)

    def tick(self, now: float) -> None:
        self._clock(now)
        self._run_timers(now)
        interval = self.settings.sys_interval
        if interval > 0 and now >= self._next_sys:
            self._next_sys = now + interval
            self.publish_sys(now)

    def publish_local(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
        now: float | None = None,
    ) -> None:
        """Publish a broker-originated message ($SYS, bridge state ...). No publish ACL."""
        if now is None:
            now = self._now
        else:
            self._clock(now)
        if not is_valid_topic_name(topic):
            raise ValueError(f"invalid topic name {topic!r}")
        qos = min(qos, self.settings.max_qos)
        props = inbound_properties(properties)
        mei = props.message_expiry_interval
        expires_at = None if mei is None else now + mei
        self._accept(Publication(topic, payload, qos, retain, props, expires_at, "", now))

    def publish_sys(self, now: float) -> None:
        topics = sys_topics(self.stats, self.gauges(now), f"{self.server_name} {VERSION}")
        if self.sys_extra is not None:
            topics.extend(("$SYS/broker/" + name, value) for name, value in self.sys_extra())
        for topic, value in topics:
            self.publish_local(topic, value.encode(), 0, True, NO_PROPERTIES, now)

    def gauges(self, now: float) -> Gauges:
        connected = disconnected = queued = inflight = 0
        for s in self.sessions.by_id.values():
            if s.conn is not None:
                connected += 1
            else:
                disconnected += 1
            queued += len(s.queue) + len(s.inflight)
            inflight += len(s.inflight)
        started = self._started_at if self._started_at is not None else now
        return Gauges(
            uptime=int(now - started),
            clients_connected=connected,
            clients_disconnected=disconnected,
            retained=len(self.router.retained),
            subscriptions=len(self.router.tree),
            queued=queued,
            stored=self.ledger.stored_messages + len(self.router.retained),
            inflight=inflight,
        )

    def sessions_info(self) -> list[SessionInfo]:
        return [session_info(s) for s in self.sessions.by_id.values()]

    def session_exists(self, client_id: str) -> bool:
        return client_id in self.sessions

    def retained_messages(self) -> list[Message]:
        return self.router.retained.messages()

    def restore(self, snapshot: Snapshot, now: float) -> None:
        """Rebuild the durable state at start-up, before any connection is accepted."""
        self._clock(now)
        self._restore(snapshot, now)
