"""Which broker batches must be durable before their packets leave (DESIGN §4)."""

from __future__ import annotations

import pytest

from gateway.broker.records import (
    DeleteInboundQos2,
    DeleteMessage,
    DeleteQueueEntry,
    DeleteRetained,
    DeleteSession,
    EntryState,
    Message,
    PutInboundQos2,
    PutMessage,
    PutQueueEntry,
    PutRetained,
    PutSession,
    PutSubscription,
    QueueEntry,
    SessionRecord,
    StoreOp,
    SubscriptionRecord,
)
from gateway.server.barrier import needs_barrier

MSG = Message(1, "t", b"x", 1, False)


def entry(qos: int, state: EntryState = EntryState.SENT) -> PutQueueEntry:
    return PutQueueEntry(QueueEntry("c", 1, 1, qos, state, 7))


RELAXED: list[list[StoreOp]] = [
    [DeleteQueueEntry("c", 1), DeleteMessage(1)],  # a QoS 1/2 delivery finished
    [entry(1)],  # QoS 1 in flight
    [DeleteQueueEntry("c", 1), DeleteMessage(1), entry(1)],  # PUBACK, next message sent
    [PutRetained(Message(1, "t", b"x", 0, True))],  # retained QoS 0: nobody was told it is safe
]
STRICT: list[list[StoreOp]] = [
    [PutMessage(MSG), entry(1, EntryState.QUEUED)],  # a new message before its PUBACK
    [entry(2)],  # QoS 2 packet id before the PUBLISH
    [entry(2, EntryState.RELEASED)],  # before the PUBREL
    [PutInboundQos2("c", 7)],  # before the PUBREC
    [DeleteInboundQos2("c", 7)],  # before the PUBCOMP: the id may be reused after it
    [PutRetained(MSG)],
    [DeleteRetained("t")],
    [PutSession(SessionRecord("c", 60, 4))],
    [DeleteSession("c")],
    [PutSubscription(SubscriptionRecord("c", "t/#", 1))],
    [DeleteQueueEntry("c", 1), DeleteMessage(1), entry(2)],  # relaxed ops do not dilute
]


@pytest.mark.parametrize("ops", RELAXED)
def test_delivery_progress_needs_no_barrier(ops: list[StoreOp]) -> None:
    assert not needs_barrier(ops)


@pytest.mark.parametrize("ops", STRICT)
def test_promises_wait_for_the_disk(ops: list[StoreOp]) -> None:
    assert needs_barrier(ops)
