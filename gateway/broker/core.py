"""The broker core: sessions, routing, flow control, retained messages, wills, durability.

Pure logic. The asyncio shell (gateway.server) feeds it packets and the time, and performs
what it asks for, in order, after committing the store operations it emitted (see
``effects.Effects``). Because every packet the broker produces while handling one input is
released only after that input's store operations are durable, a PUBACK never overtakes the
write it acknowledges.

Conventions:
- A session is *persistent* when its expiry interval is > 0; only persistent sessions are
  mirrored in the store (``Session.stored``), so clean sessions never cost a write.
- A message is stored once (PutMessage) when the first persistent session references it and
  deleted when the last reference goes; queue entries reference it by ``msg_id``.
- Queue limits count messages not yet sent (QUEUED); the in-flight window is bounded by the
  receive maximum / ``max_inflight_out`` instead.
"""

from __future__ import annotations

import heapq
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from itertools import chain
from typing import cast

from gateway.broker.access import AllowAll, Authorizer
from gateway.broker.effects import (
    Action,
    Close,
    ConnectionInfo,
    Effects,
    Identity,
    Send,
    SetKeepAlive,
)
from gateway.broker.records import (
    DeleteInboundQos2,
    DeleteMessage,
    DeleteQueueEntry,
    DeleteRetained,
    DeleteSession,
    DeleteSubscription,
    Message,
    PutInboundQos2,
    PutMessage,
    PutQueueEntry,
    PutRetained,
    PutSession,
    PutSubscription,
    Snapshot,
    StoreOp,
    SubscriptionRecord,
)
from gateway.broker.retained import RetainedStore
from gateway.broker.session import QUEUED, RELEASED, SENT, Connection, QEntry, Session
from gateway.broker.settings import BrokerSettings, Overflow
from gateway.broker.stats import BrokerStats, Gauges, sys_topics
from gateway.broker.topic_tree import (
    NO_MATCH,
    SharedGroup,
    SubscriptionTree,
    has_wildcard,
    split_shared,
    valid_filter,
    valid_topic_name,
)
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
    UnsubAck,
    Unsubscribe,
    Will,
)
from gateway.mqtt.reason_codes import ReasonCode, connack_code_for_v311

log = logging.getLogger("gateway.broker")

VERSION = "0.1.0"

_NO_MATCHING = ReasonCode.NO_MATCHING_SUBSCRIBERS.value
_QUOTA = ReasonCode.QUOTA_EXCEEDED.value
_NOT_AUTHORIZED = ReasonCode.NOT_AUTHORIZED.value
_PROTOCOL_ERROR = ReasonCode.PROTOCOL_ERROR.value
_PID_NOT_FOUND = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND.value
_MAX_VBI = 268_435_455

# Route results (bit flags).
_MATCHED = 1
_REJECTED = 2

# Timer kinds.
_WILL = 0
_EXPIRY = 1


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session as the admin API and the TUI show it."""

    client_id: str
    username: str | None
    protocol_version: int
    persistent: bool
    connected: bool
    disconnected_at: float | None
    expiry_interval: int
    expires_at: float | None
    subscriptions: tuple[str, ...]
    queued: int
    queued_bytes: int
    inflight: int
    inflight_bytes: int
    inbound_qos2: int
    will_pending: bool
    listener: str | None
    peer: str | None
    keep_alive: int


class Broker:
    def __init__(
        self,
        settings: BrokerSettings,
        authorizer: Authorizer | None = None,
        server_name: str = "edge-gateway",
    ) -> None:
        self.settings = settings
        self.authorizer: Authorizer = authorizer if authorizer is not None else AllowAll()
        # With no ACL the per-message authorisation calls are skipped altogether.
        self._acl = not isinstance(self.authorizer, AllowAll)
        self.server_name = server_name
        self.stats = BrokerStats()
        self._conns: dict[int, Connection] = {}
        self._sessions: dict[str, Session] = {}
        self._tree = SubscriptionTree()
        self._retained = RetainedStore(settings.max_retained_messages)
        self._actions: list[Action] = []
        self._store: list[StoreOp] = []
        self._non_send = 0  # Close/SetKeepAlive actions among _actions (for messages_sent)
        self._msg_refs: dict[int, int] = {}  # msg_id -> persistent queue entries using it
        self._next_msg_id = 1
        self._next_seq = 1
        # (due, kind, client_id): will delays and session expiry; validated when popped.
        self._timers: list[tuple[float, int, str]] = []
        # (expires_at, seq, session, entry) of queued entries whose message can expire.
        self._queue_expiry: list[tuple[float, int, Session, QEntry]] = []
        self._started_at: float | None = None
        self._next_sys = 0.0
        self._now = 0.0
        self._connack_props_cache: Properties | None = None
        self._online = 0  # sessions with a connection
        # Figures that live outside the core (connection layer, store), as (name, value)
        # pairs below $SYS/broker/; set by the composition root.
        self.sys_extra: Callable[[], Iterable[tuple[str, str]]] | None = None

    # ============================================================================ shell API

    def take_effects(self) -> Effects:
        actions = self._actions
        store = self._store
        self._actions = []
        self._store = []
        self.stats.messages_sent += len(actions) - self._non_send
        self._non_send = 0
        return Effects(actions, store)

    def connection_opened(self, info: ConnectionInfo, now: float) -> None:
        self._clock(now)
        self._conns[info.conn_id] = Connection(info)

    def connect(self, conn_id: int, packet: Connect, identity: Identity, now: float) -> None:
        self._clock(now)
        conn = self._conns.get(conn_id)
        if conn is None:
            return
        self.stats.messages_received += 1
        if conn.session is not None or conn.client_id:
            self._violation(conn, _PROTOCOL_ERROR, now)  # a second CONNECT (§3.1.0-2)
            return
        self._connect(conn, packet, identity, now)

    def handle(self, conn_id: int, packet: Packet, now: float) -> None:
        conn = self._conns.get(conn_id)
        if conn is None:
            return  # already closed by the broker; the shell may still hold packets
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
            self._on_puback(conn, s, cast(PubAck, packet).packet_id, now)
        elif cls is PubRec:
            self._on_pubrec(conn, s, cast(PubRec, packet), now)
        elif cls is PubRel:
            self._on_pubrel(conn, s, cast(PubRel, packet).packet_id)
        elif cls is PubComp:
            self._on_pubcomp(conn, s, cast(PubComp, packet).packet_id, now)
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
        conn = self._conns.get(conn_id)
        if conn is not None:
            self._violation(conn, reason_code, now)

    def connection_lost(self, conn_id: int, now: float) -> None:
        self._clock(now)
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        s = self._unlink(conn)
        if s is not None:
            self._after_disconnect(s, conn.will, now)

    def shutdown(self, now: float) -> None:
        self._clock(now)
        conns = list(self._conns.values())
        self._conns.clear()
        gone: list[tuple[Session, Will | None]] = []
        # First detach everybody, so that wills published below go to sessions' queues
        # (durably, for persistent ones) and not to connections that are closing.
        for conn in conns:
            if conn.session is not None and conn.v5:
                self._send(conn.conn_id, Disconnect(ReasonCode.SERVER_SHUTTING_DOWN))
            self._close(conn.conn_id)
            s = self._unlink(conn)
            if s is not None:
                gone.append((s, conn.will))
        for s, will in gone:
            self._after_disconnect(s, will, now)

    def tick(self, now: float) -> None:
        self._clock(now)
        timers = self._timers
        sessions = self._sessions
        while timers and timers[0][0] <= now:
            _, kind, client_id = heapq.heappop(timers)
            s = sessions.get(client_id)
            if s is None or s.conn is not None:
                continue
            if kind == _WILL:
                due = s.will_due_at
                if s.will is None or due is None:
                    continue
                if due > now:
                    heapq.heappush(timers, (due, _WILL, client_id))
                    continue
                will = s.will
                s.will = None
                s.will_due_at = None
                if s.stored:
                    self._store.append(PutSession(s.record()))
                self._publish_will(client_id, will, now)
            else:
                expires = s.expires_at()
                if expires is None:
                    continue
                if expires > now:
                    heapq.heappush(timers, (expires, _EXPIRY, client_id))
                    continue
                self.stats.sessions_expired += 1
                self._end_session(s, now, expired=True)
        heap = self._queue_expiry
        while heap and heap[0][0] <= now:
            _, _, s, e = heapq.heappop(heap)
            if e.dead or e.state is not QUEUED or sessions.get(s.client_id) is not s:
                continue  # sent, dropped or its session ended since
            s.queue.discard(e)
            self._finish(s, e)
            self.stats.dropped("expired", 1, f"queued for {s.client_id!r} on {e.message.topic}")
        for msg in self._retained.expire(now):
            if not msg.topic.startswith("$SYS"):
                self._store.append(DeleteRetained(msg.topic))
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
        if not valid_topic_name(topic):
            raise ValueError(f"invalid topic name {topic!r}")
        qos = min(qos, self.settings.max_qos)
        props = _inbound_properties(properties)
        mei = props.message_expiry_interval
        expires_at = None if mei is None else now + mei
        self._accept(None, topic, payload, qos, retain, props, expires_at, "", now, None)

    def publish_sys(self, now: float) -> None:
        topics = sys_topics(self.stats, self.gauges(now), self._version_text())
        if self.sys_extra is not None:
            topics.extend(("$SYS/broker/" + name, value) for name, value in self.sys_extra())
        for topic, value in topics:
            self.publish_local(topic, value.encode(), 0, True, NO_PROPERTIES, now)

    def gauges(self, now: float) -> Gauges:
        connected = disconnected = queued = inflight = 0
        for s in self._sessions.values():
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
            retained=len(self._retained),
            subscriptions=len(self._tree),
            queued=queued,
            stored=len(self._msg_refs) + len(self._retained),
            inflight=inflight,
        )

    def sessions_info(self) -> list[SessionInfo]:
        out = []
        for s in self._sessions.values():
            conn = s.conn
            out.append(
                SessionInfo(
                    client_id=s.client_id,
                    username=s.username,
                    protocol_version=s.version,
                    persistent=s.persistent,
                    connected=conn is not None,
                    disconnected_at=s.disconnected_at if conn is None else None,
                    expiry_interval=s.expiry,
                    expires_at=s.expires_at(),
                    subscriptions=tuple(s.subscriptions),
                    queued=len(s.queue),
                    queued_bytes=s.queue.bytes,
                    inflight=len(s.inflight),
                    inflight_bytes=sum(len(e.message.payload) for e in s.inflight.values()),
                    inbound_qos2=len(s.inbound_qos2),
                    will_pending=s.will is not None,
                    listener=conn.info.listener if conn is not None else None,
                    peer=conn.info.peer if conn is not None else None,
                    keep_alive=conn.keep_alive if conn is not None else 0,
                )
            )
        return out

    def session_exists(self, client_id: str) -> bool:
        return client_id in self._sessions

    def retained_messages(self) -> list[Message]:
        return self._retained.messages()

    # ============================================================================ restore

    def restore(self, snapshot: Snapshot, now: float) -> None:
        """Rebuild the durable state at start-up, before any connection is accepted."""
        self._clock(now)
        store = self._store
        sessions = self._sessions
        max_msg_id = 0
        max_seq = 0
        for rec in snapshot.sessions:
            s = Session(
                rec.client_id,
                rec.expiry_interval,
                rec.protocol_version,
                rec.username,
                self.settings.queue_limits_for(rec.client_id),
            )
            s.stored = True
            disconnected_at = rec.disconnected_at
            if disconnected_at is None:
                # It was connected when the broker stopped: it lost its connection now.
                disconnected_at = now
            s.disconnected_at = disconnected_at
            if rec.disconnected_at is None:
                store.append(PutSession(s.record()))
            if rec.will is not None:
                s.will = rec.will
                delay = _will_delay(rec.will, rec.protocol_version)
                s.will_due_at = disconnected_at + min(delay, rec.expiry_interval)
                heapq.heappush(self._timers, (s.will_due_at, _WILL, s.client_id))
            sessions[s.client_id] = s
            expires = s.expires_at()
            if expires is not None:
                heapq.heappush(self._timers, (expires, _EXPIRY, s.client_id))
        for sub in snapshot.subscriptions:
            owner = sessions.get(sub.client_id)
            if owner is None or split_shared(sub.topic_filter) is None:
                log.warning(
                    "restore: dropping subscription %r of %r", sub.topic_filter, sub.client_id
                )
                store.append(DeleteSubscription(sub.client_id, sub.topic_filter))
                continue
            owner.subscriptions[sub.topic_filter] = sub
            self._tree.add(sub)
        messages = {m.msg_id: m for m in snapshot.messages}
        refs = self._msg_refs
        for q in sorted(snapshot.queue, key=lambda q: q.seq):
            max_seq = max(max_seq, q.seq)
            owner = sessions.get(q.client_id)
            msg = messages.get(q.msg_id)
            if owner is None or msg is None:
                log.warning("restore: dropping orphan queue entry %r/%d", q.client_id, q.seq)
                store.append(DeleteQueueEntry(q.client_id, q.seq))
                continue
            e = QEntry(q.seq, msg, q.qos, q.retain, q.subscription_ids, q.state, q.packet_id)
            pid = q.packet_id
            if q.state is QUEUED or pid is None or pid in owner.inflight:
                e.state = QUEUED
                e.packet_id = None
                owner.queue.append(e)
                if msg.expires_at is not None:
                    heapq.heappush(self._queue_expiry, (msg.expires_at, q.seq, owner, e))
            else:
                owner.inflight[pid] = e
                owner.next_packet_id = pid % 65535 + 1
            refs[msg.msg_id] = refs.get(msg.msg_id, 0) + 1
        for m in snapshot.messages:
            max_msg_id = max(max_msg_id, m.msg_id)
            if m.msg_id not in refs:
                store.append(DeleteMessage(m.msg_id))
        for client_id, pid in snapshot.inbound_qos2:
            owner = sessions.get(client_id)
            if owner is not None:
                owner.inbound_qos2.add(pid)
        for m in snapshot.retained:
            max_msg_id = max(max_msg_id, m.msg_id)
            self._retained.put(m)
        self._next_msg_id = max(self._next_msg_id, max_msg_id + 1)
        self._next_seq = max(self._next_seq, max_seq + 1)

    # ============================================================================ CONNECT

    def _connect(self, conn: Connection, packet: Connect, identity: Identity, now: float) -> None:
        settings = self.settings
        version = PROTOCOL_V5 if packet.protocol_version == PROTOCOL_V5 else 4
        v5 = version == PROTOCOL_V5
        conn.version = version
        conn.v5 = v5
        if not identity.ok:
            code = identity.reason_code if identity.reason_code >= 0x80 else _NOT_AUTHORIZED
            self._refuse(conn, code)
            return
        username = identity.username
        client_id = packet.client_id
        assigned: str | None = None
        if not client_id:
            if not v5 and not packet.clean_start:
                self._refuse(conn, ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)  # 3.1.1: 0x02
                return
            client_id = self._new_client_id()
            assigned = client_id if v5 else None
        will = packet.will
        if will is not None:
            code = self._will_refusal(will, username, client_id, v5)
            if code:
                self._refuse(conn, code)
                return
            if will.qos > settings.max_qos or (will.retain and not settings.retain_available):
                # Only 3.1.1 gets here (v5 was refused above): publish it as well as we can.
                will = Will(
                    will.topic,
                    will.payload,
                    min(will.qos, settings.max_qos),
                    will.retain and settings.retain_available,
                    will.properties,
                )
        props = packet.properties
        requested_expiry = 0
        if v5:
            requested_expiry = props.session_expiry_interval or 0
        elif not packet.clean_start:
            requested_expiry = settings.v311_session_expiry
        expiry = min(requested_expiry, settings.max_session_expiry)

        # Take over a live connection of the same client (§3.1.4-3).
        existing = self._sessions.get(client_id)
        taken_over = False
        if existing is not None and existing.conn is not None:
            old = existing.conn
            self.stats.takeovers += 1
            self._conns.pop(old.conn_id, None)
            if old.v5:
                self._send(old.conn_id, Disconnect(ReasonCode.SESSION_TAKEN_OVER))
            self._close(old.conn_id)
            self._unlink(old)
            self._after_disconnect(existing, old.will, now, takeover=True)
            taken_over = True
        if existing is not None:
            expires = None if taken_over else existing.expires_at()
            if packet.clean_start or (expires is not None and expires <= now):
                self._end_session(existing, now, expired=not packet.clean_start)
                existing = None
        session_present = existing is not None
        if existing is not None:
            s = existing
            # Reconnected in time: a delayed will of the previous connection is cancelled.
            s.will = None
            s.will_due_at = None
            s.limits = settings.queue_limits_for(client_id)
        else:
            s = Session(client_id, expiry, version, username, settings.queue_limits_for(client_id))
            self._sessions[client_id] = s
        s.expiry = expiry
        s.version = version
        s.username = username
        s.disconnected_at = None
        s.conn = conn
        conn.session = s
        conn.client_id = client_id
        conn.will = will
        conn.requested_expiry = requested_expiry
        if v5:
            receive_max = props.receive_maximum or 65535
            conn.max_packet_size = props.maximum_packet_size or 0
        else:
            receive_max = 65535
        conn.window = max(1, min(receive_max, settings.max_inflight_out))

        keep_alive = packet.keep_alive
        server_keep_alive = None
        if (
            v5
            and settings.max_keepalive
            and (keep_alive == 0 or keep_alive > settings.max_keepalive)
        ):
            keep_alive = server_keep_alive = settings.max_keepalive
        conn.keep_alive = keep_alive

        # Durability: mirror the session in the store iff it is persistent now.
        if s.persistent:
            if s.stored:
                self._store.append(PutSession(s.record()))
            else:
                self._store_session(s)
        elif s.stored:
            self._unstore_session(s)

        self.stats.connections_total += 1
        self._online += 1
        if self._online > self.stats.clients_maximum:
            self.stats.clients_maximum = self._online

        if v5:
            ack_props = self._connack_properties()
            if assigned is not None or server_keep_alive is not None or expiry != requested_expiry:
                ack_props = replace(
                    ack_props,
                    assigned_client_identifier=assigned,
                    server_keep_alive=server_keep_alive,
                    session_expiry_interval=expiry if expiry != requested_expiry else None,
                )
            ack = ConnAck(session_present, 0, ack_props)
        else:
            ack = ConnAck(session_present, 0)
        self._send(conn.conn_id, ack)
        self._actions.append(SetKeepAlive(conn.conn_id, keep_alive))
        self._non_send += 1
        if session_present:
            self._resume(conn, s, now)

    def _connack_properties(self) -> Properties:
        props = self._connack_props_cache
        if props is None:
            st = self.settings
            props = self._connack_props_cache = Properties(
                receive_maximum=st.receive_maximum if st.receive_maximum < 65535 else None,
                maximum_qos=st.max_qos if st.max_qos < 2 else None,
                retain_available=None if st.retain_available else 0,
                maximum_packet_size=(
                    st.max_packet_size if 0 < st.max_packet_size < _MAX_VBI + 5 else None
                ),
                topic_alias_maximum=st.topic_alias_maximum or None,
                wildcard_subscription_available=None if st.wildcard_subscriptions else 0,
                subscription_identifier_available=None if st.subscription_identifiers else 0,
                shared_subscription_available=None if st.shared_subscriptions else 0,
            )
        return props

    def _will_refusal(self, will: Will, username: str | None, client_id: str, v5: bool) -> int:
        topic = will.topic
        if not valid_topic_name(topic):
            return ReasonCode.TOPIC_NAME_INVALID
        if _is_sys(topic) or (
            self._acl and not self.authorizer.can_publish(username, client_id, topic)
        ):
            return _NOT_AUTHORIZED
        if v5:
            if will.qos > self.settings.max_qos:
                return ReasonCode.QOS_NOT_SUPPORTED
            if will.retain and not self.settings.retain_available:
                return ReasonCode.RETAIN_NOT_SUPPORTED
        return 0

    def _refuse(self, conn: Connection, code: int) -> None:
        self.stats.connections_refused += 1
        self._conns.pop(conn.conn_id, None)
        rc = code if conn.v5 else connack_code_for_v311(code)
        self._send(conn.conn_id, ConnAck(False, rc))
        self._close(conn.conn_id)

    def _new_client_id(self) -> str:
        while True:
            client_id = "auto-" + secrets.token_hex(8)
            if client_id not in self._sessions:
                return client_id

    def _resume(self, conn: Connection, s: Session, now: float) -> None:
        """Resend what was in flight, in order (§4.4), then carry on with the queue."""
        cid = conn.conn_id
        for pid, e in list(s.inflight.items()):
            if e.state is RELEASED:
                self._send(cid, PubRel(pid))
                continue
            msg = e.message
            props = msg.properties
            if conn.v5 and (e.sub_ids or msg.expires_at is not None):
                props = _delivery_props(props, e.sub_ids, msg.expires_at, now)
            out = Publish(msg.topic, msg.payload, e.qos, e.retain, True, pid, props)
            if conn.max_packet_size and publish_size(out, conn.v5) > conn.max_packet_size:
                del s.inflight[pid]
                self._finish(s, e)
                self.stats.dropped("too_large", 1, f"for {s.client_id!r} on {msg.topic}")
                continue
            self._send(cid, out)
            self.stats.publish_sent += 1
        if s.queue:
            self._pump(conn, s, now)

    # ============================================================================ PUBLISH in

    def _on_publish(self, conn: Connection, s: Session, p: Publish, now: float) -> None:
        stats = self.stats
        stats.publish_received += 1
        topic = p.topic
        qos = p.qos
        settings = self.settings
        if not topic or "+" in topic or "#" in topic:
            self._violation(conn, ReasonCode.TOPIC_NAME_INVALID, now)
            return
        if qos > settings.max_qos:
            self._violation(conn, ReasonCode.QOS_NOT_SUPPORTED, now)
            return
        retain = p.retain
        if retain and not settings.retain_available:
            self._violation(conn, ReasonCode.RETAIN_NOT_SUPPORTED, now)
            return
        pid = p.packet_id or 0  # present iff qos > 0 (the codec checks)
        if qos == 2:
            inbound = s.inbound_qos2
            if pid in inbound:
                # Method A (§4.3.3): delivered when first received; a resend only gets its
                # PUBREC again.
                self._actions.append(Send(conn.conn_id, PubRec(pid)))
                return
            if conn.v5 and len(inbound) >= settings.receive_maximum:
                self._violation(conn, ReasonCode.RECEIVE_MAXIMUM_EXCEEDED, now)
                return
        v5 = conn.v5
        props = p.properties
        refusal = 0
        if topic[0] == "$" and _is_sys(topic):
            refusal = _NOT_AUTHORIZED  # only the broker publishes $SYS (like Mosquitto)
        elif self._acl and not self.authorizer.can_publish(s.username, s.client_id, topic):
            refusal = _NOT_AUTHORIZED
        elif settings.max_topic_levels and topic.count("/") >= settings.max_topic_levels:
            refusal = ReasonCode.TOPIC_NAME_INVALID
        elif v5 and props.payload_format_indicator == 1 and not _is_utf8(p.payload):
            refusal = ReasonCode.PAYLOAD_FORMAT_INVALID
        if refusal:
            stats.publish_denied += 1
            if qos == 1:
                self._actions.append(Send(conn.conn_id, PubAck(pid, refusal if v5 else 0)))
            elif qos == 2:
                # v5: a PUBREC >= 0x80 ends the exchange. 3.1.1 has no way to say no, so the
                # exchange completes normally (PUBREL of an unknown id gets its PUBCOMP).
                self._actions.append(Send(conn.conn_id, PubRec(pid, refusal if v5 else 0)))
            return
        expires_at = None
        if props is not NO_PROPERTIES:
            props = _inbound_properties(props)
            mei = props.message_expiry_interval
            if mei is not None:
                expires_at = now + mei
        flags = self._accept(
            None, topic, p.payload, qos, retain, props, expires_at, s.client_id, now, p
        )
        if qos == 0:
            return
        rc = 0
        if v5:
            if flags & _REJECTED:
                rc = _QUOTA
            elif not flags:
                rc = _NO_MATCHING
        if qos == 1:
            self._actions.append(Send(conn.conn_id, PubAck(pid, rc)))
        else:
            if rc < 0x80:
                s.inbound_qos2.add(pid)
                if s.stored:
                    self._store.append(PutInboundQos2(s.client_id, pid))
            self._actions.append(Send(conn.conn_id, PubRec(pid, rc)))

    def _accept(
        self,
        msg: Message | None,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        props: Properties,
        expires_at: float | None,
        origin: str,
        now: float,
        packet: Publish | None,
    ) -> int:
        """Keep a retained copy as asked, then route. Returns _MATCHED/_REJECTED flags."""
        if retain:
            retained = self._retained
            durable = not topic.startswith("$SYS")
            if not payload:
                if retained.remove(topic) is not None and durable:
                    self._store.append(DeleteRetained(topic))
            elif retained.can_store(topic):
                msg = Message(
                    self._new_msg_id(), topic, payload, qos, True, props, expires_at, origin, now
                )
                retained.put(msg)
                if durable:
                    self._store.append(PutRetained(msg))
            else:
                self.stats.dropped("retained_full", 1, f"retained store full; {topic} not retained")
        return self._route(msg, topic, payload, qos, retain, props, expires_at, origin, now, packet)

    # ============================================================================ routing

    def _route(
        self,
        msg: Message | None,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        props: Properties,
        expires_at: float | None,
        origin: str,
        now: float,
        packet: Publish | None,
    ) -> int:
        match = self._tree.match(topic)
        if match is NO_MATCH:
            return 0
        result = _MATCHED
        sessions = self._sessions
        acl = self._acl
        actions = self._actions
        for t in match.targets:
            client_id = t.client_id
            if client_id == origin:
                dq = t.local_qos
                if dq < 0:
                    continue  # No Local
                rap = t.local_rap
                ids = t.local_sub_ids
            else:
                dq = t.qos
                rap = t.rap
                ids = t.sub_ids
            s = sessions.get(client_id)
            if s is None:
                continue
            if acl and not self.authorizer.can_receive(s.username, client_id, topic):
                continue
            if qos < dq:
                dq = qos
            out_retain = retain and rap
            conn = s.conn
            if dq == 0 and conn is not None:
                # QoS 0 to a live connection goes straight out; the publisher's packet is
                # reused whenever it is exactly what this subscriber must receive.
                if conn.v5 and ids:
                    out: Publish = Publish(
                        topic,
                        payload,
                        0,
                        out_retain,
                        False,
                        None,
                        _delivery_props(props, ids, None, now),
                    )
                elif (
                    packet is not None
                    and packet.qos == 0
                    and packet.retain == out_retain
                    and packet.properties is props
                    and not packet.dup
                ):
                    out = packet
                else:
                    out = Publish(topic, payload, 0, out_retain, False, None, props)
                if conn.max_packet_size and publish_size(out, conn.v5) > conn.max_packet_size:
                    self.stats.dropped("too_large", 1, f"for {client_id!r} on {topic}")
                    continue
                actions.append(Send(conn.conn_id, out))
                self.stats.publish_sent += 1
                continue
            if msg is None:
                msg = Message(
                    self._new_msg_id(), topic, payload, qos, retain, props, expires_at, origin, now
                )
            if not self._deliver(s, msg, dq, out_retain, ids, now):
                result |= _REJECTED
        for group in match.groups:
            picked = self._pick(group, topic)
            if picked is None:
                continue
            s, rec = picked
            if msg is None:
                msg = Message(
                    self._new_msg_id(), topic, payload, qos, retain, props, expires_at, origin, now
                )
            ids = () if rec.subscription_id is None else (rec.subscription_id,)
            if not self._deliver(
                s, msg, min(qos, rec.qos), retain and rec.retain_as_published, ids, now
            ):
                result |= _REJECTED
        return result

    def _pick(self, group: SharedGroup, topic: str) -> tuple[Session, SubscriptionRecord] | None:
        """Round robin over the connected members; if none is connected, over all of them
        (the message waits in that member's session queue)."""
        order = group.order
        n = len(order)
        if not n:
            return None
        sessions = self._sessions
        start = group.next_index % n
        fallback: tuple[int, Session] | None = None
        for k in range(n):
            i = (start + k) % n
            s = sessions.get(order[i])
            if s is None:
                continue
            if self._acl and not self.authorizer.can_receive(s.username, s.client_id, topic):
                continue
            if s.conn is not None:
                group.next_index = i + 1
                return s, group.members[order[i]]
            if fallback is None:
                fallback = (i, s)
        if fallback is None:
            return None
        i, s = fallback
        group.next_index = i + 1
        return s, group.members[order[i]]

    def _deliver(
        self,
        s: Session,
        msg: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        now: float,
    ) -> bool:
        """Hand one message to one session. False if its queue refused it (REJECT_NEW)."""
        conn = s.conn
        if conn is not None:
            if qos == 0:
                self._send_qos0(conn, s, msg, retain, sub_ids, now)
                return True
            if not s.queue.count and len(s.inflight) < conn.window:
                seq = self._next_seq
                self._next_seq = seq + 1
                self._transmit(conn, s, QEntry(seq, msg, qos, retain, sub_ids), now, False)
                return True
        elif qos == 0 and not s.limits.queue_qos0:
            self.stats.dropped_qos0_offline += 1
            return True
        return self._enqueue(s, msg, qos, retain, sub_ids)

    def _send_qos0(
        self,
        conn: Connection,
        s: Session,
        msg: Message,
        retain: bool,
        sub_ids: tuple[int, ...],
        now: float,
    ) -> None:
        props = msg.properties
        if conn.v5 and (sub_ids or msg.expires_at is not None):
            props = _delivery_props(props, sub_ids, msg.expires_at, now)
        out = Publish(msg.topic, msg.payload, 0, retain, False, None, props)
        if conn.max_packet_size and publish_size(out, conn.v5) > conn.max_packet_size:
            self.stats.dropped("too_large", 1, f"for {s.client_id!r} on {msg.topic}")
            return
        self._actions.append(Send(conn.conn_id, out))
        self.stats.publish_sent += 1

    def _transmit(
        self, conn: Connection, s: Session, e: QEntry, now: float, persisted: bool
    ) -> None:
        """Send a QoS 1/2 entry that is not in flight yet (``persisted``: already stored)."""
        msg = e.message
        pid = s.allocate_packet_id()
        props = msg.properties
        if conn.v5 and (e.sub_ids or msg.expires_at is not None):
            props = _delivery_props(props, e.sub_ids, msg.expires_at, now)
        out = Publish(msg.topic, msg.payload, e.qos, e.retain, False, pid, props)
        if conn.max_packet_size and publish_size(out, conn.v5) > conn.max_packet_size:
            # §3.1.2.25: discard as if delivered.
            if persisted:
                self._finish(s, e)
            self.stats.dropped("too_large", 1, f"for {s.client_id!r} on {msg.topic}")
            return
        e.packet_id = pid
        e.state = SENT
        s.inflight[pid] = e
        if s.stored and (not persisted or e.qos == 2):
            # QoS 2 needs its packet id durable before the PUBLISH leaves (exactly once). An
            # already stored QoS 1 entry does not: after a crash it is simply sent again,
            # under a new packet id, which QoS 1 allows; that saves a write per delivery.
            if not persisted:
                self._ref(msg)
            self._store.append(PutQueueEntry(e.record(s.client_id)))
        self._actions.append(Send(conn.conn_id, out))
        self.stats.publish_sent += 1

    def _enqueue(
        self, s: Session, msg: Message, qos: int, retain: bool, sub_ids: tuple[int, ...]
    ) -> bool:
        limits = s.limits
        size = len(msg.payload)
        queue = s.queue
        max_messages = limits.max_messages
        max_bytes = limits.max_bytes
        if (max_messages and queue.count >= max_messages) or (
            max_bytes and queue.bytes + size > max_bytes
        ):
            if limits.overflow is Overflow.REJECT_NEW or (max_bytes and size > max_bytes):
                self.stats.dropped(
                    "queue_full",
                    1,
                    f"queue of {s.client_id!r} full, new message on {msg.topic} refused",
                )
                return False
            dropped = 0
            while queue.count and (
                (max_messages and queue.count >= max_messages)
                or (max_bytes and queue.bytes + size > max_bytes)
            ):
                oldest = queue.popleft()
                if oldest is None:
                    break
                self._finish(s, oldest)
                dropped += 1
            self.stats.dropped(
                "queue_full", dropped, f"queue of {s.client_id!r} full, oldest message(s) dropped"
            )
        seq = self._next_seq
        self._next_seq = seq + 1
        e = QEntry(seq, msg, qos, retain, sub_ids)
        queue.append(e)
        if s.stored:
            self._ref(msg)
            self._store.append(PutQueueEntry(e.record(s.client_id)))
        if msg.expires_at is not None:
            heapq.heappush(self._queue_expiry, (msg.expires_at, seq, s, e))
        return True

    def _pump(self, conn: Connection, s: Session, now: float) -> None:
        """Move queued entries into flight while the window allows."""
        queue = s.queue
        inflight = s.inflight
        window = conn.window
        stored = s.stored
        while queue.count and len(inflight) < window:
            e = queue.popleft()
            if e is None:
                break
            msg = e.message
            if msg.expires_at is not None and msg.expires_at <= now:
                self._finish(s, e)
                self.stats.dropped("expired", 1, f"queued for {s.client_id!r} on {msg.topic}")
                continue
            if e.qos == 0:
                self._send_qos0(conn, s, msg, e.retain, e.sub_ids, now)
                self._finish(s, e)
                continue
            self._transmit(conn, s, e, now, stored)

    def _finish(self, s: Session, e: QEntry) -> None:
        """An entry is done (acknowledged or discarded): forget it durably."""
        if s.stored:
            self._store.append(DeleteQueueEntry(s.client_id, e.seq))
            self._unref(e.message.msg_id)

    def _ref(self, msg: Message) -> None:
        refs = self._msg_refs
        n = refs.get(msg.msg_id)
        if n is None:
            refs[msg.msg_id] = 1
            self._store.append(PutMessage(msg))
        else:
            refs[msg.msg_id] = n + 1

    def _unref(self, msg_id: int) -> None:
        refs = self._msg_refs
        n = refs.get(msg_id, 0) - 1
        if n > 0:
            refs[msg_id] = n
        else:
            refs.pop(msg_id, None)
            self._store.append(DeleteMessage(msg_id))

    def _new_msg_id(self) -> int:
        msg_id = self._next_msg_id
        self._next_msg_id = msg_id + 1
        return msg_id

    # ============================================================================ acks

    def _on_puback(self, conn: Connection, s: Session, pid: int, now: float) -> None:
        e = s.inflight.get(pid)
        if e is None or e.qos != 1:
            return  # unknown ids are tolerated (e.g. acks for a session that was reset)
        del s.inflight[pid]
        if s.stored:
            self._store.append(DeleteQueueEntry(s.client_id, e.seq))
            self._unref(e.message.msg_id)
        if s.queue:
            self._pump(conn, s, now)

    def _on_pubrec(self, conn: Connection, s: Session, p: PubRec, now: float) -> None:
        pid = p.packet_id
        e = s.inflight.get(pid)
        if e is None or e.qos != 2:
            if p.reason_code < 0x80:
                self._send(conn.conn_id, PubRel(pid, _PID_NOT_FOUND if conn.v5 else 0))
            return
        if e.state is RELEASED:
            self._send(conn.conn_id, PubRel(pid))  # a duplicate PUBREC
            return
        if p.reason_code >= 0x80:
            del s.inflight[pid]  # the receiver refused it: the exchange is over
            self._finish(s, e)
            if s.queue:
                self._pump(conn, s, now)
            return
        e.state = RELEASED
        if s.stored:
            self._store.append(PutQueueEntry(e.record(s.client_id)))
        self._send(conn.conn_id, PubRel(pid))

    def _on_pubcomp(self, conn: Connection, s: Session, pid: int, now: float) -> None:
        e = s.inflight.get(pid)
        if e is None or e.state is not RELEASED:
            return
        del s.inflight[pid]
        self._finish(s, e)
        if s.queue:
            self._pump(conn, s, now)

    def _on_pubrel(self, conn: Connection, s: Session, pid: int) -> None:
        inbound = s.inbound_qos2
        if pid in inbound:
            inbound.discard(pid)
            if s.stored:
                self._store.append(DeleteInboundQos2(s.client_id, pid))
            self._send(conn.conn_id, PubComp(pid))
        else:
            self._send(conn.conn_id, PubComp(pid, _PID_NOT_FOUND if conn.v5 else 0))

    # ============================================================================ SUBSCRIBE

    def _on_subscribe(self, conn: Connection, s: Session, p: Subscribe, now: float) -> None:
        settings = self.settings
        v5 = conn.v5
        sub_id: int | None = None
        if v5 and p.properties.subscription_identifiers:
            if not settings.subscription_identifiers:
                self._violation(conn, ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED, now)
                return
            sub_id = p.properties.subscription_identifiers[0]
        client_id = s.client_id
        codes: list[int] = []
        retained_for: list[tuple[SubscriptionRecord, str]] = []
        for sub in p.subscriptions:
            f = sub.topic_filter
            parts = split_shared(f)
            code = 0
            group: str | None = None
            if parts is None or not valid_filter(parts[1]):
                code = ReasonCode.TOPIC_FILTER_INVALID
            else:
                group, inner = parts
                if group is not None:
                    if sub.no_local:
                        self._violation(conn, _PROTOCOL_ERROR, now)  # §3.8.3.1
                        return
                    if not settings.shared_subscriptions:
                        code = ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
                if not code and not settings.wildcard_subscriptions and has_wildcard(inner):
                    code = ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
                if (
                    not code
                    and settings.max_topic_levels
                    and inner.count("/") >= settings.max_topic_levels
                ):
                    code = ReasonCode.TOPIC_FILTER_INVALID
                if not code:
                    code = self.authorizer.subscribe_refusal(s.username, client_id, f)
            if code:
                codes.append(code if v5 else 0x80)
                continue
            granted = min(sub.qos, settings.max_qos)
            rec = SubscriptionRecord(
                client_id,
                f,
                granted,
                sub.no_local,
                sub.retain_as_published,
                sub.retain_handling,
                sub_id,
            )
            new = self._tree.add(rec)
            s.subscriptions[f] = rec
            if s.stored:
                self._store.append(PutSubscription(rec))
            codes.append(granted)
            # Retained messages are not sent for shared subscriptions (§4.8.2).
            if group is None and (sub.retain_handling == 0 or (sub.retain_handling == 1 and new)):
                retained_for.append((rec, inner))
        self._send(conn.conn_id, SubAck(p.packet_id, tuple(codes)))
        for rec, inner in retained_for:
            ids = () if rec.subscription_id is None else (rec.subscription_id,)
            for msg in self._retained.matching(inner, now):
                if self._acl and not self.authorizer.can_receive(s.username, client_id, msg.topic):
                    continue
                self._deliver(s, msg, min(msg.qos, rec.qos), True, ids, now)

    def _on_unsubscribe(self, conn: Connection, s: Session, p: Unsubscribe) -> None:
        codes: list[int] = []
        client_id = s.client_id
        for f in p.topic_filters:
            if s.subscriptions.pop(f, None) is None:
                valid = (parts := split_shared(f)) is not None and valid_filter(parts[1])
                codes.append(
                    ReasonCode.NO_SUBSCRIPTION_EXISTED if valid else ReasonCode.TOPIC_FILTER_INVALID
                )
                continue
            self._tree.remove(client_id, f)
            if s.stored:
                self._store.append(DeleteSubscription(client_id, f))
            codes.append(0)
        self._send(conn.conn_id, UnsubAck(p.packet_id, tuple(codes) if conn.v5 else ()))

    # ============================================================================ endings

    def _on_disconnect(self, conn: Connection, s: Session, p: Disconnect, now: float) -> None:
        will: Will | None = None
        if conn.v5:
            new_expiry = p.properties.session_expiry_interval
            if new_expiry is not None:
                if conn.requested_expiry == 0 and new_expiry > 0:
                    # §3.14.2.2.2: not a valid DISCONNECT, so the will still applies.
                    self._violation(conn, _PROTOCOL_ERROR, now)
                    return
                s.expiry = min(new_expiry, self.settings.max_session_expiry)
            if p.reason_code == ReasonCode.DISCONNECT_WITH_WILL:
                will = conn.will
        conn.will = None
        self._conns.pop(conn.conn_id, None)
        self._close(conn.conn_id)
        self._unlink(conn)
        self._after_disconnect(s, will, now)

    def _violation(self, conn: Connection, reason_code: int, now: float) -> None:
        self.stats.protocol_violations += 1
        self._conns.pop(conn.conn_id, None)
        if conn.session is not None and conn.v5:
            self._send(conn.conn_id, Disconnect(reason_code))
        self._close(conn.conn_id)
        s = self._unlink(conn)
        if s is not None:
            self._after_disconnect(s, conn.will, now)

    def _unlink(self, conn: Connection) -> Session | None:
        s = conn.session
        conn.session = None
        if s is not None and s.conn is conn:
            s.conn = None
            self._online -= 1
            return s
        return None

    def _after_disconnect(
        self, s: Session, will: Will | None, now: float, takeover: bool = False
    ) -> None:
        """The session lost its connection at ``now``; ``will`` is what must be published
        for it (None after a normal DISCONNECT)."""
        s.disconnected_at = now
        if will is not None:
            delay = _will_delay(will, s.version)
            if delay > 0 and (takeover or s.expiry > 0):
                # §3.1.3.2.2: published when the delay or the session ends, whichever first;
                # cancelled if the session gets a new connection before that.
                s.will = will
                s.will_due_at = now + (delay if takeover else min(delay, s.expiry))
                heapq.heappush(self._timers, (s.will_due_at, _WILL, s.client_id))
            else:
                self._publish_will(s.client_id, will, now)
        if takeover:
            return  # the new connection decides what becomes of the session
        if s.expiry == 0:
            self._end_session(s, now)
            return
        if s.stored:
            self._store.append(PutSession(s.record()))
        expires = s.expires_at()
        if expires is not None:
            heapq.heappush(self._timers, (expires, _EXPIRY, s.client_id))

    def _end_session(self, s: Session, now: float, expired: bool = False) -> None:
        client_id = s.client_id
        if self._sessions.get(client_id) is s:
            del self._sessions[client_id]
        for f in s.subscriptions:
            self._tree.remove(client_id, f)
        if s.stored:
            self._unstore_session(s)
        if expired and (s.queue or s.inflight):
            self.stats.dropped(
                "session_expired",
                len(s.queue) + len(s.inflight),
                f"session {client_id!r} expired with messages still queued",
            )
        if s.will is not None:
            will = s.will
            s.will = None
            s.will_due_at = None
            self._publish_will(client_id, will, now)

    def _publish_will(self, client_id: str, will: Will, now: float) -> None:
        self.stats.wills_published += 1
        props = will.properties
        if props is not NO_PROPERTIES:
            if props.will_delay_interval is not None:
                props = replace(props, will_delay_interval=None)
            props = _inbound_properties(props)
        mei = props.message_expiry_interval
        expires_at = None if mei is None else now + mei
        qos = min(will.qos, self.settings.max_qos)
        retain = will.retain and self.settings.retain_available
        self._accept(
            None, will.topic, will.payload, qos, retain, props, expires_at, client_id, now, None
        )

    # ============================================================================ store

    def _store_session(self, s: Session) -> None:
        """A session became persistent: write all of it."""
        store = self._store
        client_id = s.client_id
        store.append(PutSession(s.record()))
        for rec in s.subscriptions.values():
            store.append(PutSubscription(rec))
        for e in sorted(chain(s.inflight.values(), s.queue), key=lambda e: e.seq):
            self._ref(e.message)
            store.append(PutQueueEntry(e.record(client_id)))
        for pid in s.inbound_qos2:
            store.append(PutInboundQos2(client_id, pid))
        s.stored = True

    def _unstore_session(self, s: Session) -> None:
        self._store.append(DeleteSession(s.client_id))
        for e in chain(s.inflight.values(), s.queue):
            self._unref(e.message.msg_id)
        s.stored = False

    # ============================================================================ helpers

    def _send(self, conn_id: int, packet: Packet) -> None:
        self._actions.append(Send(conn_id, packet))

    def _close(self, conn_id: int) -> None:
        self._actions.append(Close(conn_id))
        self._non_send += 1

    def _clock(self, now: float) -> None:
        self._now = now
        if self._started_at is None:
            self._started_at = now
            if self.settings.sys_interval > 0:
                self._next_sys = now + self.settings.sys_interval

    def _version_text(self) -> str:
        return f"{self.server_name} {VERSION}"


# ================================================================================ functions


def _is_sys(topic: str) -> bool:
    return topic == "$SYS" or topic.startswith("$SYS/")


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _will_delay(will: Will, version: int) -> int:
    if version != PROTOCOL_V5:
        return 0
    return will.properties.will_delay_interval or 0


def _inbound_properties(props: Properties) -> Properties:
    """The publication properties to keep: a topic alias or subscription identifiers that
    came in are per-hop, not part of the message."""
    if props.topic_alias is not None or props.subscription_identifiers:
        return replace(props, topic_alias=None, subscription_identifiers=())
    return props


def _delivery_props(
    props: Properties, sub_ids: tuple[int, ...], expires_at: float | None, now: float
) -> Properties:
    if expires_at is None:
        return replace(props, subscription_identifiers=sub_ids)
    # §3.3.2.3.3: the interval less the time the message waited here (never 0: that would
    # read as "no time left" to some clients while we still deliver it).
    remaining = max(1, int(expires_at - now + 0.5))
    return replace(props, subscription_identifiers=sub_ids, message_expiry_interval=remaining)


def _vbi_len(n: int) -> int:
    if n < 128:
        return 1
    if n < 16384:
        return 2
    if n < 2097152:
        return 3
    return 4


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _properties_size(props: Properties) -> int:
    if props is NO_PROPERTIES:
        return 1
    n = 0
    if props.payload_format_indicator is not None:
        n += 2
    if props.message_expiry_interval is not None:
        n += 5
    if props.content_type is not None:
        n += 3 + _utf8_len(props.content_type)
    if props.response_topic is not None:
        n += 3 + _utf8_len(props.response_topic)
    if props.correlation_data is not None:
        n += 3 + len(props.correlation_data)
    for sid in props.subscription_identifiers:
        n += 1 + _vbi_len(sid)
    if props.topic_alias is not None:
        n += 3
    for key, value in props.user_properties:
        n += 5 + _utf8_len(key) + _utf8_len(value)
    return _vbi_len(n) + n


def publish_size(packet: Publish, v5: bool) -> int:
    """Encoded size of a PUBLISH (before any outbound topic alias is applied)."""
    remaining = 2 + _utf8_len(packet.topic) + len(packet.payload)
    if packet.qos:
        remaining += 2
    if v5:
        remaining += _properties_size(packet.properties)
    return 1 + _vbi_len(remaining) + remaining
