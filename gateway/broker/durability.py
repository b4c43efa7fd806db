"""Durability bookkeeping: which store operations keep the store a mirror of the persistent
sessions.

A message is stored once (PutMessage) when the first persistent session references it and
deleted when the last reference goes; queue entries reference it by ``msg_id``.
"""

from __future__ import annotations

from itertools import chain

from gateway.broker.records import (
    DeleteMessage,
    DeleteQueueEntry,
    DeleteSession,
    Message,
    PutInboundQos2,
    PutMessage,
    PutQueueEntry,
    PutSession,
    PutSubscription,
)
from gateway.broker.session import QEntry, Session
from gateway.broker.state import BrokerState


class Durability(BrokerState):
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

    def _finish(self, s: Session, e: QEntry) -> None:
        """An entry is done (acknowledged or discarded): forget it durably."""
        self._queues_version += 1
        if s.pending_topic is not None:
            self._pending_changed(s)
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
