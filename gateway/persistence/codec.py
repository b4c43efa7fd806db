"""Records to SQLite rows and back.

Properties are stored as compact JSON holding only the fields that are set (NULL when none
is, the common case, so the hot path does no JSON at all); binary fields are hex strings.
JSON's default ASCII escaping keeps any Python string intact, so the round trip is exact.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from gateway.broker.records import (
    EntryState,
    Message,
    Overflow,
    QueueEntry,
    QueuePolicy,
    SessionRecord,
    SubscriptionRecord,
)
from gateway.mqtt.packets import NO_PROPERTIES, Properties, Will

_PROPERTY_FIELDS = tuple(f.name for f in dataclasses.fields(Properties))
_BYTES_FIELDS = frozenset({"correlation_data", "authentication_data"})

STATE_CODES: dict[EntryState, int] = {
    EntryState.QUEUED: 0,
    EntryState.SENT: 1,
    EntryState.RELEASED: 2,
}
_STATES_BY_CODE = {code: state for state, code in STATE_CODES.items()}


class RowError(ValueError):
    """A stored row does not decode into a record: the file is not one we wrote."""


def encode_properties(props: Properties) -> str | None:
    if props is NO_PROPERTIES or props == NO_PROPERTIES:
        return None
    out: dict[str, Any] = {}
    for name in _PROPERTY_FIELDS:
        value = getattr(props, name)
        if value is None or value == ():
            continue
        out[name] = value.hex() if name in _BYTES_FIELDS else value
    return json.dumps(out, separators=(",", ":"))


def decode_properties(text: str | None) -> Properties:
    if text is None:
        return NO_PROPERTIES
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise RowError(f"properties are not an object: {text[:80]!r}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _BYTES_FIELDS:
            kwargs[name] = bytes.fromhex(value)
        elif name == "subscription_identifiers":
            kwargs[name] = tuple(int(v) for v in value)
        elif name == "user_properties":
            kwargs[name] = tuple((str(k), str(v)) for k, v in value)
        else:
            kwargs[name] = value
    try:
        return Properties(**kwargs)
    except TypeError as exc:  # an unknown field name
        raise RowError(str(exc)) from exc


# --- messages (the messages and retained tables share the column layout) -------------------

MessageRow = tuple[int, str, bytes, int, bool, str | None, float | None, str, float]


def message_row(m: Message) -> MessageRow:
    props = m.properties
    return (
        m.msg_id,
        m.topic,
        m.payload,
        m.qos,
        m.retain,
        None if props is NO_PROPERTIES else encode_properties(props),
        m.expires_at,
        m.origin_client_id,
        m.created_at,
    )


def retained_row(m: Message) -> tuple[object, ...]:
    return (m.topic, *message_row(m))


def message_from_row(row: tuple[Any, ...]) -> Message:
    msg_id, topic, payload, qos, retain, props, expires_at, origin, created_at = row
    return Message(
        msg_id=int(msg_id),
        topic=str(topic),
        payload=bytes(payload),
        qos=int(qos),
        retain=bool(retain),
        properties=decode_properties(props),
        expires_at=None if expires_at is None else float(expires_at),
        origin_client_id=str(origin),
        created_at=float(created_at),
    )


MESSAGE_COLUMNS = "msg_id, topic, payload, qos, retain, props, expires_at, origin, created_at"


# --- queue entries -------------------------------------------------------------------------


def queue_row(e: QueueEntry) -> tuple[object, ...]:
    ids = e.subscription_ids
    return (
        e.client_id,
        e.seq,
        e.msg_id,
        e.qos,
        STATE_CODES[e.state],
        e.packet_id,
        e.retain,
        ",".join(map(str, ids)) if ids else "",
    )


QUEUE_COLUMNS = "client_id, seq, msg_id, qos, state, packet_id, retain, subscription_ids"


def queue_entry_from_row(row: tuple[Any, ...]) -> QueueEntry:
    client_id, seq, msg_id, qos, state, packet_id, retain, ids = row
    try:
        entry_state = _STATES_BY_CODE[state]
    except KeyError:
        raise RowError(f"unknown queue entry state {state!r}") from None
    return QueueEntry(
        client_id=str(client_id),
        seq=int(seq),
        msg_id=int(msg_id),
        qos=int(qos),
        state=entry_state,
        packet_id=None if packet_id is None else int(packet_id),
        retain=bool(retain),
        subscription_ids=tuple(int(i) for i in ids.split(",")) if ids else (),
    )


# --- queue policies (a column of sessions) -------------------------------------------------

# Field name -> the JSON types its value may have (bool is an int: checked first).
_POLICY_INTS = frozenset({"max_messages", "max_bytes", "default_expiry"})
_POLICY_TOPICS = frozenset({"notify_topic", "pending_topic"})
_POLICY_TEXTS = frozenset({"command_schema"})  # checked where it is used (command_check.py)


def encode_queue_policy(policy: QueuePolicy | None) -> str | None:
    """Compact JSON of the fields a client set; NULL when the session has no policy."""
    if policy is None:
        return None
    out: dict[str, object] = {}
    for f in dataclasses.fields(QueuePolicy):
        value = getattr(policy, f.name)
        if value is None:
            continue
        out[f.name] = value.value if isinstance(value, Overflow) else value
    return json.dumps(out, separators=(",", ":"))


def decode_queue_policy(text: str | None) -> QueuePolicy | None:
    if text is None:
        return None
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise RowError(f"queue policy is not an object: {text[:80]!r}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _POLICY_INTS:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        elif name in _POLICY_TOPICS or name in _POLICY_TEXTS:
            ok = isinstance(value, str)
        elif name == "coalesce":
            ok = isinstance(value, bool)
        elif name == "overflow":
            ok = isinstance(value, str) and value in _OVERFLOWS
            value = _OVERFLOWS.get(value) if ok else value
        else:
            raise RowError(f"unknown queue policy field {name!r}")
        if not ok:
            raise RowError(f"bad queue policy value {name}={value!r}")
        kwargs[name] = value
    return QueuePolicy(**kwargs)


_OVERFLOWS = {o.value: o for o in Overflow}


# --- sessions ------------------------------------------------------------------------------


def session_row(s: SessionRecord) -> tuple[object, ...]:
    w = s.will
    if w is None:
        will: tuple[object, ...] = (None, None, None, None, None)
    else:
        will = (w.topic, w.payload, w.qos, w.retain, encode_properties(w.properties))
    return (
        s.client_id,
        s.expiry_interval,
        s.protocol_version,
        s.username,
        s.disconnected_at,
        *will,
        None if s.queue_policy is None else encode_queue_policy(s.queue_policy),
        s.owner,
    )


SESSION_COLUMNS = (
    "client_id, expiry_interval, protocol_version, username, disconnected_at, "
    "will_topic, will_payload, will_qos, will_retain, will_props, queue_policy, owner"
)


def session_from_row(row: tuple[Any, ...]) -> SessionRecord:
    (
        client_id,
        expiry,
        version,
        username,
        disconnected_at,
        will_topic,
        will_payload,
        will_qos,
        will_retain,
        will_props,
        queue_policy,
        owner,
    ) = row
    will = None
    if will_topic is not None:
        will = Will(
            topic=str(will_topic),
            payload=bytes(will_payload),
            qos=int(will_qos),
            retain=bool(will_retain),
            properties=decode_properties(will_props),
        )
    return SessionRecord(
        client_id=str(client_id),
        expiry_interval=int(expiry),
        protocol_version=int(version),
        username=None if username is None else str(username),
        disconnected_at=None if disconnected_at is None else float(disconnected_at),
        will=will,
        queue_policy=decode_queue_policy(queue_policy),
        owner=None if owner is None else str(owner),
    )


# --- subscriptions -------------------------------------------------------------------------


def subscription_row(s: SubscriptionRecord) -> tuple[object, ...]:
    return (
        s.client_id,
        s.topic_filter,
        s.qos,
        s.no_local,
        s.retain_as_published,
        s.retain_handling,
        s.subscription_id,
    )


SUBSCRIPTION_COLUMNS = (
    "client_id, topic_filter, qos, no_local, retain_as_published, retain_handling, subscription_id"
)


def subscription_from_row(row: tuple[Any, ...]) -> SubscriptionRecord:
    client_id, topic_filter, qos, no_local, rap, retain_handling, sub_id = row
    return SubscriptionRecord(
        client_id=str(client_id),
        topic_filter=str(topic_filter),
        qos=int(qos),
        no_local=bool(no_local),
        retain_as_published=bool(rap),
        retain_handling=int(retain_handling),
        subscription_id=None if sub_id is None else int(sub_id),
    )
