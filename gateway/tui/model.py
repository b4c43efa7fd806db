"""What the terminal UI knows about the gateway, built from the admin API's messages.

Pure: no I/O, no clock of its own (``now`` is passed in), no Textual. Every payload comes
from the network, so nothing here trusts its shape: an entry that does not look right is
logged and skipped, and a message that is not what its topic promises changes nothing.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

from gateway.commands.schema import CommandSchema, SchemaError

_Row = TypeVar("_Row")
log = logging.getLogger(__name__)

View = Literal["devices", "sessions", "pending", "events", "upstreams"]
VIEWS: Final[tuple[View, ...]] = ("devices", "sessions", "pending", "events", "upstreams")

# (label, key) of each table column, in display order.
COLUMNS: Final[dict[View, tuple[tuple[str, str], ...]]] = {
    "devices": (
        ("Device", "id"),
        ("Kind", "kind"),
        ("Link", "link"),
        ("Seen", "seen"),
        ("Pending", "pending"),
        ("Session", "session"),
        ("Wake", "wake"),
        ("RSSI", "rssi"),
        ("Address", "address"),
        ("Name", "name"),
    ),
    "sessions": (
        ("Client", "client_id"),
        ("State", "state"),
        ("Session", "kind"),
        ("Queued", "queued"),
        ("In flight", "inflight"),
        ("Expires", "expires"),
        ("MQTT", "protocol"),
        ("Subs", "subs"),
        ("User", "user"),
        ("Listener", "listener"),
        ("Address", "address"),
    ),
    "pending": (
        ("Device", "device"),
        ("Id", "id"),
        ("State", "state"),
        ("Command", "command"),
        ("Age", "age"),
        ("Expires in", "expires"),
        ("Tries", "attempts"),
        ("Topic", "topic"),
    ),
    "events": (
        ("Time", "time"),
        ("Event", "type"),
        ("Who", "who"),
        ("Detail", "detail"),
    ),
    # State and queue first: at 80 columns they are what is on screen (Enter shows the rest).
    "upstreams": (
        ("Upstream", "name"),
        ("State", "state"),
        ("Queued", "queued"),
        ("Out/In", "traffic"),
        ("Msg/s out/in", "rate"),
        ("Dropped", "dropped"),
        ("Broker", "address"),
        ("Last error", "last_error"),
    ),
}

Row = tuple[str, tuple[str, ...]]  # (row key, cell texts)

_SEP = "\x1f"  # joins the parts of a row key; cannot occur in a client id or device id
_COMMAND_WIDTH = 40
_DETAIL_WIDTH = 60
_ERROR_WIDTH = 60
NO_UPSTREAM: Final = "no upstream configured (see upstream: in config.yaml)"


# --- tolerant readers ------------------------------------------------------------------------


def _str(obj: Mapping[str, object], key: str, default: str = "") -> str:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return default


def _int(obj: Mapping[str, object], key: str, default: int = 0) -> int:
    value = obj.get(key)
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) < 2**53:
        return int(value)
    return default


def _opt_float(obj: Mapping[str, object], key: str) -> float | None:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    as_float = float(value)
    if as_float != as_float or as_float in (float("inf"), float("-inf")):
        return None
    return as_float


def _opt_int(obj: Mapping[str, object], key: str) -> int | None:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return _int(obj, key)


def _str_pairs(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        return ()
    return tuple(
        sorted((k, v) for k, v in value.items() if isinstance(k, str) and isinstance(v, str))
    )


def _bool(obj: Mapping[str, object], key: str) -> bool:
    return obj.get(key) is True


def _is_object(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def compact_json(value: object) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)


def _schema_text(value: object) -> str:
    # In the order the device declares its keys: messages about a command list them so.
    if not _is_object(value):
        return ""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return ""


@functools.lru_cache(maxsize=32)
def _compiled(text: str) -> CommandSchema | None:
    try:
        return CommandSchema.from_json(text)
    except SchemaError:  # a newer gateway's schema language: the gateway still checks
        return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Control characters written out (``\\x1b``) instead of sent to the terminal: client ids,
    device names, topics and upstream errors come from the network, and an escape sequence
    in one would drive the operator's terminal (clear it, recolour it, retitle it)."""
    if text.isprintable():
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())  # newlines would break a table row
    return text if len(text) <= width else text[: width - 1] + "…"


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    client_id: str
    username: str = ""
    protocol: int = 0
    persistent: bool = False
    connected: bool = False
    offline_since: float | None = None
    session_expiry: int = 0
    expires_at: float | None = None
    subscriptions: tuple[str, ...] = ()
    queued: int = 0
    queued_bytes: int = 0
    inflight: int = 0
    inflight_bytes: int = 0
    listener: str = ""
    address: str = ""
    device: str | None = None

    @classmethod
    def parse(cls, obj: object) -> Session | None:
        if not _is_object(obj):
            return None
        assert isinstance(obj, dict)
        client_id = obj.get("client_id")
        if not isinstance(client_id, str):
            return None
        subs = obj.get("subscriptions")
        device = obj.get("device")
        return cls(
            client_id=client_id,
            username=_str(obj, "username"),
            protocol=_int(obj, "protocol"),
            persistent=_bool(obj, "persistent"),
            connected=_bool(obj, "connected"),
            offline_since=_opt_float(obj, "offline_since"),
            session_expiry=_int(obj, "session_expiry"),
            expires_at=_opt_float(obj, "expires_at"),
            subscriptions=tuple(s for s in subs if isinstance(s, str))
            if isinstance(subs, list)
            else (),
            queued=_int(obj, "queued"),
            queued_bytes=_int(obj, "queued_bytes"),
            inflight=_int(obj, "inflight"),
            inflight_bytes=_int(obj, "inflight_bytes"),
            listener=_str(obj, "listener"),
            address=_str(obj, "address"),
            device=device if isinstance(device, str) else None,
        )


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    kind: str = ""
    name: str = ""
    policy: tuple[tuple[str, object], ...] = ()
    link: str = "unknown"
    last_seen: float | None = None
    address: str = ""
    rssi: int | None = None
    wake_interval: float | None = None
    pending: int = 0
    schema: str = ""  # its command schema as compact JSON; "" when it takes no commands
    wake_observed: float | None = None  # seconds between its last two wake-ups, as heard
    # Where each policy key's value comes from: "default", "config" or "admin".
    policy_from: tuple[tuple[str, str], ...] = ()

    @property
    def policy_dict(self) -> dict[str, object]:
        return dict(self.policy)

    @classmethod
    def parse(cls, obj: object) -> Device | None:
        if not _is_object(obj):
            return None
        assert isinstance(obj, dict)
        device_id = obj.get("id")
        if not isinstance(device_id, str):
            return None
        policy = obj.get("policy")
        return cls(
            id=device_id,
            kind=_str(obj, "kind"),
            name=_str(obj, "name"),
            policy=tuple(sorted(policy.items())) if _is_object(policy) else (),  # type: ignore[union-attr]
            link=_str(obj, "link", "unknown"),
            last_seen=_opt_float(obj, "last_seen"),
            address=_str(obj, "address"),
            rssi=_opt_int(obj, "rssi"),
            wake_interval=_opt_float(obj, "wake_interval"),
            pending=_int(obj, "pending"),
            schema=_schema_text(obj.get("schema")),
            wake_observed=_opt_float(obj, "wake_observed"),
            policy_from=_str_pairs(obj.get("policy_from")),
        )


@dataclass(frozen=True, slots=True)
class Pending:
    device: str
    id: int | str
    command: object = None
    queued_at: float | None = None
    expires_at: float | None = None
    state: str = "queued"
    attempts: int = 0
    topic: str = ""

    @classmethod
    def parse(cls, device: str, obj: object) -> Pending | None:
        if not _is_object(obj):
            return None
        assert isinstance(obj, dict)
        ident = obj.get("id")
        if isinstance(ident, bool) or not isinstance(ident, int | str):
            return None
        return cls(
            device=device,
            id=ident,
            command=obj.get("command"),
            queued_at=_opt_float(obj, "queued_at"),
            expires_at=_opt_float(obj, "expires_at"),
            state=_str(obj, "state", "queued"),
            attempts=_int(obj, "attempts"),
            topic=_str(obj, "topic"),
        )


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream connection (gateway/upstream/status.py has the gateway's side)."""

    name: str
    host: str = ""
    port: int = 0
    protocol: int = 0
    client_id: str = ""
    state: str = "unknown"
    since: float | None = None
    queued: int = 0
    forwarded: int = 0
    received: int = 0
    dropped: int = 0
    duplicates: int = 0
    rate_out: float = 0.0
    rate_in: float = 0.0
    last_error: str = ""

    @classmethod
    def parse(cls, obj: object) -> Upstream | None:
        if not _is_object(obj):
            return None
        assert isinstance(obj, dict)
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            return None
        return cls(
            name=name,
            host=_str(obj, "host"),
            port=_int(obj, "port"),
            protocol=_int(obj, "protocol"),
            client_id=_str(obj, "client_id"),
            state=_str(obj, "state", "unknown"),
            since=_opt_float(obj, "since"),
            queued=_int(obj, "queued"),
            forwarded=_int(obj, "forwarded"),
            received=_int(obj, "received"),
            dropped=_int(obj, "dropped"),
            duplicates=_int(obj, "duplicates"),
            rate_out=_opt_float(obj, "rate_out") or 0.0,
            rate_in=_opt_float(obj, "rate_in") or 0.0,
            last_error=_str(obj, "last_error"),
        )


@dataclass(frozen=True, slots=True)
class Event:
    seq: int  # our own arrival counter: events may come without one
    ts: float | None
    type: str
    who: str
    detail: str
    result: str = ""  # command events: their outcome


@dataclass(frozen=True, slots=True)
class Status:
    version: str = ""
    started_at: float | None = None
    uptime: float | None = None
    clients: int | None = None
    sessions: int | None = None
    devices: int | None = None
    pending: int | None = None  # commands waiting, all devices
    msgs_in_per_s: float | None = None
    msgs_out_per_s: float | None = None
    store_bytes: int | None = None
    upstreams: int | None = None  # connections configured
    upstreams_connected: int | None = None

    @classmethod
    def parse(cls, obj: object) -> Status | None:
        if not _is_object(obj):
            return None
        assert isinstance(obj, dict)
        return cls(
            version=_str(obj, "version"),
            started_at=_opt_float(obj, "started_at"),
            uptime=_opt_float(obj, "uptime"),
            clients=_opt_int(obj, "clients"),
            sessions=_opt_int(obj, "sessions"),
            devices=_opt_int(obj, "devices"),
            pending=_opt_int(obj, "pending"),
            msgs_in_per_s=_opt_float(obj, "msgs_in_per_s"),
            msgs_out_per_s=_opt_float(obj, "msgs_out_per_s"),
            store_bytes=_opt_int(obj, "store_bytes"),
            upstreams=_opt_int(obj, "upstreams"),
            upstreams_connected=_opt_int(obj, "upstreams_connected"),
        )


# --- formatting -------------------------------------------------------------------------------


def fmt_duration(seconds: float) -> str:
    """A short, sortable-by-eye duration: 45s, 12m, 3h05m, 2d04h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def fmt_ago(ts: float | None, now: float) -> str:
    return "-" if ts is None else f"{fmt_duration(now - ts)} ago"


def fmt_until(ts: float | None, now: float) -> str:
    if ts is None:
        return "never"
    if ts <= now:
        return "expired"
    return fmt_duration(ts - now)


def fmt_rate(per_second: float) -> str:
    return f"{per_second:.0f}" if per_second >= 10 or per_second == 0 else f"{per_second:.1f}"


def _wake_text(d: Device) -> str:
    """What the device does (heard: "~30s"), else what it was configured to do; never the
    kind's default, which says nothing about this device."""
    if d.last_seen is None:
        return "never seen"
    if d.wake_interval is None:
        return "always on"
    if d.wake_observed is not None:
        return f"~{fmt_duration(d.wake_observed)}"
    if dict(d.policy_from).get("wake_interval", "default") != "default":
        return fmt_duration(d.wake_interval)
    return "-"


def _protocol(level: int) -> str:
    return {3: "3.1", 4: "3.1.1", 5: "5"}.get(level, str(level) if level else "?")


# --- the model --------------------------------------------------------------------------------


@dataclass
class Model:
    """The gateway as last reported. ``versions`` counts the changes of each view so that a
    UI redraws only what changed."""

    prefix: str = "gw"
    max_events: int = 500
    history_per_device: int = 5
    # Renders event times; tests pass time.gmtime so that output does not depend on TZ.
    localtime: Callable[[float], time.struct_time] = time.localtime
    sessions: dict[str, Session] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    pending: dict[str, tuple[Pending, ...]] = field(default_factory=dict)
    events: deque[Event] = field(default_factory=deque)
    # Outcomes of commands that did not run (superseded, expired, cancelled, ...), per device,
    # newest first: shown under the device's pending commands.
    history: dict[str, deque[Event]] = field(default_factory=dict)
    upstreams: dict[str, Upstream] = field(default_factory=dict)
    # None until the gateway has said which upstreams it has: an empty table then means
    # "none configured", before it means "not known yet".
    upstreams_loaded: bool = False
    upstreams_problem: str = ""  # why the gateway could not list them (an older gateway)
    status: Status | None = None
    versions: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*VIEWS, "status"), 0))
    ignored: int = 0  # payloads that made no sense (for tests and the curious)
    _event_seq: int = 0

    # --- input -------------------------------------------------------------------------------

    def handle_message(self, topic: str, payload: bytes) -> str | None:
        """Apply one live message; returns the view it changed (or "status"), None if none."""
        base = f"{self.prefix}/bridge/"
        if not topic.startswith(base):
            return None
        rest = topic[len(base) :]
        data = self._decode(topic, payload)
        if data is _BAD:
            return None
        changed: bool
        if rest == "updates/sessions":
            changed, view = self.set_sessions(data), "sessions"
        elif rest == "updates/devices":
            changed, view = self.set_devices(data), "devices"
        elif rest == "updates/pending":
            changed, view = self.set_pending(data), "pending"
        elif rest == "updates/upstreams":
            changed, view = self.set_upstreams(data), "upstreams"
        elif rest == "events":
            changed, view = self.add_event(data), "events"
        elif rest == "status":
            changed, view = self.set_status(data), "status"
        else:
            return None
        return view if changed else None

    def _decode(self, topic: str, payload: bytes) -> object:
        if not payload:
            return _BAD  # a cleared retained message: nothing to show
        try:
            return json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            self._ignore(f"{topic}: not JSON")
            return _BAD

    def _ignore(self, why: str) -> None:
        self.ignored += 1
        log.warning("ignored: %s", why)

    def _parse_list(
        self,
        view: str,
        data: object,
        parse: Callable[[object], _Row | None],
        key: Callable[[_Row], str],
    ) -> dict[str, _Row] | None:
        """Entries of a list answer by key; None (and counted as ignored) if it is no list."""
        if not isinstance(data, list):
            self._ignore(f"{view}: not a list")
            return None
        rows: dict[str, _Row] = {}
        for item in data:
            row = parse(item)
            if row is None:
                self._ignore(f"{view}: bad entry {_clip(repr(item), 80)}")
                continue
            rows[key(row)] = row
        return rows

    def set_sessions(self, data: object) -> bool:
        sessions = self._parse_list("sessions", data, Session.parse, lambda s: s.client_id)
        if sessions is None or sessions == self.sessions:
            return False
        self.sessions = sessions
        self.versions["sessions"] += 1
        return True

    def set_devices(self, data: object) -> bool:
        devices = self._parse_list("devices", data, Device.parse, lambda d: d.id)
        if devices is None or devices == self.devices:
            return False
        self.devices = devices
        self.versions["devices"] += 1
        return True

    def set_upstreams(self, data: object) -> bool:
        upstreams = self._parse_list("upstreams", data, Upstream.parse, lambda u: u.name)
        if upstreams is None:
            return False
        if upstreams == self.upstreams and self.upstreams_loaded and not self.upstreams_problem:
            return False
        self.upstreams = upstreams
        self.upstreams_loaded, self.upstreams_problem = True, ""
        self.versions["upstreams"] += 1
        return True

    def upstreams_unavailable(self, why: str) -> None:
        """The gateway did not answer the upstreams request (one older than this TUI)."""
        if not self.upstreams and why != self.upstreams_problem:
            self.upstreams_problem = why
            self.versions["upstreams"] += 1

    def set_pending(self, data: object, device: str | None = None) -> bool:
        """`data` maps device ids to lists; with `device`, only that device's list changes."""
        if not _is_object(data):
            self._ignore("pending: not an object")
            return False
        assert isinstance(data, dict)
        pending = {} if device is None else dict(self.pending)
        if device is not None:
            pending.pop(device, None)
        for dev, items in data.items():
            if not isinstance(items, list):
                self._ignore(f"pending: {dev!r} is not a list")
                continue
            parsed = []
            for item in items:
                entry = Pending.parse(dev, item)
                if entry is None:
                    self._ignore(f"pending: bad entry {_clip(repr(item), 80)}")
                    continue
                parsed.append(entry)
            if parsed:
                pending[dev] = tuple(parsed)
        if pending == self.pending:
            return False
        self.pending = pending
        self.versions["pending"] += 1
        return True

    def add_event(self, data: object) -> bool:
        if not _is_object(data):
            self._ignore("event: not an object")
            return False
        assert isinstance(data, dict)
        kind = _str(data, "type", "?")
        self._event_seq += 1
        result = ""
        if kind == "command":
            who = _str(data, "device", "?")
            result = _str(data, "result", "?")
            detail = data.get("detail")
            text = result if detail in (None, "") else f"{result}: {self._detail(detail)}"
        elif kind == "events_dropped":
            who = ""
            text = f"{_int(data, 'count')} events not shown (rate limit)"
        else:
            who = _str(data, "client_id")
            detail = data.get("detail")
            text = "" if detail in (None, "") else self._detail(detail)
        event = Event(self._event_seq, _opt_float(data, "ts"), kind, who, text, result)
        self.events.appendleft(event)
        while len(self.events) > self.max_events:
            self.events.pop()
        self.versions["events"] += 1
        if kind == "command" and result not in ("", "delivered", "?"):
            past = self.history.setdefault(who, deque(maxlen=self.history_per_device))
            past.appendleft(event)
            self.versions["pending"] += 1
        return True

    @staticmethod
    def _detail(detail: object) -> str:
        if isinstance(detail, str):
            return detail
        if _is_object(detail):
            assert isinstance(detail, dict)
            # A command notice: what matters is which command it was.
            if "command" in detail:
                return compact_json(detail["command"])
        return compact_json(detail)

    def set_status(self, data: object) -> bool:
        status = Status.parse(data)
        if status is None:
            self._ignore("status: not an object")
            return False
        if status == self.status:
            return False
        self.status = status
        self.versions["status"] += 1
        return True

    def apply_response(self, action: str, data: object) -> bool:
        """Feed the data of a successful list request (sessions, devices, pending)."""
        if action == "sessions":
            return self.set_sessions(data)
        if action == "devices":
            return self.set_devices(data)
        if action == "pending":
            return self.set_pending(data)
        if action == "upstreams":
            return self.set_upstreams(data)
        return False

    # --- lookups ------------------------------------------------------------------------------

    def details(self, view: View, key: str) -> tuple[str, list[tuple[str, str]]] | None:
        """Everything known about one row, as (title, [(field, value)]): what the table
        has no room for (subscriptions, the whole policy, the whole command)."""
        record: object = None
        title = key
        if view == "devices":
            record = self.devices.get(key)
        elif view == "sessions":
            record = self.sessions.get(key)
        elif view == "pending":
            record = self.pending_for_key(key)
            if record is None:
                parts = key.split(_SEP)
                past = self.history.get(parts[1], ()) if len(parts) == 3 else ()
                record = next((e for e in past if str(e.seq) == parts[2]), None)
            if record is not None:
                title = f"{getattr(record, 'device', '')} {getattr(record, 'id', '')}".strip()
        elif view == "upstreams":
            record = self.upstreams.get(key)
            if record is not None:
                title = f"upstream {key}"
        else:
            record = next((e for e in self.events if str(e.seq) == key), None)
        if record is None:
            return None
        fields: list[tuple[str, str]] = []
        for name in getattr(record, "__slots__", ()):
            value = getattr(record, name)
            if name in ("policy", "policy_from") and isinstance(value, tuple):
                value = dict(value)
            if isinstance(value, float) and (
                name.endswith(("_at", "_since", "_seen")) or name in ("ts", "since")
            ):
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.localtime(value))
                text = f"{stamp} ({compact_json(value)})"
            elif name == "protocol" and isinstance(value, int):
                text = _protocol(value)  # as config.yaml writes it: 3.1.1, not 4
            elif isinstance(value, str):
                text = value or "-"
            elif isinstance(value, tuple):
                text = ", ".join(str(v) for v in value) or "-"
            else:
                text = compact_json(value)
            fields.append((name, text))
        return title, fields

    def command_schema(self, device: str) -> CommandSchema | None:
        """What a command for ``device`` may be, as its listing says; None when unknown."""
        record = self.devices.get(device)
        if record is None or not record.schema:
            return None
        return _compiled(record.schema)

    def pending_for_key(self, key: str) -> Pending | None:
        """The live pending command behind a Pending-table row key (None for history rows)."""
        parts = key.split(_SEP)
        if len(parts) != 3 or parts[0] != "p":
            return None
        for entry in self.pending.get(parts[1], ()):
            if str(entry.id) == parts[2]:
                return entry
        return None

    @staticmethod
    def device_of_key(view: View, key: str) -> str | None:
        """The device a row of the Devices or Pending table is about."""
        if view == "devices":
            return key
        if view == "pending":
            parts = key.split(_SEP)
            return parts[1] if len(parts) == 3 else None
        return None

    # --- output -------------------------------------------------------------------------------

    def rows(self, view: View, now: float, query: str = "") -> list[Row]:
        """The rows of a table, sorted, keeping those whose text contains `query`
        (case-insensitive; every word must appear)."""
        if view == "devices":
            rows = [self._device_row(d, now) for _, d in sorted(self.devices.items())]
        elif view == "sessions":
            rows = [self._session_row(s, now) for _, s in sorted(self.sessions.items())]
        elif view == "pending":
            rows = list(self._pending_rows(now))
        elif view == "upstreams":
            rows = [self._upstream_row(u, now) for _, u in sorted(self.upstreams.items())]
        else:
            rows = [self._event_row(e) for e in self.events]
        words = query.lower().split()
        if not words:
            return rows
        return [row for row in rows if all(w in " ".join(row[1]).lower() for w in words)]

    def count(self, view: View, rows: list[Row] | None = None) -> int:
        """How many items a view has (of `rows`, if given): pending counts live commands,
        not the history shown under them."""
        if rows is not None:
            if view == "pending":
                return sum(1 for key, _ in rows if key.startswith("p" + _SEP))
            return len(rows)
        if view == "devices":
            return len(self.devices)
        if view == "sessions":
            return len(self.sessions)
        if view == "pending":
            return sum(len(entries) for entries in self.pending.values())
        if view == "upstreams":
            return len(self.upstreams)
        return len(self.events)

    def count_text(self, view: View) -> str:
        """How many items a view has, and of how many when the gateway has more than it
        sends (its lists come in pages: a UI gets the first one, the status the totals)."""
        shown = self.count(view)
        status = self.status
        # Nothing shown yet is "0", not "0 of 5": the lists simply have not come yet.
        if not shown or status is None or view == "events":
            return str(shown)
        total = {"devices": status.devices, "sessions": status.sessions,
                 "pending": status.pending, "upstreams": status.upstreams}[view]  # fmt: skip
        return f"{shown} of {total}" if total is not None and total > shown else str(shown)

    def _device_row(self, d: Device, now: float) -> Row:
        policy = d.policy_dict
        session = policy.get("session")
        wake = _wake_text(d)
        return (
            d.id,
            (
                d.id,
                d.kind,
                d.link,
                fmt_ago(d.last_seen, now),
                str(d.pending),
                session if isinstance(session, str) else "-",
                wake,
                "-" if d.rssi is None else f"{d.rssi} dBm",
                d.address or "-",
                d.name or "-",
            ),
        )

    def _session_row(self, s: Session, now: float) -> Row:
        if s.connected:
            state = "online"
        elif s.offline_since is not None:
            state = f"offline {fmt_duration(now - s.offline_since)}"
        else:
            state = "offline"
        expires = "-" if s.connected or not s.persistent else fmt_until(s.expires_at, now)
        queued = f"{s.queued} ({fmt_bytes(s.queued_bytes)})" if s.queued else "0"
        inflight = f"{s.inflight} ({fmt_bytes(s.inflight_bytes)})" if s.inflight else "0"
        who = s.client_id if s.device is None else f"{s.client_id} [{s.device}]"
        return (
            s.client_id,
            (
                who,
                state,
                "persistent" if s.persistent else "clean",
                queued,
                inflight,
                expires,
                _protocol(s.protocol),
                str(len(s.subscriptions)),
                s.username or "-",
                s.listener or "-",
                s.address or "-",
            ),
        )

    def _pending_rows(self, now: float) -> Iterable[Row]:
        for device in sorted(set(self.pending) | set(self.history)):
            for p in self.pending.get(device, ()):
                yield (
                    _SEP.join(("p", device, str(p.id))),
                    (
                        device,
                        str(p.id),
                        p.state.replace("_", " "),
                        _clip(compact_json(p.command), _COMMAND_WIDTH),
                        "-" if p.queued_at is None else fmt_duration(now - p.queued_at),
                        fmt_until(p.expires_at, now),
                        str(p.attempts),
                        p.topic,
                    ),
                )
            for e in self.history.get(device, ()):
                yield (
                    _SEP.join(("h", device, str(e.seq))),
                    (
                        device,
                        "-",
                        e.result,
                        _clip(e.detail.partition(": ")[2] or e.detail, _COMMAND_WIDTH),
                        "-" if e.ts is None else fmt_duration(now - e.ts),
                        "-",
                        "-",
                        "",
                    ),
                )

    def empty_text(self, view: View) -> str:
        """What an empty table says instead of nothing ("" when it has rows or says nothing)."""
        if view != "upstreams" or self.upstreams:
            return ""
        if self.upstreams_problem:
            return f"upstreams not available: {self.upstreams_problem}"
        return NO_UPSTREAM if self.upstreams_loaded else ""

    def _upstream_row(self, u: Upstream, now: float) -> Row:
        state = u.state if u.since is None else f"{u.state} {fmt_duration(now - u.since)}"
        address = f"{u.host}:{u.port}" if u.host else "-"
        return (
            u.name,
            (
                u.name,
                state,
                str(u.queued),
                f"{u.forwarded}/{u.received}",
                f"{fmt_rate(u.rate_out)}/{fmt_rate(u.rate_in)}",
                str(u.dropped),
                address,
                _clip(u.last_error, _ERROR_WIDTH) if u.last_error else "-",
            ),
        )

    def _event_row(self, e: Event) -> Row:
        when = "--:--:--" if e.ts is None else time.strftime("%H:%M:%S", self.localtime(e.ts))
        return (str(e.seq), (when, e.type, e.who or "-", _clip(e.detail, _DETAIL_WIDTH)))

    def header(self, now: float) -> str:
        """One line about the gateway (without the connection state, which the UI adds)."""
        s = self.status
        if s is None:
            return "gateway status not received yet"
        parts = [f"edge-gateway {s.version}".rstrip()]
        if s.started_at is not None:
            parts.append(f"up {fmt_duration(now - s.started_at)}")
        elif s.uptime is not None:
            parts.append(f"up {fmt_duration(s.uptime)}")
        if s.clients is not None:
            parts.append(f"clients {s.clients}")
        if s.devices is not None:
            parts.append(f"devices {s.devices}")
        if s.msgs_in_per_s is not None or s.msgs_out_per_s is not None:
            rate_in = s.msgs_in_per_s or 0.0
            rate_out = s.msgs_out_per_s or 0.0
            parts.append(f"msgs/s in {rate_in:.0f} out {rate_out:.0f}")
        if s.store_bytes is not None:
            parts.append(f"store {fmt_bytes(s.store_bytes)}")
        if s.upstreams:  # said only where the bridge is used
            parts.append(f"upstreams {s.upstreams_connected or 0}/{s.upstreams} up")
        return " | ".join(parts)


class _Bad:
    """Marks a payload that could not be decoded (None is valid JSON)."""


_BAD: Final = _Bad()
