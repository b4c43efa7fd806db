"""Test harness for the pure broker core: fake clients, and a store that applies the emitted
store operations with the real stores' own code (and checks their consistency)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, TypeVar

from gateway.broker.access import AllowAll
from gateway.broker.core import Broker
from gateway.broker.effects import Close, ConnectionInfo, Identity, Send, SetKeepAlive
from gateway.broker.records import (
    DeleteMessage,
    Message,
    PutInboundQos2,
    PutMessage,
    PutQueueEntry,
    PutSubscription,
    QueueEntry,
    SessionRecord,
    Snapshot,
    StoreOp,
    SubscriptionRecord,
)
from gateway.broker.settings import BrokerSettings
from gateway.mqtt.packets import (
    NO_PROPERTIES,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
)
from gateway.persistence.tables import Tables, apply

V311 = 4
V5 = 5


class FakeStore:
    """The store's own tables (persistence/tables.py states what each op does), plus checks
    only a test can afford: each op must fit what is stored, and ``check()`` asserts
    referential integrity (no leaked message, no row without its session)."""

    def __init__(self) -> None:
        self.tables = Tables()
        self.ops: list[StoreOp] = []

    def apply(self, ops: list[StoreOp]) -> None:
        for op in ops:
            self.ops.append(op)
            self._assert_fits(op)
            apply(self.tables, (op,))

    def _assert_fits(self, op: StoreOp) -> None:
        if isinstance(op, PutSubscription):
            assert op.record.client_id in self.sessions, op
        elif isinstance(op, PutMessage):
            assert op.message.msg_id not in self.messages, f"message stored twice: {op}"
        elif isinstance(op, DeleteMessage):
            assert op.msg_id in self.messages, f"deleting unknown message {op}"
        elif isinstance(op, PutQueueEntry):
            assert op.entry.client_id in self.sessions, op
            assert op.entry.msg_id in self.messages, f"entry for unknown message: {op}"
        elif isinstance(op, PutInboundQos2):
            assert op.client_id in self.sessions, op

    # Views keyed as the tests look rows up: by (client id, key) for rows a session owns.

    @property
    def sessions(self) -> dict[str, SessionRecord]:
        return _present(self.tables.sessions)

    @property
    def subscriptions(self) -> dict[tuple[str, str], SubscriptionRecord]:
        return _owned(self.tables.subscriptions)

    @property
    def messages(self) -> dict[int, Message]:
        return _present(self.tables.messages)

    @property
    def queue(self) -> dict[tuple[str, int], QueueEntry]:
        return _owned(self.tables.queue)

    @property
    def inbound(self) -> set[tuple[str, int]]:
        return set(_owned(self.tables.inbound_qos2))

    @property
    def retained(self) -> dict[str, Message]:
        return _present(self.tables.retained)

    def check(self) -> None:
        queue, messages = self.queue, self.messages
        referenced = {e.msg_id for e in queue.values()}
        assert referenced <= set(messages), "queue entry without its message"
        assert set(messages) <= referenced, f"leaked messages {set(messages) - referenced}"
        for e in queue.values():
            assert e.client_id in self.sessions
        for cid, _ in self.subscriptions:
            assert cid in self.sessions

    def snapshot(self) -> Snapshot:
        return self.tables.snapshot()


K = TypeVar("K")
R = TypeVar("R")


def _present(table: dict[K, R | None]) -> dict[K, R]:
    return {k: r for k, r in table.items() if r is not None}


def _owned(table: dict[str, dict[K, R | None]]) -> dict[tuple[str, K], R]:
    return {(cid, k): r for cid, rows in table.items() for k, r in rows.items() if r is not None}


class Harness:
    def __init__(
        self,
        settings: BrokerSettings | None = None,
        authorizer: Any = None,
        now: float = 1_000_000.0,
        store: FakeStore | None = None,
    ) -> None:
        self.settings = settings or BrokerSettings(sys_interval=0)
        self.broker = Broker(self.settings, authorizer or AllowAll())
        self.now = now
        self.store = store if store is not None else FakeStore()
        self.next_conn = 0
        self.inbox: dict[int, list[Packet]] = defaultdict(list)
        self.closed: set[int] = set()
        self.keep_alive: dict[int, int] = {}
        self.batches: list[tuple[list[StoreOp], list[Any]]] = []

    def flush(self) -> None:
        eff = self.broker.take_effects()
        self.batches.append((list(eff.store), list(eff.actions)))
        self.store.apply(eff.store)
        self.store.check()
        for action in eff.actions:
            if isinstance(action, Send):
                assert action.conn_id not in self.closed, f"send after close: {action}"
                self.inbox[action.conn_id].append(action.packet)
            elif isinstance(action, Close):
                self.closed.add(action.conn_id)
            elif isinstance(action, SetKeepAlive):
                self.keep_alive[action.conn_id] = action.seconds

    def restore(self, snapshot: Snapshot | None = None) -> None:
        self.broker.restore(snapshot or self.store.snapshot(), self.now)
        self.flush()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.broker.tick(self.now)
        self.flush()

    def open(self, trusted: bool = False) -> Client:
        self.next_conn += 1
        cid = self.next_conn
        info = ConnectionInfo(cid, "test", f"peer{cid}", trusted=trusted)
        self.broker.connection_opened(info, self.now)
        self.flush()
        return Client(self, cid)

    def connect(
        self,
        client_id: str,
        version: int = V311,
        clean: bool = True,
        expiry: int | None = None,
        will: Will | None = None,
        keep_alive: int = 60,
        properties: Properties = NO_PROPERTIES,
        identity: Identity | None = None,
        username: str | None = None,
        trusted: bool = False,
    ) -> Client:
        c = self.open(trusted)
        if expiry is not None:
            properties = _with(properties, session_expiry_interval=expiry)
        packet = Connect(
            client_id,
            protocol_version=version,
            clean_start=clean,
            keep_alive=keep_alive,
            will=will,
            username=username,
            properties=properties,
        )
        self.broker.connect(
            c.conn_id, packet, identity or Identity(ok=True, username=username), self.now
        )
        self.flush()
        c.version = version
        # The CONNACK is read; what follows it (resent publishes ...) is left for take().
        if c.all() and isinstance(c.all()[0], ConnAck):
            c.read = 1
        return c

    def publish_local(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        self.broker.publish_local(topic, payload, qos, retain, now=self.now)
        self.flush()


def _with(props: Properties, **changes: Any) -> Properties:
    from dataclasses import replace

    return replace(props, **changes)


class Client:
    def __init__(self, h: Harness, conn_id: int) -> None:
        self.h = h
        self.conn_id = conn_id
        self.version = V311
        self._pid = 0
        self.read = 0
        self.pub_read = 0

    @property
    def closed(self) -> bool:
        return self.conn_id in self.h.closed

    def all(self) -> list[Any]:
        return self.h.inbox[self.conn_id]

    def take(self) -> list[Any]:
        """Packets received since the last take()."""
        got = self.h.inbox[self.conn_id][self.read :]
        self.read = len(self.h.inbox[self.conn_id])
        return got

    def publishes(self) -> list[Publish]:
        """PUBLISH packets received since the last publishes() (independent of take())."""
        inbox = self.h.inbox[self.conn_id]
        got = [p for p in inbox[self.pub_read :] if isinstance(p, Publish)]
        self.pub_read = len(inbox)
        return got

    def send(self, packet: Packet) -> list[Any]:
        """Hand a packet to the broker; returns what this connection got in response."""
        before = len(self.h.inbox[self.conn_id])
        self.h.broker.handle(self.conn_id, packet, self.h.now)
        self.h.flush()
        self.read = len(self.h.inbox[self.conn_id])
        return self.h.inbox[self.conn_id][before:]

    def next_pid(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    def publish(
        self,
        topic: str,
        payload: bytes = b"x",
        qos: int = 0,
        retain: bool = False,
        properties: Properties = NO_PROPERTIES,
        packet_id: int | None = None,
        dup: bool = False,
    ) -> list[Any]:
        if qos and packet_id is None:
            packet_id = self.next_pid()
        return self.send(Publish(topic, payload, qos, retain, dup, packet_id, properties))

    def subscribe(
        self,
        *filters: str | Subscription,
        qos: int = 0,
        properties: Properties = NO_PROPERTIES,
    ) -> list[Any]:
        subs = tuple(f if isinstance(f, Subscription) else Subscription(f, qos) for f in filters)
        return self.send(Subscribe(self.next_pid(), subs, properties))

    def unsubscribe(self, *filters: str) -> list[Any]:
        return self.send(Unsubscribe(self.next_pid(), tuple(filters)))

    def ack(self, packet: Publish) -> list[Any]:
        """Complete the QoS flow of a received PUBLISH as a well-behaved client would."""
        assert packet.packet_id is not None
        if packet.qos == 1:
            return self.send(PubAck(packet.packet_id))
        got = self.send(PubRec(packet.packet_id))
        rels = [p for p in got if isinstance(p, PubRel)]
        assert rels and rels[0].packet_id == packet.packet_id, got
        return [p for p in got if not isinstance(p, PubRel)] + self.send(PubComp(packet.packet_id))

    def disconnect(self, reason: int = 0, properties: Properties = NO_PROPERTIES) -> list[Any]:
        return self.send(Disconnect(reason, properties))

    def lose(self) -> None:
        self.h.broker.connection_lost(self.conn_id, self.h.now)
        self.h.flush()
        self.h.closed.add(self.conn_id)


def props(**kw: Any) -> Properties:
    return Properties(**kw)


def sub(topic_filter: str, qos: int = 0, **kw: Any) -> Subscription:
    return Subscription(topic_filter, qos, **kw)


def only(packets: list[Packet], cls: type) -> list[Any]:
    return [p for p in packets if isinstance(p, cls)]
