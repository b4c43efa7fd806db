"""What each store operation means, stated once: ``apply(tables, ops)``.

The memory store keeps its content in a ``Tables`` and the tests' fake store wraps one; the
SQLite store gathers each group of commit() calls into a ``Tables.delta()`` and writes that
in one transaction (sqlite_writes.py). So the three agree by construction, and the
conformance tests (tests/test_store_conformance.py) hold the SQLite file to the same cases.

A delta is the same tables laid over rows stored earlier, which it cannot see: a delete is
kept as a ``None`` row, to be replayed onto them, and a DeleteSession also as a client id in
``dropped`` (its rows stored earlier go; this group's earlier ops on them are void; later
ones still apply). With nothing underneath a delete just removes. Both reduce a run of ops
to the final state of each key, which is what applying them one by one in order leaves:
keys are independent, a put replaces the whole row, and a DeleteSession is replayed before
the rows that follow it.

A delta also knows which of its keys are new, as the ledger marks them: a
``PutMessage(new=True)`` is a message no stored entry uses (so not stored), a
``PutQueueEntry(new=True)`` a seq never stored. Deleting such a key
in the same delta leaves nothing to write at all, rather than a DELETE of a row that is not
there: a message acknowledged before its group was written costs the disk nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, TypeVar, cast

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
    QueueEntry,
    SessionRecord,
    Snapshot,
    StoreOp,
    SubscriptionRecord,
)

# Rough per-record overhead so that size_bytes is comparable in scale to SQLite's.
_RECORD_OVERHEAD = 64

K = TypeVar("K")
R = TypeVar("R")


class Tables:
    """The store's rows by table and key; ``None`` marks a deleted row (in a delta only).

    Rows a session owns are grouped by client id, so that a DeleteSession drops them at once.
    """

    __slots__ = (
        "dropped",
        "fresh_messages",
        "fresh_queue",
        "inbound_qos2",
        "is_delta",
        "messages",
        "queue",
        "retained",
        "sessions",
        "size_bytes",
        "subscriptions",
    )

    def __init__(self, *, delta: bool = False) -> None:
        self.is_delta = delta
        self.sessions: dict[str, SessionRecord | None] = {}
        self.subscriptions: dict[str, dict[str, SubscriptionRecord | None]] = {}
        self.messages: dict[int, Message | None] = {}
        self.queue: dict[str, dict[int, QueueEntry | None]] = {}
        self.inbound_qos2: dict[str, dict[int, Literal[True] | None]] = {}
        self.retained: dict[str, Message | None] = {}
        # Client ids whose DeleteSession must also remove rows stored before (a delta only).
        self.dropped: set[str] = set()
        # Keys this delta put that nothing below it holds (a delta only; see above).
        self.fresh_messages: set[int] = set()
        self.fresh_queue: set[tuple[str, int]] = set()
        # About the bytes of the messages held here: the memory store's size (not a delta's).
        self.size_bytes = 0

    @classmethod
    def delta(cls) -> Tables:
        return cls(delta=True)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            sessions=_present(self.sessions.values()),
            subscriptions=_present(
                s for rows in self.subscriptions.values() for s in rows.values()
            ),
            messages=_present(self.messages.values()),
            queue=sorted(
                _present(e for rows in self.queue.values() for e in rows.values()),
                key=lambda e: e.seq,
            ),
            inbound_qos2=[
                (cid, pid)
                for cid, ids in self.inbound_qos2.items()
                for pid, on in ids.items()
                if on
            ],
            retained=_present(self.retained.values()),
        )


def _present(rows: Iterable[R | None]) -> list[R]:
    return [r for r in rows if r is not None]


def _message_size(m: Message) -> int:
    return len(m.payload) + len(m.topic) + _RECORD_OVERHEAD


def apply(tables: Tables, ops: Iterable[StoreOp]) -> None:
    """Apply ``ops`` in order. TypeError for anything that is not a StoreOp (checked as it is
    reached: validate first if a half-applied list must not happen)."""
    # Plain type() checks ordered by frequency: this loop runs for every op the broker makes
    # durable, and isinstance chains or match statements cost noticeably more.
    delta = tables.is_delta
    messages = tables.messages
    queue = tables.queue
    fresh_messages = tables.fresh_messages
    fresh_queue = tables.fresh_queue
    for op in ops:
        kind = type(op)
        if kind is PutMessage:
            pm = cast(PutMessage, op)
            m = pm.message
            if not delta:
                _resize(tables, messages.get(m.msg_id), m)
            elif pm.new and m.msg_id not in messages:  # deleted earlier here: stored below
                fresh_messages.add(m.msg_id)
            messages[m.msg_id] = m
        elif kind is PutQueueEntry:
            pq = cast(PutQueueEntry, op)
            e = pq.entry
            rows = queue.get(e.client_id)
            if rows is None:
                queue[e.client_id] = {e.seq: e}
            else:
                rows[e.seq] = e
            if delta and pq.new:
                fresh_queue.add((e.client_id, e.seq))
        elif kind is DeleteQueueEntry:
            dq = cast(DeleteQueueEntry, op)
            if delta:  # _delete_owned, inlined for the most frequent delete
                rows = queue.get(dq.client_id)
                # The key is built only when there is something fresh to find: a drain's
                # deletes never have.
                if fresh_queue and (key := (dq.client_id, dq.seq)) in fresh_queue:
                    fresh_queue.discard(key)
                    if rows is not None:  # else a DeleteSession in this delta took it
                        rows.pop(dq.seq, None)
                elif rows is None:
                    queue[dq.client_id] = {dq.seq: None}
                else:
                    rows[dq.seq] = None
            else:
                _delete_owned(queue, dq.client_id, dq.seq, delta)
        elif kind is DeleteMessage:
            msg_id = cast(DeleteMessage, op).msg_id
            if not delta:
                _resize(tables, messages.pop(msg_id, None), None)
            elif msg_id in fresh_messages:
                fresh_messages.discard(msg_id)
                messages.pop(msg_id, None)
            else:
                messages[msg_id] = None
        else:
            _apply_rare(tables, op, delta)


def _apply_rare(tables: Tables, op: StoreOp, delta: bool) -> None:
    """The ops that come once per session, subscription, QoS 2 exchange or retained topic."""
    kind = type(op)
    if kind is PutInboundQos2:
        pi = cast(PutInboundQos2, op)
        tables.inbound_qos2.setdefault(pi.client_id, {})[pi.packet_id] = True
    elif kind is DeleteInboundQos2:
        di = cast(DeleteInboundQos2, op)
        _delete_owned(tables.inbound_qos2, di.client_id, di.packet_id, delta)
    elif kind is PutSession:
        s = cast(PutSession, op).record
        tables.sessions[s.client_id] = s
    elif kind is PutSubscription:
        sub = cast(PutSubscription, op).record
        tables.subscriptions.setdefault(sub.client_id, {})[sub.topic_filter] = sub
    elif kind is DeleteSubscription:
        ds = cast(DeleteSubscription, op)
        _delete_owned(tables.subscriptions, ds.client_id, ds.topic_filter, delta)
    elif kind is PutRetained:
        r = cast(PutRetained, op).message
        if not delta:
            _resize(tables, tables.retained.get(r.topic), r)
        tables.retained[r.topic] = r
    elif kind is DeleteRetained:
        topic = cast(DeleteRetained, op).topic
        if delta:
            tables.retained[topic] = None
        else:
            _resize(tables, tables.retained.pop(topic, None), None)
    elif kind is DeleteSession:
        _drop_session(tables, cast(DeleteSession, op).client_id, delta)
    else:
        raise TypeError(f"not a StoreOp: {op!r}")


def _drop_session(tables: Tables, client_id: str, delta: bool) -> None:
    """The session and everything it owns: subscriptions, queue entries, QoS 2 state."""
    tables.subscriptions.pop(client_id, None)
    tables.queue.pop(client_id, None)
    tables.inbound_qos2.pop(client_id, None)
    if delta:
        tables.sessions[client_id] = None
        tables.dropped.add(client_id)
    else:
        tables.sessions.pop(client_id, None)


def _delete_owned(table: dict[str, dict[K, R | None]], client_id: str, key: K, delta: bool) -> None:
    rows = table.get(client_id)
    if delta:
        if rows is None:
            table[client_id] = {key: None}
        else:
            rows[key] = None
    elif rows is not None:
        rows.pop(key, None)
        if not rows:
            del table[client_id]


def _resize(tables: Tables, old: Message | None, new: Message | None) -> None:
    if old is not None:
        tables.size_bytes -= _message_size(old)
    if new is not None:
        tables.size_bytes += _message_size(new)


_OP_TYPES = frozenset(
    {
        PutSession,
        DeleteSession,
        PutSubscription,
        DeleteSubscription,
        PutMessage,
        DeleteMessage,
        PutQueueEntry,
        DeleteQueueEntry,
        PutInboundQos2,
        DeleteInboundQos2,
        PutRetained,
        DeleteRetained,
    }
)


def is_store_op(value: object) -> bool:
    """What apply() accepts (exactly these types, as it dispatches on them)."""
    return type(value) in _OP_TYPES
