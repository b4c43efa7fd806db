"""What of a broker step may be written before its store operations are durable (DESIGN §4).

Everything that acknowledges or relies on what the step stores waits for the commit. Two
things need not: a batch whose ops only record delivery progress (needs_barrier), and a QoS
0/1 PUBLISH to another client (early_deliveries). Such a delivery promises nothing to the
publisher, whose PUBACK/PUBREC still waits; if the gateway dies before the commit, the
publisher sends the message again and the subscriber may get it twice, which QoS 1 allows.
Waiting for the fsync added its latency to every persistent delivery, and an acknowledgement
that arrives before the commit lets the commit skip the message entirely (tables.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.broker.effects import Action, Send
from gateway.broker.records import (
    DeleteMessage,
    DeleteQueueEntry,
    PutQueueEntry,
    PutRetained,
    StoreOp,
)
from gateway.mqtt.packets import Publish


def needs_barrier(ops: Sequence[StoreOp]) -> bool:
    """Must the packets of this batch wait until its store ops are durable?

    Yes, unless every op only records outgoing QoS 0/1 progress or forgets finished
    deliveries, or stores a retained QoS 0 message: a crash before such a commit makes the
    broker redeliver a QoS 1 message, which QoS 1 allows, or forget a QoS 0 message, which
    nobody was told was safe. Everything else must be durable first: a new message before its
    PUBACK/PUBREC, QoS 2 state before the packet that relies on it (or a message would be
    delivered twice or lost), sessions, subscriptions and retained messages before the
    client is told about them.
    """
    for op in ops:
        # Exact types compared by identity (a hot path), which mypy narrows like isinstance.
        if type(op) is DeleteQueueEntry or type(op) is DeleteMessage:
            continue
        if type(op) is PutQueueEntry and op.entry.qos < 2:
            continue
        if type(op) is PutRetained and op.message.qos == 0:
            continue
        return True
    return False


def early_deliveries(actions: list[Action], origin_id: int) -> tuple[list[Action], list[Action]]:
    """(what may be written before the step's commit, what must wait for it): QoS 0/1
    PUBLISHes to connections other than the one whose packet made the step. A QoS 2
    delivery waits (its packet id must be durable first), and so does everything sent to
    the origin, which may be its acknowledgement."""
    early: list[Action] = []
    held: list[Action] = []
    for action in actions:
        if (
            action.__class__ is Send
            and action.conn_id != origin_id
            and action.packet.__class__ is Publish
            and action.packet.qos < 2
        ):
            early.append(action)
        else:
            held.append(action)
    return early, held
