"""Per-client state: the session (outlives connections when persistent) and the connection."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from gateway.broker.effects import ConnectionInfo
from gateway.broker.queue_policy import queue_limits
from gateway.broker.records import (
    SESSION_NEVER_EXPIRES,
    EntryState,
    Message,
    QueueEntry,
    QueuePolicy,
    SessionRecord,
    SubscriptionRecord,
)
from gateway.broker.settings import QueueLimits
from gateway.broker.shared_empty import NO_ITEMS
from gateway.mqtt.codec import publish_size
from gateway.mqtt.packets import PROTOCOL_V5, PROTOCOL_V311, Publish, Will

QUEUED = EntryState.QUEUED
SENT = EntryState.SENT
RELEASED = EntryState.RELEASED


class QEntry:
    """One outgoing message of one session (mutable twin of ``records.QueueEntry``)."""

    __slots__ = ("dead", "message", "packet_id", "qos", "retain", "seq", "state", "sub_ids")

    def __init__(
        self,
        seq: int,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        state: EntryState = QUEUED,
        packet_id: int | None = None,
    ) -> None:
        self.seq = seq
        self.message = message
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.state = state
        self.packet_id = packet_id
        self.dead = False  # removed from the middle of its queue (see EntryQueue.discard)

    def record(self, client_id: str) -> QueueEntry:
        return QueueEntry(
            client_id,
            self.seq,
            self.message.msg_id,
            self.qos,
            self.state,
            self.packet_id,
            self.retain,
            self.sub_ids,
        )


class EntryQueue:
    """A session's not-yet-sent entries in delivery order.

    A deque with lazy deletion: entries that expire in the middle are only marked, and
    skipped when they reach the front. (A dict keyed by seq looks simpler, but popping its
    first item over and over is quadratic in CPython.) The deque exists only while the queue
    holds something: an empty one costs 600 bytes, times every idle client.
    """

    __slots__ = ("_entries", "bytes", "count")

    def __init__(self) -> None:
        self._entries: deque[QEntry] | None = None
        self.count = 0  # live entries
        self.bytes = 0  # payload bytes of live entries

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def __iter__(self) -> Iterator[QEntry]:
        return (e for e in self._entries or () if not e.dead)

    def append(self, e: QEntry) -> None:
        if self._entries is None:
            _refuse_if(self is NO_ENTRIES)
            self._entries = deque()
        self._entries.append(e)
        self.count += 1
        self.bytes += len(e.message.payload)

    def popleft(self) -> QEntry | None:
        entries = self._entries
        while entries:
            e = entries.popleft()
            if not e.dead:
                self.count -= 1
                self.bytes -= len(e.message.payload)
                if not entries:
                    self._entries = None
                return e
        self._entries = None
        return None

    def appendleft(self, e: QEntry) -> None:
        if self._entries is None:
            _refuse_if(self is NO_ENTRIES)
            self._entries = deque()
        self._entries.appendleft(e)
        self.count += 1
        self.bytes += len(e.message.payload)

    def discard(self, e: QEntry) -> None:
        """Remove an entry that is still queued (anywhere in the queue)."""
        if not e.dead:
            e.dead = True
            self.count -= 1
            self.bytes -= len(e.message.payload)
            if not self.count:
                self._entries = None


def _refuse_if(shared: bool) -> None:
    # Checked only where an empty holder makes its container, so it costs nothing per item.
    if shared:
        raise TypeError("this empty container is shared: give the session its own first")


class PacketIds:
    """A set of packet ids that holds no set while empty (an empty set costs 216 bytes, and
    most clients never have a QoS 2 message of theirs half received)."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: set[int] | None = None

    def __contains__(self, pid: object) -> bool:
        return self._ids is not None and pid in self._ids

    def __len__(self) -> int:
        return 0 if self._ids is None else len(self._ids)

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids or ())

    def __eq__(self, other: object) -> bool:  # compares like the set it stands for
        if isinstance(other, PacketIds):
            return set(self) == set(other)
        if isinstance(other, (set, frozenset)):
            return set(self) == other
        return NotImplemented

    def add(self, pid: int) -> None:
        if self._ids is None:
            _refuse_if(self is NO_PACKET_IDS)
            self._ids = {pid}
        else:
            self._ids.add(pid)

    def discard(self, pid: int) -> None:
        if self._ids is not None:
            self._ids.discard(pid)
            if not self._ids:
                self._ids = None


# The queue and QoS 2 ids of every session that has none, shared as NO_ITEMS is
# (shared_empty.py): 96 B per idle client. Taking from them finds nothing; adding raises.
NO_ENTRIES = EntryQueue()
NO_PACKET_IDS = PacketIds()


class Connection:
    """A network connection as the broker sees it, from connection_opened to its end."""

    __slots__ = (
        "conn_id",
        "info",
        "keep_alive",
        "max_packet_size",
        "requested_expiry",
        "session",
        "v5",
        "will",
        "window",
    )

    def __init__(self, info: ConnectionInfo) -> None:
        self.conn_id = info.conn_id
        self.info = info
        self.session: Session | None = None  # set once the CONNECT is accepted
        self.v5 = False
        self.will: Will | None = None
        self.keep_alive = 0
        self.window = 1  # QoS 1/2 deliveries in flight at most
        self.max_packet_size = 0  # the client's Maximum Packet Size; 0 = no limit
        self.requested_expiry = 0  # Session Expiry Interval asked for in the CONNECT

    def too_large(self, packet: Publish) -> bool:
        """Would ``packet`` exceed the client's Maximum Packet Size (§3.1.2.25)?"""
        if not self.max_packet_size:
            return False
        version = PROTOCOL_V5 if self.v5 else PROTOCOL_V311
        return publish_size(packet, version) > self.max_packet_size


class Session:
    """An MQTT session. ``persistent`` sessions (expiry > 0) are mirrored in the store."""

    __slots__ = (
        "acl_exempt",
        "client_id",
        "conn",
        "disconnected_at",
        "dropped",
        "expiry",
        "inbound_qos2",
        "inflight",
        "limits",
        "next_packet_id",
        "notify_topic",
        "owner",
        "pending_topic",
        "policy",
        "queue",
        "stored",
        "subscriptions",
        "username",
        "version",
        "will",
        "will_due_at",
    )

    def __init__(
        self,
        client_id: str,
        expiry: int,
        version: int,
        username: str | None,
        limits: QueueLimits,
        owner: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.expiry = expiry
        self.version = version
        self.username = username
        self.owner = owner  # records.SessionRecord.owner
        # Trusted clients (the gateway's own device sessions, admins) skip the ACL. Not
        # stored: a restored session is checked until its client connects again.
        self.acl_exempt = False
        # Where the broker reports what happened to queued messages it did not deliver
        # (superseded, expired, dropped); set by trusted clients, None = not reported.
        self.notify_topic: str | None = None
        # Where a retained list of its undelivered messages is kept current; None = nowhere.
        self.pending_topic: str | None = None
        # The trusted client's queue policy these limits and topics came from (stored).
        self.policy: QueuePolicy | None = None
        self.limits = limits
        self.conn: Connection | None = None
        self.disconnected_at: float | None = None
        # The will still to be published for the last connection (delayed or pending).
        self.will: Will | None = None
        self.will_due_at: float | None = None
        # NO_ITEMS until the first subscription / the first message in flight (each write
        # site makes the dict): most idle clients have neither.
        self.subscriptions: dict[str, SubscriptionRecord] = NO_ITEMS
        self.queue = NO_ENTRIES  # not yet sent, in delivery order; its own from the first
        # Sent and unacknowledged, keyed by packet id, in the order they were sent.
        self.inflight: dict[int, QEntry] = NO_ITEMS
        self.inbound_qos2 = NO_PACKET_IDS
        self.next_packet_id = 1
        self.stored = False  # the store currently holds this session
        # Messages meant for this session that the broker dropped (queue limits, expiry,
        # size), since the process started; not stored. The upstream bridge reports its own.
        self.dropped = 0

    @property
    def persistent(self) -> bool:
        return self.expiry > 0

    def expires_at(self) -> float | None:
        """When this offline session ends; None while connected or if it never expires."""
        if self.conn is not None or self.disconnected_at is None:
            return None
        if self.expiry == SESSION_NEVER_EXPIRES:
            return None
        return self.disconnected_at + self.expiry

    def allocate_packet_id(self) -> int:
        pid = self.next_packet_id
        inflight = self.inflight
        while pid in inflight:
            pid = pid % 65535 + 1
        self.next_packet_id = pid % 65535 + 1
        return pid

    def use_policy(self, policy: QueuePolicy | None, base: QueueLimits) -> None:
        """Run the queue on ``base`` (config.yaml's limits) as ``policy`` amends it."""
        self.policy = policy
        self.limits = queue_limits(base, policy)
        if policy is None:
            self.notify_topic = self.pending_topic = None
        else:
            self.notify_topic = policy.notify_topic
            self.pending_topic = policy.pending_topic

    def record(self) -> SessionRecord:
        # While connected the record holds the connection's will: after a crash it is due.
        will = self.conn.will if self.conn is not None else self.will
        return SessionRecord(
            self.client_id,
            self.expiry,
            self.version,
            self.username,
            self.disconnected_at,
            will,
            self.policy,
            self.owner,
        )
