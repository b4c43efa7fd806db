"""What each tab's table shows: its columns and the text of its rows, the header line, and
the details of one row. Pure functions of the records and ``now``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final, Literal

from gateway.tui.records import Device, Event, Pending, Session, Status, Upstream
from gateway.tui.text import (
    clip,
    compact_json,
    fmt_ago,
    fmt_bytes,
    fmt_duration,
    fmt_rate,
    fmt_until,
    protocol_name,
)

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

KEY_SEP = "\x1f"  # joins the parts of a row key; cannot occur in a client id or device id
_COMMAND_WIDTH = 40
_DETAIL_WIDTH = 60
_ERROR_WIDTH = 60


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


def device_row(d: Device, now: float) -> Row:
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


def session_row(s: Session, now: float) -> Row:
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
            protocol_name(s.protocol),
            str(len(s.subscriptions)),
            s.username or "-",
            s.listener or "-",
            s.address or "-",
        ),
    )


def pending_rows(
    pending: Mapping[str, tuple[Pending, ...]],
    history: Mapping[str, Iterable[Event]],
    now: float,
) -> Iterable[Row]:
    """Each device's live commands, then the outcomes of those that did not run."""
    for device in sorted(set(pending) | set(history)):
        for p in pending.get(device, ()):
            yield (
                KEY_SEP.join(("p", device, str(p.id))),
                (
                    device,
                    str(p.id),
                    p.state.replace("_", " "),
                    clip(compact_json(p.command), _COMMAND_WIDTH),
                    "-" if p.queued_at is None else fmt_duration(now - p.queued_at),
                    fmt_until(p.expires_at, now),
                    str(p.attempts),
                    p.topic,
                ),
            )
        for e in history.get(device, ()):
            yield (
                KEY_SEP.join(("h", device, str(e.seq))),
                (
                    device,
                    "-",
                    e.result,
                    clip(e.detail.partition(": ")[2] or e.detail, _COMMAND_WIDTH),
                    "-" if e.ts is None else fmt_duration(now - e.ts),
                    "-",
                    "-",
                    "",
                ),
            )


def upstream_row(u: Upstream, now: float) -> Row:
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
            clip(u.last_error, _ERROR_WIDTH) if u.last_error else "-",
        ),
    )


def event_row(e: Event, localtime: Callable[[float], time.struct_time]) -> Row:
    when = "--:--:--" if e.ts is None else time.strftime("%H:%M:%S", localtime(e.ts))
    return (str(e.seq), (when, e.type, e.who or "-", clip(e.detail, _DETAIL_WIDTH)))


def status_line(s: Status | None, now: float) -> str:
    """One line about the gateway (without the connection state, which the UI adds)."""
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


def detail_fields(
    record: object, localtime: Callable[[float], time.struct_time]
) -> list[tuple[str, str]]:
    """Every field of a record as text, times as dates: the details of one row."""
    fields: list[tuple[str, str]] = []
    for name in getattr(record, "__slots__", ()):
        value = getattr(record, name)
        if name in ("policy", "policy_from") and isinstance(value, tuple):
            value = dict(value)
        if isinstance(value, float) and (
            name.endswith(("_at", "_since", "_seen")) or name in ("ts", "since")
        ):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", localtime(value))
            text = f"{stamp} ({compact_json(value)})"
        elif name == "protocol" and isinstance(value, int):
            text = protocol_name(value)  # as config.yaml writes it: 3.1.1, not 4
        elif isinstance(value, str):
            text = value or "-"
        elif isinstance(value, tuple):
            text = ", ".join(str(v) for v in value) or "-"
        else:
            text = compact_json(value)
        fields.append((name, text))
    return fields
