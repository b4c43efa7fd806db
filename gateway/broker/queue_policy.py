"""Per-session queue policy chosen by a trusted client, and notices about what the queue did.

The gateway's own device sessions are MQTT clients like any other; what makes a sleeping
device's session a good command queue (a small depth, coalescing of superseded commands, a
default time-to-live, being told when a command is dropped) is asked for in the CONNECT, as
MQTT 5 user properties, and honoured only for trusted connections:

    queue-max-messages   int >= 0         queue-overflow   drop-oldest | reject-new
    queue-max-bytes      int >= 0         queue-coalesce   json-keys | off
    queue-default-expiry seconds >= 0     queue-notify-topic  a topic name
    queue-hold           1                queue-pending-topic a topic name
    queue-schema         a command schema (gateway/commands/schema.py) as JSON: a message
                         it refuses is not queued for this session (command_check.py)

``queue-hold`` belongs to the connection, not the session: nothing is delivered to it (QoS 0
included; everything stays queued). A client that connects only to create or reconfigure its
session -- a device known from config that is not awake -- must not take a command into
flight: a newer command could no longer supersede it.

Untrusted clients' user properties are ignored (and passed on nowhere): the limits of
config.yaml apply to them.

The policy is part of the durable session (SessionRecord.queue_policy): a session restored
after a restart keeps coalescing, expiring and reporting commands that arrive before its
device connects again. Every CONNECT decides the policy anew: a trusted client's replaces it
(and one that asks for nothing clears it); an untrusted client that connects with the same
client id (taking the session over) never inherits it, so the policy is dropped and the
session continues on config.yaml's limits. Deleting the session deletes the policy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable

from gateway.broker.records import Message, QueuePolicy
from gateway.broker.settings import Overflow, QueueLimits
from gateway.commands.schema import CommandSchema
from gateway.mqtt.codec import is_valid_topic_name
from gateway.mqtt.packets import UserProperty

log = logging.getLogger("gateway.broker")

PREFIX = "queue-"
HOLD = ("queue-hold", "1")


def parse_queue_policy(properties: tuple[UserProperty, ...], client_id: str) -> QueuePolicy | None:
    """The queue policy a trusted client's CONNECT user properties ask for; None if they
    set nothing valid (the session then runs on config.yaml's limits)."""
    fields: dict[str, object] = {}
    for name, value in properties:
        if not name.startswith(PREFIX) or (name, value) == HOLD:
            continue  # HOLD belongs to the connection (connect.py), not the session's policy
        key = name[len(PREFIX) :]
        try:
            if key in ("max-messages", "max-bytes", "default-expiry"):
                number = int(value)
                if number < 0:
                    raise ValueError("negative")
                fields[key.replace("-", "_")] = number
            elif key == "overflow":
                fields["overflow"] = Overflow(value)
            elif key == "coalesce":
                if value not in ("json-keys", "off"):
                    raise ValueError(value)
                fields["coalesce"] = value == "json-keys"
            elif key in ("notify-topic", "pending-topic"):
                if not is_valid_topic_name(value):
                    raise ValueError(value)
                fields[key.replace("-", "_")] = value
            elif key == "schema":
                fields["command_schema"] = CommandSchema.from_json(value).text
            else:
                raise ValueError("unknown property")
        except ValueError as exc:  # SchemaError too
            # A trusted client is our own code: say so loudly, keep the session usable.
            log.warning(
                "client %r: ignoring queue policy %s=%r (%s)", client_id, name, value[:200], exc
            )
    if not fields:
        return None
    return QueuePolicy(**fields)  # type: ignore[arg-type]


def queue_limits(base: QueueLimits, policy: QueuePolicy | None) -> QueueLimits:
    """``base`` (config.yaml's limits for the client) with what ``policy`` overrides."""
    if policy is None:
        return base
    changes: dict[str, object] = {}
    for name in _LIMIT_FIELDS:
        value = getattr(policy, name)
        if value is not None:
            changes[name] = value
    if not changes:
        return base
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


_LIMIT_FIELDS = ("max_messages", "max_bytes", "overflow", "coalesce", "default_expiry")


def json_keys(payload: bytes) -> frozenset[str] | None:
    """The keys of a JSON object payload; None if it is not one."""
    if not payload or payload[:1] != b"{":
        return None
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return frozenset(value) if isinstance(value, dict) else None


def _command(msg: Message) -> object:
    try:
        return json.loads(msg.payload)
    except ValueError:
        return msg.payload.decode("utf-8", "replace")


def pending_list(entries: Iterable[tuple[int, Message, bool]]) -> bytes:
    """The retained JSON list of a session's undelivered messages: (seq, message, in flight)."""
    return json.dumps(
        [
            {
                "id": seq,
                "topic": msg.topic,
                "command": _command(msg),
                "queued_at": round(msg.created_at, 3),
                "expires_at": None if msg.expires_at is None else round(msg.expires_at, 3),
                "state": "in_flight" if in_flight else "queued",
            }
            for seq, msg, in_flight in entries
        ],
        separators=(",", ":"),
    ).encode()


def notice(kind: str, msg: Message, now: float, **extra: object) -> bytes:
    """A JSON report about a queued message that will not be delivered."""
    body: dict[str, object] = {
        "result": kind,
        "topic": msg.topic,
        "command": _command(msg),
        "queued_at": round(msg.created_at, 3),
        "ts": round(now, 3),
    }
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()
