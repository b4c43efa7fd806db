"""The ledger: the store operations of a step, and the bookkeeping that decides them.

It is the only writer of durable state in the core. A session is mirrored in the store
only while it is persistent (``Session.stored``); the methods that take a session do
nothing for one that is not, so callers need not ask. A message is stored once
(PutMessage) when the first stored queue entry references it and deleted when the last
one goes; queue entries reference it by ``msg_id``.

The store tells the broker when it is full (``full``); what the core then refuses is
store_limit.py's business.
"""

from __future__ import annotations

from itertools import chain

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
    StoreOp,
    SubscriptionRecord,
)
from gateway.broker.session import QEntry, Session


class Ledger:
    __slots__ = ("full", "next_msg_id", "next_seq", "ops", "refs")

    def __init__(self) -> None:
        # The operations of the current step; the list object lives as long as the ledger
        # (take() empties it), so that a caller may keep a reference to it.
        self.ops: list[StoreOp] = []
        self.refs: dict[int, int] = {}  # msg_id -> stored queue entries using it
        self.next_msg_id = 1
        self.next_seq = 1
        self.full = False  # set by the shell from the store's measurements

    def take(self) -> list[StoreOp]:
        # Handed over, not copied: nothing but the ledger holds on to its list.
        ops = self.ops
        self.ops = []
        return ops

    def new_msg_id(self) -> int:
        msg_id = self.next_msg_id
        self.next_msg_id = msg_id + 1
        return msg_id

    def new_seq(self) -> int:
        seq = self.next_seq
        self.next_seq = seq + 1
        return seq

    def seen(self, msg_id: int, seq: int) -> None:
        """Ids found in the store at start-up are never handed out again."""
        self.next_msg_id = max(self.next_msg_id, msg_id + 1)
        self.next_seq = max(self.next_seq, seq + 1)

    @property
    def stored_messages(self) -> int:
        return len(self.refs)

    # --- sessions ---------------------------------------------------------------------

    def mirror(self, s: Session) -> None:
        """Make the store hold ``s`` iff it is persistent now (after a CONNECT)."""
        if s.persistent:
            if s.stored:
                self.ops.append(PutSession(s.record()))
            else:
                self.store_session(s)
        elif s.stored:
            self.unstore_session(s)

    def put_session(self, s: Session) -> None:
        if s.stored:
            self.ops.append(PutSession(s.record()))

    def store_session(self, s: Session) -> None:
        """A session became persistent: write all of it."""
        ops = self.ops
        client_id = s.client_id
        ops.append(PutSession(s.record()))
        for rec in s.subscriptions.values():
            ops.append(PutSubscription(rec))
        for e in sorted(chain(s.inflight.values(), s.queue), key=lambda e: e.seq):
            self._ref(e.message)
            ops.append(PutQueueEntry(e.record(client_id), True))
        for pid in s.inbound_qos2:
            ops.append(PutInboundQos2(client_id, pid))
        s.stored = True

    def unstore_session(self, s: Session) -> None:
        if not s.stored:
            return
        self.ops.append(DeleteSession(s.client_id))
        for e in chain(s.inflight.values(), s.queue):
            self._unref(e.message.msg_id)
        s.stored = False

    # --- queue entries ----------------------------------------------------------------

    def add_entry(self, s: Session, e: QEntry) -> None:
        """A new entry of ``s`` (queued or straight into flight)."""
        if s.stored:
            self._ref(e.message)
            self.ops.append(PutQueueEntry(e.record(s.client_id), True))

    def put_entry(self, s: Session, e: QEntry) -> None:
        """An entry already stored changed (state, packet id)."""
        if s.stored:
            self.ops.append(PutQueueEntry(e.record(s.client_id)))

    def drop_entry(self, s: Session, e: QEntry) -> None:
        """An entry is done (acknowledged or discarded)."""
        if s.stored:
            self.ops.append(DeleteQueueEntry(s.client_id, e.seq))
            self._unref(e.message.msg_id)

    # --- subscriptions, inbound QoS 2, retained ----------------------------------------

    def put_subscription(self, s: Session, rec: SubscriptionRecord) -> None:
        if s.stored:
            self.ops.append(PutSubscription(rec))

    def delete_subscription(self, s: Session, topic_filter: str) -> None:
        if s.stored:
            self.ops.append(DeleteSubscription(s.client_id, topic_filter))

    def put_inbound_qos2(self, s: Session, packet_id: int) -> None:
        if s.stored:
            self.ops.append(PutInboundQos2(s.client_id, packet_id))

    def delete_inbound_qos2(self, s: Session, packet_id: int) -> None:
        if s.stored:
            self.ops.append(DeleteInboundQos2(s.client_id, packet_id))

    def put_retained(self, msg: Message) -> None:
        self.ops.append(PutRetained(msg))

    def delete_retained(self, topic: str) -> None:
        self.ops.append(DeleteRetained(topic))

    # --- start-up ----------------------------------------------------------------------

    def count_ref(self, msg_id: int) -> None:
        """A restored queue entry uses ``msg_id`` (already in the store)."""
        refs = self.refs
        refs[msg_id] = refs.get(msg_id, 0) + 1

    def discard(self, op: StoreOp) -> None:
        """Restore found something the state does not keep: delete it from the store."""
        self.ops.append(op)

    def _ref(self, msg: Message) -> None:
        refs = self.refs
        n = refs.get(msg.msg_id)
        if n is None:
            refs[msg.msg_id] = 1
            self.ops.append(PutMessage(msg, True))
        else:
            refs[msg.msg_id] = n + 1

    def _unref(self, msg_id: int) -> None:
        refs = self.refs
        n = refs.get(msg_id, 0) - 1
        if n > 0:
            refs[msg_id] = n
        else:
            refs.pop(msg_id, None)
            self.ops.append(DeleteMessage(msg_id))
