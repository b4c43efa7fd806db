"""A store that keeps its content in this process only (``persistence: enabled: false``).

It applies ops exactly as SqliteStore does, so it doubles as the reference model in tests:
reopening the *same* instance hands back what was committed (a restart without a crash); a
new instance starts empty.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

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
from gateway.persistence.base import StoreError, StoreStats
from gateway.persistence.limit import Notify, SizeLimit

# Rough per-record overhead so that size_bytes is comparable in scale to SQLite's.
_RECORD_OVERHEAD = 64


class Tables:
    """Store content as plain dicts, with the same op semantics as the SQLite schema."""

    def __init__(self) -> None:
        self.sessions: dict[str, SessionRecord] = {}
        self.subscriptions: dict[str, dict[str, SubscriptionRecord]] = {}
        self.messages: dict[int, Message] = {}
        self.queue: dict[str, dict[int, QueueEntry]] = {}
        self.inbound_qos2: dict[str, set[int]] = {}
        self.retained: dict[str, Message] = {}
        self.size_bytes = 0

    def apply(self, op: StoreOp) -> None:
        match op:
            case PutMessage(message=m):
                self._forget(self.messages.get(m.msg_id))
                self.messages[m.msg_id] = m
                self.size_bytes += _message_size(m)
            case DeleteMessage(msg_id=msg_id):
                self._forget(self.messages.pop(msg_id, None))
            case PutQueueEntry(entry=e):
                self.queue.setdefault(e.client_id, {})[e.seq] = e
            case DeleteQueueEntry(client_id=cid, seq=seq):
                entries = self.queue.get(cid)
                if entries is not None:
                    entries.pop(seq, None)
                    if not entries:
                        del self.queue[cid]
            case PutSession(record=s):
                self.sessions[s.client_id] = s
            case DeleteSession(client_id=cid):
                self.sessions.pop(cid, None)
                self.subscriptions.pop(cid, None)
                self.queue.pop(cid, None)
                self.inbound_qos2.pop(cid, None)
            case PutSubscription(record=sub):
                self.subscriptions.setdefault(sub.client_id, {})[sub.topic_filter] = sub
            case DeleteSubscription(client_id=cid, topic_filter=topic_filter):
                subs = self.subscriptions.get(cid)
                if subs is not None:
                    subs.pop(topic_filter, None)
                    if not subs:
                        del self.subscriptions[cid]
            case PutInboundQos2(client_id=cid, packet_id=pid):
                self.inbound_qos2.setdefault(cid, set()).add(pid)
            case DeleteInboundQos2(client_id=cid, packet_id=pid):
                ids = self.inbound_qos2.get(cid)
                if ids is not None:
                    ids.discard(pid)
                    if not ids:
                        del self.inbound_qos2[cid]
            case PutRetained(message=m):
                self._forget(self.retained.get(m.topic))
                self.retained[m.topic] = m
                self.size_bytes += _message_size(m)
            case DeleteRetained(topic=topic):
                self._forget(self.retained.pop(topic, None))
            case _:
                raise TypeError(f"not a StoreOp: {op!r}")

    def _forget(self, m: Message | None) -> None:
        if m is not None:
            self.size_bytes -= _message_size(m)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            sessions=list(self.sessions.values()),
            subscriptions=[s for subs in self.subscriptions.values() for s in subs.values()],
            messages=list(self.messages.values()),
            queue=sorted(
                (e for entries in self.queue.values() for e in entries.values()),
                key=lambda e: e.seq,
            ),
            inbound_qos2=[(cid, pid) for cid, ids in self.inbound_qos2.items() for pid in ids],
            retained=list(self.retained.values()),
        )


def _message_size(m: Message) -> int:
    return len(m.payload) + len(m.topic) + _RECORD_OVERHEAD


class MemoryStore:
    def __init__(self, *, max_size_bytes: int = 0) -> None:
        self.tables = Tables()
        self._limit = SizeLimit(max_size_bytes) if max_size_bytes else None
        self._open = False
        self._fail_next = 0
        self._commits = 0
        self._ops = 0
        self._failures = 0

    async def open(self) -> Snapshot:
        self._open = True
        return self.tables.snapshot()

    async def commit(self, ops: Sequence[StoreOp]) -> None:
        self._apply(ops)

    def submit(self, ops: Sequence[StoreOp], *, urgent: bool = True) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._apply(ops)
        except StoreError as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)
        return future

    def _apply(self, ops: Sequence[StoreOp]) -> None:
        if not self._open:
            raise StoreError("store is not open")
        if self._fail_next:
            self._fail_next -= 1
            self._failures += 1
            raise StoreError("injected failure")
        # Validate before applying so that a bad op leaves nothing half-applied, as a rolled
        # back transaction would.
        for op in ops:
            if not isinstance(op, _OP_TYPES):
                self._failures += 1
                raise StoreError(f"not a StoreOp: {op!r}")
        for op in ops:
            self.tables.apply(op)
        self._commits += 1
        self._ops += len(ops)
        self.over_limit()

    async def close(self) -> None:
        self._open = False

    def fail_next_commits(self, count: int = 1) -> None:
        """Test hook: the next ``count`` commit() calls raise StoreError and store nothing."""
        self._fail_next = count

    @property
    def stats(self) -> StoreStats:
        return StoreStats(
            commits=self._commits,
            calls=self._commits,
            ops=self._ops,
            failures=self._failures,
            failed_calls=self._failures,
            size_bytes=self.tables.size_bytes,
        )

    def over_limit(self) -> bool:
        return self._limit is not None and self._limit.update(self.tables.size_bytes)

    @property
    def on_limit(self) -> Notify | None:
        return None if self._limit is None else self._limit.on_change

    @on_limit.setter
    def on_limit(self, notify: Notify | None) -> None:
        if self._limit is not None:
            self._limit.on_change = notify


_OP_TYPES = (
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
)
