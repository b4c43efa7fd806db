"""The outbox: per session, what goes out and what comes back. A session's queue, its
in-flight window, the subscriber's acknowledgements, redelivery on reconnect, and the
reports a trusted session's queue policy asks for (queue_policy.py).

Queue limits count messages not yet sent (QUEUED); the in-flight window is bounded by the
receive maximum / ``max_inflight_out`` instead. While the store is full (store_limit.py) a
message that would be stored for a session follows that session's overflow policy.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.broker.effects import Action, Send, new_action
from gateway.broker.journal import Journal
from gateway.broker.ledger import Ledger
from gateway.broker.queue_policy import json_keys, notice
from gateway.broker.records import Message
from gateway.broker.session import (
    NO_ENTRIES,
    QUEUED,
    RELEASED,
    SENT,
    Connection,
    EntryQueue,
    QEntry,
    Session,
)
from gateway.broker.settings import Overflow, QueueLimits
from gateway.broker.shared_empty import NO_ITEMS
from gateway.broker.stats import BrokerStats
from gateway.broker.timers import Timers
from gateway.mqtt.packets import Properties, PubRec, PubRel, new_publish
from gateway.mqtt.reason_codes import ReasonCode

_PID_NOT_FOUND = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND.value


class Outbox:
    def __init__(
        self,
        actions: list[Action],
        stats: BrokerStats,
        ledger: Ledger,
        journal: Journal,
        timers: Timers,
    ) -> None:
        self._actions = actions  # the broker's output list (the same object for its life)
        self._stats = stats
        self._ledger = ledger
        self._journal = journal
        self._timers = timers
        # (topic, payload) notices about undelivered queued messages, published at the end
        # of the current step so that routing never re-enters itself.
        self.notices: list[tuple[str, bytes]] = []
        # Sessions whose pending list (Session.pending_topic) must be published again.
        self.pending_dirty: dict[str, Session] = {}

    def pending_changed(self, s: Session) -> None:
        if s.pending_topic is not None:
            self.pending_dirty[s.client_id] = s

    def notify(self, s: Session, kind: str, msg: Message, now: float, **extra: object) -> None:
        if s.notify_topic is not None:
            self.notices.append((s.notify_topic, notice(kind, msg, now, **extra)))

    def finish(self, s: Session, e: QEntry) -> None:
        """An entry is done (acknowledged or discarded): forget it durably."""
        self._journal.queues_version += 1
        if s.pending_topic is not None:
            self.pending_changed(s)
        if s.stored:  # the check here saves a call per message of a clean session
            self._ledger.drop_entry(s, e)

    def deliver(
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
        if conn is not None and conn.window:
            if qos == 0:
                self._send_qos0(conn, s, msg, retain, sub_ids, now)
                return True
            if not s.queue.count and len(s.inflight) < conn.window:
                if s.stored and self._ledger.full and not self._room_for(s, msg, now):
                    return False
                seq = self._ledger.new_seq()
                self._transmit(conn, s, QEntry(seq, msg, qos, retain, sub_ids), now, False)
                return True
        elif qos == 0 and conn is None and not s.limits.queue_qos0:
            self._stats.dropped_qos0_offline += 1
            return True
        return self._enqueue(s, msg, qos, retain, sub_ids, now)

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
            props = delivery_properties(props, sub_ids, msg.expires_at, now)
        out = new_publish(msg.topic, msg.payload, 0, retain, False, None, props)
        if conn.max_packet_size and conn.too_large(out):  # the check first: hot path
            self._stats.dropped("too_large", 1, f"for {s.client_id!r} on {msg.topic}", s.client_id)
            return
        self._actions.append(new_action(Send, (conn.conn_id, out)))
        self._stats.publish_sent += 1

    def _transmit(
        self, conn: Connection, s: Session, e: QEntry, now: float, persisted: bool
    ) -> None:
        """Send a QoS 1/2 entry that is not in flight yet (``persisted``: already stored)."""
        msg = e.message
        pid = s.allocate_packet_id()
        props = msg.properties
        if conn.v5 and (e.sub_ids or msg.expires_at is not None):
            props = delivery_properties(props, e.sub_ids, msg.expires_at, now)
        out = new_publish(msg.topic, msg.payload, e.qos, e.retain, False, pid, props)
        if conn.max_packet_size and conn.too_large(out):  # the check first: hot path
            # §3.1.2.25: discard as if delivered.
            if persisted:
                self.finish(s, e)
            self._stats.dropped("too_large", 1, f"for {s.client_id!r} on {msg.topic}", s.client_id)
            return
        e.packet_id = pid
        e.state = SENT
        if s.inflight is NO_ITEMS:
            s.inflight = {}
        s.inflight[pid] = e
        self._journal.queues_version += 1
        if s.pending_topic is not None:
            self.pending_changed(s)
        if s.stored:  # the check here saves a call per message of a clean session
            if not persisted:
                self._ledger.add_entry(s, e)
            elif e.qos == 2:
                # QoS 2 needs its packet id durable before the PUBLISH leaves (exactly
                # once). An already stored QoS 1 entry does not: after a crash it is simply
                # sent again, under a new packet id, which QoS 1 allows; that saves a write
                # per delivery.
                self._ledger.put_entry(s, e)
        self._actions.append(new_action(Send, (conn.conn_id, out)))
        self._stats.publish_sent += 1

    def _enqueue(
        self,
        s: Session,
        msg: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        now: float,
    ) -> bool:
        if s.stored and self._ledger.full and not self._room_for(s, msg, now):
            return False  # before coalescing: a message not stored supersedes nothing
        limits = s.limits
        if limits.coalesce or limits.default_expiry:
            msg = self._apply_policy(s, msg, limits, now)
        queue = s.queue
        max_messages, max_bytes = limits.max_messages, limits.max_bytes
        full = (max_messages and queue.count >= max_messages) or (
            max_bytes and queue.bytes + len(msg.payload) > max_bytes
        )
        if full and not self._make_room(s, msg, limits, now):
            return False
        seq = self._ledger.new_seq()
        e = QEntry(seq, msg, qos, retain, sub_ids)
        if queue is NO_ENTRIES:
            queue = s.queue = EntryQueue()
        queue.append(e)
        self._journal.queues_version += 1
        if s.pending_topic is not None:
            self.pending_changed(s)
        if s.stored:  # the check here saves a call per message of a clean session
            self._ledger.add_entry(s, e)
        if msg.expires_at is not None:
            self._timers.entry_expires(msg.expires_at, s, e)
        return True

    def _make_room(self, s: Session, msg: Message, limits: QueueLimits, now: float) -> bool:
        """The queue is full: drop its oldest entries until ``msg`` fits (True), or refuse
        ``msg`` (False) under REJECT_NEW or when it alone is over the byte limit."""
        queue, size = s.queue, len(msg.payload)
        max_messages, max_bytes = limits.max_messages, limits.max_bytes
        if limits.overflow is Overflow.REJECT_NEW or (max_bytes and size > max_bytes):
            self._stats.dropped(
                "queue_full",
                1,
                f"queue of {s.client_id!r} full, new message on {msg.topic} refused",
                s.client_id,
            )
            self.notify(s, "dropped", msg, now, reason="queue_full")
            return False
        dropped = 0
        while queue.count and (
            (max_messages and queue.count >= max_messages)
            or (max_bytes and queue.bytes + size > max_bytes)
        ):
            oldest = queue.popleft()
            if oldest is None:
                break
            oldest.dead = True  # out of the queue: its expiry must not drop it again
            self.finish(s, oldest)
            self.notify(s, "dropped", oldest.message, now, reason="queue_full")
            dropped += 1
        self._stats.dropped(
            "queue_full",
            dropped,
            f"queue of {s.client_id!r} full, oldest message(s) dropped",
            s.client_id,
        )
        return True

    def _apply_policy(self, s: Session, msg: Message, limits: QueueLimits, now: float) -> Message:
        """A trusted client's queue policy (queue_policy.py): a default time-to-live, and
        coalescing of not yet sent messages that this one makes obsolete."""
        if limits.default_expiry and msg.expires_at is None:
            # The message may be shared with other sessions: this one gets its own copy.
            msg = replace(
                msg, msg_id=self._ledger.new_msg_id(), expires_at=now + limits.default_expiry
            )
        if limits.coalesce:
            keys = json_keys(msg.payload)
            if keys:
                obsolete = [
                    e
                    for e in s.queue
                    if e.message.topic == msg.topic
                    and (old := json_keys(e.message.payload)) is not None
                    and old <= keys
                ]
                for e in obsolete:
                    s.queue.discard(e)
                    self.finish(s, e)
                    self.notify(s, "superseded", e.message, now)
        return msg

    def pump(self, conn: Connection, s: Session, now: float) -> None:
        """Move queued entries into flight while the window allows."""
        queue = s.queue
        window = conn.window
        stored = s.stored
        # s.inflight read each time: the first _transmit replaces NO_ITEMS with a dict.
        while queue.count and len(s.inflight) < window:
            e = queue.popleft()
            if e is None:
                break
            msg = e.message
            if msg.expires_at is not None and msg.expires_at <= now:
                self.finish(s, e)
                self._stats.dropped(
                    "expired", 1, f"queued for {s.client_id!r} on {msg.topic}", s.client_id
                )
                self.notify(s, "expired", msg, now)
                continue
            if e.qos == 0:
                self._send_qos0(conn, s, msg, e.retain, e.sub_ids, now)
                self.finish(s, e)
                continue
            self._transmit(conn, s, e, now, stored)

    def resume(self, conn: Connection, s: Session, now: float) -> None:
        """Resend what was in flight, in order (§4.4), then carry on with the queue."""
        cid = conn.conn_id
        for pid, e in list(s.inflight.items()):
            if e.state is RELEASED:
                self._actions.append(Send(cid, PubRel(pid)))
                continue
            msg = e.message
            props = msg.properties
            if conn.v5 and (e.sub_ids or msg.expires_at is not None):
                props = delivery_properties(props, e.sub_ids, msg.expires_at, now)
            out = new_publish(msg.topic, msg.payload, e.qos, e.retain, True, pid, props)
            if conn.max_packet_size and conn.too_large(out):  # the check first: hot path
                del s.inflight[pid]
                self.finish(s, e)
                self._stats.dropped(
                    "too_large", 1, f"for {s.client_id!r} on {msg.topic}", s.client_id
                )
                continue
            self._actions.append(new_action(Send, (cid, out)))
            self._stats.publish_sent += 1
        if s.queue:
            self.pump(conn, s, now)

    def puback(self, conn: Connection, s: Session, pid: int, now: float) -> None:
        e = s.inflight.get(pid)
        if e is None or e.qos != 1:
            return  # unknown ids are tolerated (e.g. acks for a session that was reset)
        del s.inflight[pid]
        self._journal.queues_version += 1
        if s.pending_topic is not None:
            self.pending_changed(s)
        if s.stored:  # the check here saves a call per message of a clean session
            self._ledger.drop_entry(s, e)  # finish() inlined: one call less on the QoS 1 path
        if s.queue:
            self.pump(conn, s, now)

    def pubrec(self, conn: Connection, s: Session, p: PubRec, now: float) -> None:
        pid = p.packet_id
        e = s.inflight.get(pid)
        if e is None or e.qos != 2:
            if p.reason_code < 0x80:
                self._actions.append(
                    Send(conn.conn_id, PubRel(pid, _PID_NOT_FOUND if conn.v5 else 0))
                )
            return
        if e.state is RELEASED:
            self._actions.append(Send(conn.conn_id, PubRel(pid)))  # a duplicate PUBREC
            return
        if p.reason_code >= 0x80:
            del s.inflight[pid]  # the receiver refused it: the exchange is over
            self.finish(s, e)
            if s.queue:
                self.pump(conn, s, now)
            return
        e.state = RELEASED
        self._journal.queues_version += 1
        self._ledger.put_entry(s, e)
        self._actions.append(Send(conn.conn_id, PubRel(pid)))

    def pubcomp(self, conn: Connection, s: Session, pid: int, now: float) -> None:
        e = s.inflight.get(pid)
        if e is None or e.state is not RELEASED:
            return
        del s.inflight[pid]
        self.finish(s, e)
        if s.queue:
            self.pump(conn, s, now)

    def _room_for(self, s: Session, msg: Message, now: float) -> bool:
        """The store is full and ``msg`` would be stored for ``s``. With drop-oldest, drop
        the session's oldest queued messages until as many payload bytes are gone, and store
        it; else (reject-new, or nothing queued to drop) drop ``msg``. Always counted."""
        queue = s.queue
        if s.limits.overflow is Overflow.DROP_OLDEST and queue:
            need = len(msg.payload)
            freed = dropped = 0
            while queue and (not dropped or freed < need):
                oldest = queue.popleft()
                if oldest is None:
                    break
                oldest.dead = True  # out of the queue: its expiry must not drop it again
                freed += len(oldest.message.payload)
                self.finish(s, oldest)
                self.notify(s, "dropped", oldest.message, now, reason="store_full")
                dropped += 1
            self._stats.dropped(
                "store_full",
                dropped,
                f"store full; oldest message(s) of {s.client_id!r} dropped for one on {msg.topic}",
                s.client_id,
            )
            return True
        self._stats.dropped(
            "store_full",
            1,
            f"store full; message on {msg.topic} for {s.client_id!r} not stored",
            s.client_id,
        )
        self.notify(s, "dropped", msg, now, reason="store_full")
        return False

    def requeue_unconfirmed(self, s: Session) -> None:
        """A coalescing session's unacknowledged QoS 1 messages go back to the front of its
        queue: its client acknowledges only what it carried out (a device command), so a
        newer command may still supersede them before the next connection. They are sent
        again then, as the spec asks of in-flight messages, unless superseded."""
        back = [e for e in s.inflight.values() if e.qos == 1 and e.state is SENT]
        if back:
            self._journal.queues_version += 1
        for e in sorted(back, key=lambda e: e.seq, reverse=True):
            del s.inflight[e.packet_id]  # type: ignore[arg-type]
            e.state = QUEUED
            e.packet_id = None
            if s.queue is NO_ENTRIES:
                s.queue = EntryQueue()
            s.queue.appendleft(e)
            self._ledger.put_entry(s, e)


def delivery_properties(
    props: Properties, sub_ids: tuple[int, ...], expires_at: float | None, now: float
) -> Properties:
    if expires_at is None:
        return replace(props, subscription_identifiers=sub_ids)
    # §3.3.2.3.3: the interval less the time the message waited here (never 0: that would
    # read as "no time left" to some clients while we still deliver it).
    remaining = max(1, int(expires_at - now + 0.5))
    return replace(props, subscription_identifiers=sub_ids, message_expiry_interval=remaining)
