"""What the broker keeps durable, and the operations it asks the store to apply.

The broker core is pure: it never touches SQLite. Whenever its durable state changes it emits
``StoreOp`` values; the persistence layer applies them in order, grouped into transactions,
and the server sends nothing that depends on them until they are committed (DESIGN §4).
At start-up the store hands back a ``Snapshot`` and the broker rebuilds itself from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

# Re-exported: the store decodes QueuePolicy and knows the broker's records only.
from gateway.broker.settings import Overflow as Overflow
from gateway.mqtt.packets import NO_PROPERTIES, Properties, Will

# Session Expiry Interval meaning "never expires" (MQTT 5 spec 3.1.2.11.2).
SESSION_NEVER_EXPIRES = 0xFFFFFFFF

# SessionRecord.owner of the sessions of the gateway's own in-process clients (device
# sessions, the admin service). No password file user can have this name: user names never
# start with '#' (auth/passwords.py validate_username).
OWNER_GATEWAY = "#gateway"


# _HOT_RECORDS: Message, QueueEntry and the four ops made per stored message are plain slotted
# dataclasses, not frozen ones, though nothing changes them after they are built: a frozen
# dataclass's __init__ sets each field through object.__setattr__, which made building a
# QueueEntry 8x slower (1.7 us against 0.2 us), several us per persistent message in all.
# They are values all the same (hashable by value): never assign to their fields.


@dataclass(slots=True, unsafe_hash=True)  # not frozen: see _HOT_RECORDS
class Message:
    """An application message as the broker holds it, once per publish (not per subscriber).

    ``properties`` are the publication properties to forward (no topic alias, no subscription
    identifiers; those are per delivery). ``expires_at`` is absolute wall-clock time (seconds
    since the epoch) so that expiry survives a restart.
    """

    msg_id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = NO_PROPERTIES
    expires_at: float | None = None
    origin_client_id: str = ""
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """What a trusted client asked for its session's queue (see queue_policy.py).

    Only what it set is kept (None = the config's value), so that a restored session gets the
    client's choices on top of the limits config.yaml gives *now*.
    """

    max_messages: int | None = None
    max_bytes: int | None = None
    overflow: Overflow | None = None
    coalesce: bool | None = None
    default_expiry: int | None = None
    notify_topic: str | None = None
    pending_topic: str | None = None
    # Compact JSON of the command schema messages to this session must pass before they are
    # queued (command_check.py); kept as text, exactly as the client sent it.
    command_schema: str | None = None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    client_id: str
    expiry_interval: int  # seconds; SESSION_NEVER_EXPIRES = never
    protocol_version: int
    username: str | None = None
    # Wall-clock time of the last disconnect; None while connected. A session restored with
    # None was connected when the broker stopped, so its will (if any) is due.
    disconnected_at: float | None = None
    will: Will | None = None
    # Stored with the session because the session *is* a sleeping device's command queue:
    # after a restart, commands that arrive before the device reconnects must already be
    # coalesced, given their default expiry and reported (DESIGN §3).
    queue_policy: QueuePolicy | None = None
    # Who may connect to this session again (connect.py): a verified user name, None for
    # anonymous clients, OWNER_GATEWAY for the gateway's own clients. It never changes while
    # the session lives: a CONNECT by anyone else is refused, not re-owned.
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    client_id: str
    topic_filter: str  # as the client sent it, including any $share/<group>/ prefix
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    subscription_id: int | None = None


class EntryState(Enum):
    QUEUED = "queued"  # not yet sent on any connection
    SENT = "sent"  # PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2)
    RELEASED = "released"  # QoS 2: PUBREC received, PUBREL sent, waiting for PUBCOMP


@dataclass(slots=True, unsafe_hash=True)  # not frozen: see _HOT_RECORDS
class QueueEntry:
    """One outgoing message of one session, in delivery order (``seq`` is global, increasing)."""

    client_id: str
    seq: int
    msg_id: int
    qos: int  # delivery QoS: min(message QoS, subscription QoS)
    state: EntryState = EntryState.QUEUED
    packet_id: int | None = None
    retain: bool = False  # RETAIN flag as delivered (retain-as-published)
    subscription_ids: tuple[int, ...] = ()


# --- operations ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PutSession:
    record: SessionRecord


@dataclass(frozen=True, slots=True)
class DeleteSession:
    """Removes the session and everything it owns: subscriptions, queue entries, QoS 2 state."""

    client_id: str


@dataclass(frozen=True, slots=True)
class PutSubscription:
    record: SubscriptionRecord


@dataclass(frozen=True, slots=True)
class DeleteSubscription:
    client_id: str
    topic_filter: str


@dataclass(slots=True, unsafe_hash=True)  # not frozen: see _HOT_RECORDS
class PutMessage:
    """``new``: no stored queue entry uses the message, so it is not in the store (the
    ledger's refcount says so), and a delete in the same group cancels both (tables.py)."""

    message: Message
    new: bool = False


@dataclass(slots=True, unsafe_hash=True)  # not frozen: see _HOT_RECORDS
class DeleteMessage:
    msg_id: int


@dataclass(slots=True, unsafe_hash=True)  # not frozen: see _HOT_RECORDS
class PutQueueEntry:
    """Insert or replace (client_id, seq). ``new``: the entry has never been stored before
    (a new seq), so a delete that follows it in the same group cancels both (tables.py)."""

    entry: QueueEntry
    new: bool = False


@dataclass(slots=True, unsafe_hash=True)  # not frozen: see _HOT_RECORDS
class DeleteQueueEntry:
    client_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class PutInboundQos2:
    """A QoS 2 PUBLISH from this client was accepted and PUBREC sent; until PUBREL the packet
    id must not be delivered again (exactly once across reconnects and restarts)."""

    client_id: str
    packet_id: int


@dataclass(frozen=True, slots=True)
class DeleteInboundQos2:
    client_id: str
    packet_id: int


@dataclass(frozen=True, slots=True)
class PutRetained:
    message: Message  # keyed by message.topic; replaces any earlier one


@dataclass(frozen=True, slots=True)
class DeleteRetained:
    topic: str


StoreOp = (
    PutSession
    | DeleteSession
    | PutSubscription
    | DeleteSubscription
    | PutMessage
    | DeleteMessage
    | PutQueueEntry
    | DeleteQueueEntry
    | PutInboundQos2
    | DeleteInboundQos2
    | PutRetained
    | DeleteRetained
)


@dataclass(slots=True)
class Snapshot:
    """Everything the store holds, as loaded at start-up."""

    sessions: list[SessionRecord] = field(default_factory=list)
    subscriptions: list[SubscriptionRecord] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    queue: list[QueueEntry] = field(default_factory=list)  # ordered by seq
    inbound_qos2: list[tuple[str, int]] = field(default_factory=list)
    retained: list[Message] = field(default_factory=list)
