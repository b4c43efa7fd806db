"""The broker core: the API its asyncio shell (gateway.server) calls.

Pure logic. The shell feeds it packets and the time, and performs what it asks for, in
order, after committing the store operations it emitted (see ``effects.Effects``). Because
every packet the broker produces while handling one input is released only after that
input's store operations are durable, a PUBACK never overtakes the write it acknowledges.

A session is *persistent* when its expiry interval is > 0; only persistent sessions are
mirrored in the store (``Session.stored``), so clean sessions never cost a write.

``Broker`` is composed of parts, each owning its data (parts.Parts holds them):

    SessionTable  session_table.py  sessions, connections, who is online
    Router        router.py         subscription tree, shared groups, retained, ACL scope
    Outbox        outbox.py         per session: queue, in-flight window, acks, redelivery
    Ledger        ledger.py         store operations of a step, message reference counts
    Timers        timers.py         will delays, session expiry, queued-message expiry
    Journal       journal.py        events and change counters for pollers
    BrokerStats   stats.py          counters and $SYS

and the inputs are functions that orchestrate them, one module per kind of input:
connect, inbound_publish, subscribe, disconnect (and wills), tick, admin, restore;
routing.py takes a Publication through the router to the outboxes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from gateway.broker import admin, connect, disconnect, inbound_publish, store_limit, subscribe
from gateway.broker.access import AllowAll, Authorizer
from gateway.broker.admin import entries_of
from gateway.broker.effects import Action, ConnectionInfo, Effects, Identity, Send
from gateway.broker.journal import Journal
from gateway.broker.ledger import Ledger
from gateway.broker.outbox import Outbox
from gateway.broker.parts import Parts, event
from gateway.broker.queue_policy import pending_list
from gateway.broker.records import Message, Snapshot, StoreOp
from gateway.broker.restore import restore
from gateway.broker.router import Publication, Router
from gateway.broker.routing import accept, inbound_properties
from gateway.broker.session import Session
from gateway.broker.session_info import SessionInfo, session_info
from gateway.broker.session_table import SessionTable
from gateway.broker.settings import BrokerSettings
from gateway.broker.stats import BrokerStats, Gauges, sys_topics
from gateway.broker.tick import run_timers
from gateway.broker.timers import Timers
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


class Broker:
    """The broker. Every method takes the current time: the core never reads a clock."""

    def __init__(
        self,
        settings: BrokerSettings,
        authorizer: Authorizer | None = None,
        server_name: str = "edge-gateway",
    ) -> None:
        self.settings = settings
        self.server_name = server_name
        self.stats = stats = BrokerStats()
        journal = Journal()
        ledger = Ledger()
        timers = Timers()
        actions: list[Action] = []
        self._p = Parts(
            settings,
            stats,
            journal,
            SessionTable(journal),
            ledger,
            timers,
            Router(
                settings.max_retained_messages,
                authorizer if authorizer is not None else AllowAll(),
                ledger,
                stats,
            ),
            Outbox(actions, stats, ledger, journal, timers),
            actions,
            connect.connack_properties(settings),
        )
        self.sessions = self._p.sessions
        # The open connections, looked up on every packet (the table keeps this dict).
        self._conns = self.sessions.conns
        self._started_at: float | None = None
        self._next_sys: float | None = None
        # Figures that live outside the core (connection layer, store), as (name, value)
        # pairs below $SYS/broker/; set by the composition root.
        self.sys_extra: Callable[[], Iterable[tuple[str, str]]] | None = None
        stats.on_drop = self._on_drop

    @property
    def authorizer(self) -> Authorizer:
        return self._p.router.authorizer

    def set_authorizer(self, authorizer: Authorizer) -> None:
        """Use ``authorizer`` from now on (also on a configuration reload)."""
        self._p.router.set_authorizer(authorizer)

    def _clock(self, now: float) -> None:
        self._p.now = now
        if self._started_at is None:
            self._started_at = now

    def _on_drop(self, reason: str, n: int, detail: str, client_id: str | None) -> None:
        p = self._p
        event(p, "dropped", client_id, f"{n} message(s), {reason}: {detail}")
        if client_id is not None:
            s = p.sessions.get(client_id)
            if s is not None:
                s.dropped += n

    # --- the step's output --------------------------------------------------------------

    def pending_store_ops(self) -> list[StoreOp]:
        """The store operations of the step so far (not taken yet); not to be changed."""
        return self._p.ledger.ops

    def take_effects(self) -> Effects:
        p = self._p
        if p.outbox.pending_dirty or p.outbox.notices:
            self._publish_reports()
        # The list itself stays: the outbox appends to the same object.
        actions = p.actions[:]
        p.actions.clear()
        store = p.ledger.take()
        self.stats.messages_sent += len(actions) - p.non_send
        p.non_send = 0
        return Effects(actions, store)

    def _publish_reports(self) -> None:
        """The pending lists and notices of trusted sessions' queue policies
        (queue_policy.py), published as part of the step that changed them. Publishing one
        can cause another (a report queued for a session with a policy): bounded."""
        outbox = self._p.outbox
        sessions = self._p.sessions
        now = self._p.now
        for _ in range(8):
            dirty, outbox.pending_dirty = outbox.pending_dirty, {}
            for s in dirty.values():
                topic = s.pending_topic
                if topic is not None and sessions.get(s.client_id) is s:
                    payload = pending_list(entries_of(s))
                    self.publish_local(topic, payload, 1, True, NO_PROPERTIES, now)
            notices, outbox.notices = outbox.notices, []
            for topic, payload in notices:
                self.publish_local(topic, payload, 1, False, NO_PROPERTIES, now)
            if not (outbox.pending_dirty or outbox.notices):
                return

    # --- inputs from the shell ----------------------------------------------------------

    def connection_opened(self, info: ConnectionInfo, now: float) -> None:
        self._clock(now)
        self._p.sessions.open(info)

    def connect(self, conn_id: int, packet: Connect, identity: Identity, now: float) -> None:
        self._clock(now)
        p = self._p
        conn = p.sessions.connection(conn_id)
        if conn is None:
            return
        self.stats.messages_received += 1
        if conn.session is not None:
            disconnect.violation(p, conn, _PROTOCOL_ERROR, now)  # a second CONNECT (§3.1.0-2)
            return
        connect.connect(p, conn, packet, identity, now)

    def handle(self, conn_id: int, packet: Packet, now: float) -> None:
        conn = self._conns.get(conn_id)
        if conn is None:
            return  # already closed by the broker; the shell may still hold packets
        p = self._p
        # Not _clock(): connection_opened() started the clock, and this is the hot path.
        p.now = now
        self.stats.messages_received += 1
        s = conn.session
        if s is None:
            disconnect.violation(p, conn, _PROTOCOL_ERROR, now)
            return
        # isinstance() narrows the type for free; typing.cast() would be a call per packet.
        if isinstance(packet, Publish):
            inbound_publish.on_publish(p, conn, s, packet, now)
        elif isinstance(packet, PubAck):
            p.outbox.puback(conn, s, packet.packet_id, now)
        elif isinstance(packet, PubRec):
            p.outbox.pubrec(conn, s, packet, now)
        elif isinstance(packet, PubRel):
            inbound_publish.on_pubrel(p, conn, s, packet.packet_id)
        elif isinstance(packet, PubComp):
            p.outbox.pubcomp(conn, s, packet.packet_id, now)
        elif isinstance(packet, Subscribe):
            subscribe.on_subscribe(p, conn, s, packet, now)
        elif isinstance(packet, Unsubscribe):
            subscribe.on_unsubscribe(p, conn, s, packet)
        elif isinstance(packet, PingReq):
            p.actions.append(Send(conn.conn_id, PingResp()))
        elif isinstance(packet, Disconnect):
            disconnect.on_disconnect(p, conn, s, packet, now)
        else:
            # CONNECT again, AUTH (no enhanced authentication is offered) or a packet only a
            # server sends.
            disconnect.violation(p, conn, _PROTOCOL_ERROR, now)

    def protocol_violation(self, conn_id: int, reason_code: int, now: float) -> None:
        self._clock(now)
        conn = self._p.sessions.connection(conn_id)
        if conn is not None:
            disconnect.violation(self._p, conn, reason_code, now)

    def connection_lost(self, conn_id: int, now: float) -> None:
        self._clock(now)
        p = self._p
        conn = p.sessions.close(conn_id)
        if conn is None:
            return
        s = p.sessions.unlink(conn)
        if s is not None:
            event(p, "disconnect", s.client_id, "connection lost")
            disconnect.after_disconnect(p, s, conn.will, now)

    def shutdown(self, now: float) -> None:
        self._clock(now)
        p = self._p
        gone: list[tuple[Session, Will | None]] = []
        # First detach everybody, so that wills published below go to sessions' queues
        # (durably, for persistent ones) and not to connections that are closing.
        for conn in list(p.sessions.conns.values()):
            s = disconnect.detach(p, conn, ReasonCode.SERVER_SHUTTING_DOWN)
            if s is not None:
                gone.append((s, conn.will))
        for s, will in gone:
            disconnect.after_disconnect(p, s, will, now)

    def tick(self, now: float) -> None:
        self._clock(now)
        run_timers(self._p, now)
        interval = self.settings.sys_interval
        if interval > 0:
            if self._next_sys is None:
                self._next_sys = (self._started_at or now) + interval
            if now >= self._next_sys:
                self._next_sys = now + interval
                self.publish_sys(now)

    def set_store_full(self, full: bool, detail: str = "") -> None:
        """The store says it is full (True) or has room again (False); ``detail`` (its size
        and limit) is for the log and the event (store_limit.py)."""
        store_limit.set_store_full(self._p, full, detail)

    @property
    def store_full(self) -> bool:
        return self._p.ledger.full

    def restore(self, snapshot: Snapshot, now: float) -> None:
        """Rebuild the durable state at start-up, before any connection is accepted."""
        self._clock(now)
        restore(self._p, snapshot, now)

    # --- the broker's own messages ------------------------------------------------------

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
            now = self._p.now
        else:
            self._clock(now)
        if not is_valid_topic_name(topic):
            raise ValueError(f"invalid topic name {topic!r}")
        qos = min(qos, self.settings.max_qos)
        props = inbound_properties(properties)
        mei = props.message_expiry_interval
        expires_at = None if mei is None else now + mei
        accept(self._p, Publication(topic, payload, qos, retain, props, expires_at, "", now))

    def publish_sys(self, now: float) -> None:
        topics = sys_topics(self.stats, self.gauges(now), f"{self.server_name} {VERSION}")
        if self.sys_extra is not None:
            topics.extend(("$SYS/broker/" + name, value) for name, value in self.sys_extra())
        for topic, value in topics:
            self.publish_local(topic, value.encode(), 0, True, NO_PROPERTIES, now)

    # --- what the shell, the admin API and pollers read ---------------------------------

    def gauges(self, now: float) -> Gauges:
        p = self._p
        connected = disconnected = queued = inflight = 0
        for s in p.sessions.by_id.values():
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
            retained=len(p.router.retained),
            subscriptions=len(p.router.tree),
            queued=queued,
            stored=p.ledger.stored_messages + len(p.router.retained),
            inflight=inflight,
        )

    def sessions_info(self) -> list[SessionInfo]:
        return [session_info(s) for s in self._p.sessions.by_id.values()]

    def session_exists(self, client_id: str) -> bool:
        return client_id in self._p.sessions

    def retained_messages(self) -> list[Message]:
        return self._p.router.retained.messages()

    def versions(self) -> tuple[int, int]:
        """(sessions, queues): counters that grow with every change of the session list and
        subscriptions, and of any session's queue or in-flight window."""
        journal = self._p.journal
        return journal.sessions_version, journal.queues_version

    def events_since(self, seq: int) -> tuple[int, list[dict[str, object]]]:
        """The last event seq and the (at most 1000 most recent) events after ``seq``."""
        return self._p.journal.since(seq)

    def stats_snapshot(self) -> dict[str, float | int]:
        """Point-in-time figures and running totals (a caller computes rates from two)."""
        return admin.stats_snapshot(self._p)

    def session_info_of(self, client_id: str) -> SessionInfo | None:
        """One session's entry of sessions_info(), without building all the others."""
        return admin.session_info_of(self._p, client_id)

    def session_packet_ids(self, client_id: str) -> tuple[frozenset[int], frozenset[int]]:
        """(packet ids in flight to the client, QoS 2 packet ids from it awaiting PUBREL)."""
        return admin.session_packet_ids(self._p, client_id)

    def queue_entries(self, client_id: str) -> list[tuple[int, Message, bool]] | None:
        """(seq, message, in flight) of the session's undelivered messages in delivery
        order; None if there is no such session."""
        return admin.queue_entries(self._p, client_id)

    # --- an administrator's actions ------------------------------------------------------

    def kick(self, client_id: str, now: float) -> bool:
        """Close the client's connection as if the link had dropped (admin.py)."""
        self._clock(now)
        return admin.kick(self._p, client_id, now)

    def delete_session(self, client_id: str, now: float) -> bool:
        """Remove the session from memory and the store, without its will (admin.py)."""
        self._clock(now)
        return admin.delete_session(self._p, client_id, now)

    def cancel_queued(self, client_id: str, seqs: Collection[int] | None, now: float) -> list[int]:
        """Remove queued (not yet sent) messages of a session durably (admin.py)."""
        self._clock(now)
        return admin.cancel_queued(self._p, client_id, seqs, now)
