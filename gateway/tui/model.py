"""What the terminal UI knows about the gateway, built from the admin API's messages.

Pure: no I/O, no clock of its own (``now`` is passed in), no Textual. Every payload comes
from the network, so nothing here trusts its shape: an entry that does not look right is
logged and skipped, and a message that is not what its topic promises changes nothing.
The records are in records.py (read with payload.py), what the tables show in rows.py.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from gateway.commands.schema import CommandSchema, SchemaError
from gateway.tui.payload import is_object, read_int, read_opt_float, read_str
from gateway.tui.records import Device, Event, Pending, Session, Status, Upstream
from gateway.tui.rows import (
    COLUMNS,
    KEY_SEP,
    VIEWS,
    Row,
    View,
    detail_fields,
    device_row,
    event_row,
    pending_rows,
    session_row,
    status_line,
    upstream_row,
)
from gateway.tui.text import (
    clip,
    compact_json,
    fmt_ago,
    fmt_bytes,
    fmt_duration,
    fmt_rate,
    fmt_until,
    printable,
)

# The names the rest of the UI (and the tests) import from here, wherever they now live.
__all__ = [
    "COLUMNS",
    "NO_UPSTREAM",
    "VIEWS",
    "Device",
    "Event",
    "Model",
    "Pending",
    "Row",
    "Session",
    "Status",
    "Upstream",
    "View",
    "compact_json",
    "fmt_ago",
    "fmt_bytes",
    "fmt_duration",
    "fmt_rate",
    "fmt_until",
    "printable",
]

_Row = TypeVar("_Row")
log = logging.getLogger(__name__)

NO_UPSTREAM: Final = "no upstream configured (see upstream: in config.yaml)"


@functools.lru_cache(maxsize=32)
def _compiled(text: str) -> CommandSchema | None:
    try:
        return CommandSchema.from_json(text)
    except SchemaError:  # a newer gateway's schema language: the gateway still checks
        return None


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
                self._ignore(f"{view}: bad entry {clip(repr(item), 80)}")
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
        if not is_object(data):
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
                    self._ignore(f"pending: bad entry {clip(repr(item), 80)}")
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
        if not is_object(data):
            self._ignore("event: not an object")
            return False
        assert isinstance(data, dict)
        kind = read_str(data, "type", "?")
        self._event_seq += 1
        result = ""
        if kind == "command":
            who = read_str(data, "device", "?")
            result = read_str(data, "result", "?")
            detail = data.get("detail")
            text = result if detail in (None, "") else f"{result}: {self._detail(detail)}"
        elif kind == "events_dropped":
            who = ""
            text = f"{read_int(data, 'count')} events not shown (rate limit)"
        else:
            who = read_str(data, "client_id")
            detail = data.get("detail")
            text = "" if detail in (None, "") else self._detail(detail)
        event = Event(self._event_seq, read_opt_float(data, "ts"), kind, who, text, result)
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
        if is_object(detail):
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
                parts = key.split(KEY_SEP)
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
        return title, detail_fields(record, self.localtime)

    def command_schema(self, device: str) -> CommandSchema | None:
        """What a command for ``device`` may be, as its listing says; None when unknown."""
        record = self.devices.get(device)
        if record is None or not record.schema:
            return None
        return _compiled(record.schema)

    def pending_for_key(self, key: str) -> Pending | None:
        """The live pending command behind a Pending-table row key (None for history rows)."""
        parts = key.split(KEY_SEP)
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
            parts = key.split(KEY_SEP)
            return parts[1] if len(parts) == 3 else None
        return None

    # --- output -------------------------------------------------------------------------------

    def rows(self, view: View, now: float, query: str = "") -> list[Row]:
        """The rows of a table, sorted, keeping those whose text contains `query`
        (case-insensitive; every word must appear)."""
        if view == "devices":
            rows = [device_row(d, now) for _, d in sorted(self.devices.items())]
        elif view == "sessions":
            rows = [session_row(s, now) for _, s in sorted(self.sessions.items())]
        elif view == "pending":
            rows = list(pending_rows(self.pending, self.history, now))
        elif view == "upstreams":
            rows = [upstream_row(u, now) for _, u in sorted(self.upstreams.items())]
        else:
            rows = [event_row(e, self.localtime) for e in self.events]
        words = query.lower().split()
        if not words:
            return rows
        return [row for row in rows if all(w in " ".join(row[1]).lower() for w in words)]

    def count(self, view: View, rows: list[Row] | None = None) -> int:
        """How many items a view has (of `rows`, if given): pending counts live commands,
        not the history shown under them."""
        if rows is not None:
            if view == "pending":
                return sum(1 for key, _ in rows if key.startswith("p" + KEY_SEP))
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

    def empty_text(self, view: View) -> str:
        """What an empty table says instead of nothing ("" when it has rows or says nothing)."""
        if view != "upstreams" or self.upstreams:
            return ""
        if self.upstreams_problem:
            return f"upstreams not available: {self.upstreams_problem}"
        return NO_UPSTREAM if self.upstreams_loaded else ""

    def header(self, now: float) -> str:
        """One line about the gateway (without the connection state, which the UI adds)."""
        return status_line(self.status, now)


class _Bad:
    """Marks a payload that could not be decoded (None is valid JSON)."""


_BAD: Final = _Bad()
