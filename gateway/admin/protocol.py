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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from gateway.broker.records import Message
from gateway.broker.session_info import SessionInfo
from gateway.devicetypes.policy import DevicePolicy

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
    "upstreams",
)

JSON = object  # any value json.loads can return

T = TypeVar("T")
R = TypeVar("R")

# The lists (sessions, devices, pending, upstreams) come in pages: thousands of sessions would
# not fit in one MQTT packet (8,000 made more than 1 MiB). A page also ends early, before its
# JSON passes PAGE_BYTES (or half the broker's max packet size), whatever the limit asked.
DEFAULT_PAGE: Final = 500
MAX_PAGE: Final = 1000
PAGE_BYTES: Final = 256 * 1024


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
    *,
    data: object = None,
    error: str | None = None,
    request_id: object = MISSING,
    page: Page | None = None,
) -> bytes:
    """The response body: ok with `data`, or not ok with `error`; a list's page info beside
    its data (so that `data` keeps its shape)."""
    body: dict[str, object] = (
        {"ok": True, "data": data} if error is None else {"ok": False, "error": error}
    )
    if page is not None and error is None:
        body["page"] = page.info()
    if request_id is not MISSING:
        body["id"] = request_id
    return encode(body)


# --- pages ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageRequest:
    offset: int = 0
    limit: int = DEFAULT_PAGE


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: ``data`` in the list's own shape, and where it sits in it."""

    data: object
    offset: int
    limit: int
    total: int
    next: int | None  # the offset of the next page; None after the last one

    def info(self) -> dict[str, object]:
        return {"offset": self.offset, "limit": self.limit, "total": self.total, "next": self.next}


def page_request(body: Mapping[str, object]) -> PageRequest:
    """The `offset` and `limit` arguments of a list request (both optional)."""
    offset = body.get("offset", 0)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise RequestError("'offset' must be a whole number >= 0")
    limit = body.get("limit", DEFAULT_PAGE)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise RequestError(f"'limit' must be a whole number from 1 to {MAX_PAGE}")
    return PageRequest(offset, limit)


def build_page(
    items: Sequence[T],
    request: PageRequest,
    build: Callable[[T], R],
    budget: int = PAGE_BYTES,
) -> tuple[list[R], int | None]:
    """Build the page's entries in order until ``request.limit`` or until their JSON would
    pass ``budget`` bytes (at least one entry, so that paging always moves on); returns the
    entries and the offset of the next page (None after the last one)."""
    start = min(request.offset, len(items))
    built: list[R] = []
    size = 0
    for item in items[start : start + request.limit]:
        entry = build(item)
        n = len(encode(entry)) + 1
        if built and size + n > budget:
            break
        built.append(entry)
        size += n
    end = start + len(built)
    return built, (end if end < len(items) else None)


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
