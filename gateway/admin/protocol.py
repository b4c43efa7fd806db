"""The admin API's wire format: parsing requests and building responses (pure, no I/O).

A request is a JSON object (or an empty payload) published to ``<prefix>/bridge/request/<action>``.
The answer is ``{"ok": true, "data": ...}`` or ``{"ok": false, "error": "..."}``; a request's
``"id"`` member is echoed so that MQTT 3.1.1 clients, which have no correlation data, can
match answers to requests (for ``cancel`` it is the id of the command to cancel, echoed all
the same).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from devices.model import DevicePolicy
from gateway.broker.records import Message
from gateway.broker.session_info import SessionInfo

ACTIONS: Final = (
    "sessions",
    "devices",
    "pending",
    "cancel",
    "flush",
    "send",
    "kick",
    "delete_session",
    "set_policy",
    "reload",
)

JSON = object  # any value json.loads can return


class RequestError(ValueError):
    """The request cannot be carried out; the message is what the client is told."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class Request:
    action: str
    body: dict[str, object]
    id: object = MISSING  # the request's "id" member, echoed in the response
    error: str | None = None  # set when the request cannot even be read


def request_prefix(prefix: str) -> str:
    return f"{prefix}/bridge/request/"


def response_topic(prefix: str, action: str) -> str:
    return f"{prefix}/bridge/response/{action}"


def parse_request(topic: str, payload: bytes, prefix: str) -> Request:
    """Read one request; never raises (a bad request carries `error`)."""
    head = request_prefix(prefix)
    action = topic[len(head) :] if topic.startswith(head) else ""
    body: object
    if not payload.strip():
        body = {}
    else:
        try:
            body = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return Request(action, {}, error=f"the request is not valid JSON: {exc}")
    if not isinstance(body, dict):
        return Request(action, {}, error="the request must be a JSON object")
    # Not removed from the body: `cancel` names the command to cancel by its "id" too.
    request_id = body.get("id", MISSING)
    if action not in ACTIONS:
        return Request(
            action,
            body,
            request_id,
            error=f"unknown action {action!r} (known: {', '.join(ACTIONS)})",
        )
    return Request(action, body, request_id)


def encode(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def response(
    *, data: object = None, error: str | None = None, request_id: object = MISSING
) -> bytes:
    """The response body: ok with `data`, or not ok with `error`."""
    body: dict[str, object] = (
        {"ok": True, "data": data} if error is None else {"ok": False, "error": error}
    )
    if request_id is not MISSING:
        body["id"] = request_id
    return encode(body)


# --- arguments ------------------------------------------------------------------------------------


def required_str(body: Mapping[str, object], key: str) -> str:
    value = body.get(key)
    if value is None:
        raise RequestError(f"missing argument {key!r}")
    if not isinstance(value, str) or not value:
        raise RequestError(f"{key!r} must be a non-empty string")
    return value


def optional_str(body: Mapping[str, object], key: str) -> str | None:
    if body.get(key) is None:
        return None
    return required_str(body, key)


def required_int(body: Mapping[str, object], key: str) -> int:
    value = body.get(key)
    if value is None:
        raise RequestError(f"missing argument {key!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{key!r} must be a whole number")
    return value


def required_object(body: Mapping[str, object], key: str) -> dict[str, object]:
    value = body.get(key, MISSING)
    if value is MISSING:
        raise RequestError(f"missing argument {key!r}")
    if not isinstance(value, dict):
        raise RequestError(f"{key!r} must be a JSON object")
    return value


def optional_ttl(body: Mapping[str, object], key: str = "ttl") -> int | None:
    """A time-to-live in whole seconds (MQTT's message expiry interval), or None."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError(f"{key!r} must be a number of seconds")
    seconds = math.ceil(value)
    if not 1 <= seconds <= 0xFFFFFFFF:
        raise RequestError(f"{key!r} must be between 1 and 4294967295 seconds")
    return seconds


def policy_overrides(body: Mapping[str, object], key: str = "policy") -> dict[str, object] | None:
    """The `policy` argument of set_policy: an object of policy keys, or null (config's)."""
    value = body.get(key, MISSING)
    if value is MISSING:
        raise RequestError(f"missing argument {key!r} (an object of policy keys, or null)")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RequestError(f"{key!r} must be an object of policy keys, or null")
    return value


# --- data shapes ----------------------------------------------------------------------------------


def _ts(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def session_entry(info: SessionInfo, device: str | None) -> dict[str, object]:
    return {
        "client_id": info.client_id,
        "username": info.username,
        "owner": info.owner,
        "protocol": info.protocol_version,
        "persistent": info.persistent,
        "connected": info.connected,
        "offline_since": None if info.connected else _ts(info.disconnected_at),
        "session_expiry": info.expiry_interval,
        "expires_at": _ts(info.expires_at),
        "subscriptions": list(info.subscriptions),
        "queued": info.queued,
        "queued_bytes": info.queued_bytes,
        "inflight": info.inflight,
        "inflight_bytes": info.inflight_bytes,
        "listener": info.listener,
        "address": info.peer,
        "device": device,
    }


def command_of(payload: bytes) -> object:
    """A queued payload as JSON when it is JSON, else as text."""
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return payload.decode("utf-8", "replace")


def pending_entry(seq: int, message: Message, in_flight: bool, attempts: int) -> dict[str, object]:
    return {
        "id": seq,
        "command": command_of(message.payload),
        "queued_at": _ts(message.created_at),
        "expires_at": _ts(message.expires_at),
        "state": "in_flight" if in_flight else "queued",
        "attempts": attempts,
        "topic": message.topic,
    }


def policy_dict(policy: DevicePolicy) -> dict[str, object]:
    return dataclasses.asdict(policy)


def command_event(device: str, payload: bytes, now: float) -> dict[str, object] | None:
    """A `<prefix>/<device>/result` outcome as an event; None if it is not one."""
    try:
        outcome = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(outcome, dict) or not isinstance(outcome.get("result"), str):
        return None
    parts: list[str] = []
    if "command" in outcome:
        parts.append(encode(outcome["command"]).decode())
    why = outcome.get("detail") or outcome.get("reason")
    if why:
        parts.append(str(why))
    ts = outcome.get("ts")
    return {
        "type": "command",
        "ts": ts if isinstance(ts, int | float) and not isinstance(ts, bool) else round(now, 3),
        "device": device,
        "result": outcome["result"],
        "detail": ": ".join(parts),
    }
