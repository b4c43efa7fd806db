"""Rebuilding the broker's state from the store at start-up."""

from __future__ import annotations

import logging

from gateway.broker.parts import Parts
from gateway.broker.records import (
    DeleteMessage,
    DeleteQueueEntry,
    DeleteSubscription,
    SessionRecord,
    Snapshot,
)
from gateway.broker.session import (
    NO_ENTRIES,
    NO_PACKET_IDS,
    QUEUED,
    SENT,
    EntryQueue,
    PacketIds,
    QEntry,
    Session,
)
from gateway.broker.shared_empty import NO_ITEMS
from gateway.broker.topic_tree import split_shared
from gateway.broker.wills import will_delay

log = logging.getLogger("gateway.broker")


def restore(p: Parts, snapshot: Snapshot, now: float) -> None:
    """Rebuild sessions, subscriptions, queues and retained messages from ``snapshot``;
    whatever of it the state cannot keep is deleted from the store."""
    ledger = p.ledger
    for rec in snapshot.sessions:
        _restore_session(p, rec, now)
    sessions = p.sessions.by_id
    for sub in snapshot.subscriptions:
        owner = sessions.get(sub.client_id)
        if owner is None or split_shared(sub.topic_filter) is None:
            log.warning("restore: dropping subscription %r of %r", sub.topic_filter, sub.client_id)
            ledger.discard(DeleteSubscription(sub.client_id, sub.topic_filter))
            continue
        if owner.subscriptions is NO_ITEMS:
            owner.subscriptions = {}
        owner.subscriptions[sub.topic_filter] = sub
        p.router.tree.add(sub)
    max_seq = _restore_queues(p, snapshot)
    max_msg_id = 0
    for m in snapshot.messages:
        max_msg_id = max(max_msg_id, m.msg_id)
        if m.msg_id not in ledger.refs:
            ledger.discard(DeleteMessage(m.msg_id))
    for client_id, pid in snapshot.inbound_qos2:
        owner = sessions.get(client_id)
        if owner is not None:
            if owner.inbound_qos2 is NO_PACKET_IDS:
                owner.inbound_qos2 = PacketIds()
            owner.inbound_qos2.add(pid)
    for m in snapshot.retained:
        max_msg_id = max(max_msg_id, m.msg_id)
        p.router.retained.put(m)
    ledger.seen(max_msg_id, max_seq)
    p.journal.queues_version += 1


def _restore_session(p: Parts, rec: SessionRecord, now: float) -> None:
    base = p.settings.queue_limits_for(rec.client_id)
    s = Session(
        rec.client_id,
        rec.expiry_interval,
        rec.protocol_version,
        rec.username,
        base,
        rec.owner,
    )
    # The queue policy works at once, before the session's client is back.
    s.use_policy(rec.queue_policy, base)
    s.stored = True
    disconnected_at = rec.disconnected_at
    if disconnected_at is None:
        # It was connected when the broker stopped: it lost its connection now.
        disconnected_at = now
    s.disconnected_at = disconnected_at
    if rec.disconnected_at is None:
        p.ledger.put_session(s)
    if rec.will is not None:
        s.will = rec.will
        delay = will_delay(rec.will, rec.protocol_version)
        s.will_due_at = disconnected_at + min(delay, rec.expiry_interval)
        p.timers.will_due(s.will_due_at, s.client_id)
    p.sessions.add(s)
    expires = s.expires_at()
    if expires is not None:
        p.timers.expiry_due(expires, s.client_id)


def _restore_queues(p: Parts, snapshot: Snapshot) -> int:
    """Queue entries back in their sessions' queues and in-flight windows, in order.
    Returns the highest seq seen."""
    ledger = p.ledger
    sessions = p.sessions.by_id
    messages = {m.msg_id: m for m in snapshot.messages}
    max_seq = 0
    for q in sorted(snapshot.queue, key=lambda q: q.seq):
        max_seq = max(max_seq, q.seq)
        owner = sessions.get(q.client_id)
        msg = messages.get(q.msg_id)
        if owner is None or msg is None:
            log.warning("restore: dropping orphan queue entry %r/%d", q.client_id, q.seq)
            ledger.discard(DeleteQueueEntry(q.client_id, q.seq))
            continue
        e = QEntry(q.seq, msg, q.qos, q.retain, q.subscription_ids, q.state, q.packet_id)
        pid = q.packet_id
        unconfirmed = owner.limits.coalesce and q.qos == 1 and q.state is SENT
        if q.state is QUEUED or pid is None or pid in owner.inflight or unconfirmed:
            e.state = QUEUED
            e.packet_id = None
            if owner.queue is NO_ENTRIES:
                owner.queue = EntryQueue()
            owner.queue.append(e)
            if unconfirmed:
                # As when a coalescing session's link drops (Outbox.requeue_unconfirmed):
                # its client acknowledges only what it carried out, so a newer command
                # may still supersede this one.
                ledger.put_entry(owner, e)
                p.outbox.pending_changed(owner)
            if msg.expires_at is not None:
                p.timers.entry_expires(msg.expires_at, owner, e)
        else:
            if owner.inflight is NO_ITEMS:
                owner.inflight = {}
            owner.inflight[pid] = e
            owner.next_packet_id = pid % 65535 + 1
        ledger.count_ref(msg.msg_id)
    return max_seq
