"""Outbound delivery and flow control: a session's queue, its in-flight window, the
subscriber's acknowledgements and the redelivery on reconnect.

Queue limits count messages not yet sent (QUEUED); the in-flight window is bounded by the
receive maximum / ``max_inflight_out`` instead.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.broker.effects import Send
from gateway.broker.queue_policy import json_keys
from gateway.broker.records import Message
from gateway.broker.session import RELEASED, SENT, Connection, QEntry, Session
from gateway.broker.settings import Overflow, QueueLimits
from gateway.broker.store_limit import StoreLimit
from gateway.mqtt.packets import Properties, PubRec, PubRel, new_publish
from gateway.mqtt.reason_codes import ReasonCode

_PID_NOT_FOUND = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND.value


class Delivery(StoreLimit):
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
        if conn is not None and conn.window:
            if qos == 0:
                self._send_qos0(conn, s, msg, retain, sub_ids, now)
                return True
            if not s.queue.count and len(s.inflight) < conn.window:
                if s.stored and self.ledger.full and not self._room_for(s, msg):
                    return False
                seq = self.ledger.new_seq()
                self._transmit(conn, s, QEntry(seq, msg, qos, retain, sub_ids), now, False)
                return True
        elif qos == 0 and conn is None and not s.limits.queue_qos0:
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
            props = delivery_properties(props, sub_ids, msg.expires_at, now)
        out = new_publish(msg.topic, msg.payload, 0, retain, False, None, props)
        if conn.max_packet_size and conn.too_large(out):  # the check first: hot path
            self.stats.dropped("too_large", 1, f"for {s.client_id!r} on {msg.topic}", s.client_id)
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
            props = delivery_properties(props, e.sub_ids, msg.expires_at, now)
        out = new_publish(msg.topic, msg.payload, e.qos, e.retain, False, pid, props)
        if conn.max_packet_size and conn.too_large(out):  # the check first: hot path
            # §3.1.2.25: discard as if delivered.
            if persisted:
                self._finish(s, e)
            self.stats.dropped("too_large", 1, f"for {s.client_id!r} on {msg.topic}", s.client_id)
            return
        e.packet_id = pid
        e.state = SENT
        s.inflight[pid] = e
        self.journal.queues_version += 1
        if s.pending_topic is not None:
            self._pending_changed(s)
        if not persisted:
            self.ledger.add_entry(s, e)
        elif e.qos == 2:
            # QoS 2 needs its packet id durable before the PUBLISH leaves (exactly once). An
            # already stored QoS 1 entry does not: after a crash it is simply sent again,
            # under a new packet id, which QoS 1 allows; that saves a write per delivery.
            self.ledger.put_entry(s, e)
        self._actions.append(Send(conn.conn_id, out))
        self.stats.publish_sent += 1

    def _enqueue(
        self, s: Session, msg: Message, qos: int, retain: bool, sub_ids: tuple[int, ...]
    ) -> bool:
        if s.stored and self.ledger.full and not self._room_for(s, msg):
            return False  # before coalescing: a message not stored supersedes nothing
        limits = s.limits
        if limits.coalesce or limits.default_expiry:
            msg = self._apply_policy(s, msg, limits)
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
                    s.client_id,
                )
                self._notify(s, "dropped", msg, reason="queue_full")
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
                self._finish(s, oldest)
                self._notify(s, "dropped", oldest.message, reason="queue_full")
                dropped += 1
            self.stats.dropped(
                "queue_full",
                dropped,
                f"queue of {s.client_id!r} full, oldest message(s) dropped",
                s.client_id,
            )
        seq = self.ledger.new_seq()
        e = QEntry(seq, msg, qos, retain, sub_ids)
        queue.append(e)
        self.journal.queues_version += 1
        if s.pending_topic is not None:
            self._pending_changed(s)
        self.ledger.add_entry(s, e)
        if msg.expires_at is not None:
            self.timers.entry_expires(msg.expires_at, s, e)
        return True

    def _apply_policy(self, s: Session, msg: Message, limits: QueueLimits) -> Message:
        """A trusted client's queue policy (queue_policy.py): a default time-to-live, and
        coalescing of not yet sent messages that this one makes obsolete."""
        if limits.default_expiry and msg.expires_at is None:
            # The message may be shared with other sessions: this one gets its own copy.
            msg = replace(
                msg, msg_id=self.ledger.new_msg_id(), expires_at=self._now + limits.default_expiry
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
                    self._finish(s, e)
                    self._notify(s, "superseded", e.message)
        return msg

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
                self.stats.dropped(
                    "expired", 1, f"queued for {s.client_id!r} on {msg.topic}", s.client_id
                )
                self._notify(s, "expired", msg)
                continue
            if e.qos == 0:
                self._send_qos0(conn, s, msg, e.retain, e.sub_ids, now)
                self._finish(s, e)
                continue
            self._transmit(conn, s, e, now, stored)

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
                props = delivery_properties(props, e.sub_ids, msg.expires_at, now)
            out = new_publish(msg.topic, msg.payload, e.qos, e.retain, True, pid, props)
            if conn.max_packet_size and conn.too_large(out):  # the check first: hot path
                del s.inflight[pid]
                self._finish(s, e)
                self.stats.dropped(
                    "too_large", 1, f"for {s.client_id!r} on {msg.topic}", s.client_id
                )
                continue
            self._send(cid, out)
            self.stats.publish_sent += 1
        if s.queue:
            self._pump(conn, s, now)

    def _on_puback(self, conn: Connection, s: Session, pid: int, now: float) -> None:
        e = s.inflight.get(pid)
        if e is None or e.qos != 1:
            return  # unknown ids are tolerated (e.g. acks for a session that was reset)
        del s.inflight[pid]
        self.journal.queues_version += 1
        if s.pending_topic is not None:
            self._pending_changed(s)
        self.ledger.drop_entry(s, e)  # _finish() inlined: one call less on the QoS 1 path
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
        self.journal.queues_version += 1
        self.ledger.put_entry(s, e)
        self._send(conn.conn_id, PubRel(pid))

    def _on_pubcomp(self, conn: Connection, s: Session, pid: int, now: float) -> None:
        e = s.inflight.get(pid)
        if e is None or e.state is not RELEASED:
            return
        del s.inflight[pid]
        self._finish(s, e)
        if s.queue:
            self._pump(conn, s, now)


def delivery_properties(
    props: Properties, sub_ids: tuple[int, ...], expires_at: float | None, now: float
) -> Properties:
    if expires_at is None:
        return replace(props, subscription_identifiers=sub_ids)
    # §3.3.2.3.3: the interval less the time the message waited here (never 0: that would
    # read as "no time left" to some clients while we still deliver it).
    remaining = max(1, int(expires_at - now + 0.5))
    return replace(props, subscription_identifiers=sub_ids, message_expiry_interval=remaining)
