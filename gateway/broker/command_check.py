"""Commands checked against their device's schema before they are queued.

A trusted device session sends its command schema in its CONNECT (``queue-schema``, see
queue_policy.py); it is part of the session's durable queue policy. A message routed to such a
session is checked first: one the schema refuses never enters the queue, never supersedes a
queued command and is never delivered to that session (other subscribers of the topic still
get it). The publisher is told -- MQTT 5 PUBACK/PUBREC 0x99 (not a JSON object) or 0x83 (not
allowed by the schema) with a reason string, and everyone on the session's notify topic
(``<prefix>/<id>/result``) gets ``{"result": "rejected", ...}``.
"""

from __future__ import annotations

import functools
import json
import logging

from gateway.commands.schema import CommandSchema, Rejection, SchemaError

log = logging.getLogger("gateway.broker")

PAYLOAD_FORMAT = "payload_format"
# Reason strings are for people and must fit small Maximum Packet Sizes: a schema's message
# quotes at most a short part of the value, so this cuts only oddly long key names.
MAX_REASON_CHARS = 200
_PREVIEW_CHARS = 200  # of a payload that is not JSON, in the result message
# A refused command is echoed in its result only up to this size: a flood of large bad
# commands must not become a flood of large results for every subscriber of the topic.
_ECHO_BYTES = 1024


@functools.lru_cache(maxsize=128)
def compiled(text: str) -> CommandSchema | None:
    """The schema of a policy (compiled once per distinct text: a thousand thermostats share
    one); None if it does not compile, which only a damaged store can cause."""
    try:
        return CommandSchema.from_json(text)
    except SchemaError as exc:
        log.warning("a stored command schema is unusable, commands go unchecked: %s", exc)
        return None


def check(schema_text: str, payload: bytes) -> Rejection | None:
    schema = compiled(schema_text)
    return None if schema is None else schema.check_payload(payload)


def reason_string(rejection: Rejection) -> str:
    detail = rejection.detail
    return detail if len(detail) <= MAX_REASON_CHARS else detail[: MAX_REASON_CHARS - 1] + "…"


def rejection_notice(topic: str, payload: bytes, rejection: Rejection, now: float) -> bytes:
    """The ``result`` message of a refused command (the same shape as the queue's notices)."""
    body = {
        "result": "rejected",
        "reason": rejection.reason,
        "detail": rejection.detail,
        "topic": topic,
        "command": rejection.command,
        "ts": round(now, 3),
    }
    if rejection.command is not None and len(payload) <= _ECHO_BYTES:
        try:
            return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        except ValueError:  # NaN or Infinity in it: not JSON for whoever reads the result
            pass
    # As much of the payload as a person needs to recognise it, never a huge copy of it.
    body["command"] = payload[: _PREVIEW_CHARS * 4].decode("utf-8", "replace")[:_PREVIEW_CHARS]
    return json.dumps(body, separators=(",", ":")).encode()
