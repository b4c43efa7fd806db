"""The TUI's model: tolerant of any payload, filters, rows and formatting."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tui.model import Model, fmt_bytes, fmt_duration, fmt_until
from gateway.tui.sample import (
    NOW,
    sample_devices,
    sample_events,
    sample_pending,
    sample_sessions,
    sample_status,
)


def loaded() -> Model:
    model = Model(localtime=time.gmtime)
    model.handle_message("gw/bridge/updates/devices", json.dumps(sample_devices()).encode())
    model.handle_message("gw/bridge/updates/sessions", json.dumps(sample_sessions()).encode())
    model.handle_message("gw/bridge/updates/pending", json.dumps(sample_pending()).encode())
    model.handle_message("gw/bridge/status", json.dumps(sample_status()).encode())
    for event in sample_events():
        model.handle_message("gw/bridge/events", json.dumps(event).encode())
    return model


def test_live_updates_fill_every_view() -> None:
    model = loaded()
    assert sorted(model.devices) == ["demo-plug", "demo-sensor", "demo-thermostat", "hall-valve"]
    assert model.devices["demo-sensor"].rssi == -67
    assert model.sessions["logger"].queued == 130
    assert [p.id for p in model.pending["demo-thermostat"]] == [17, 18]
    assert model.status is not None and model.status.store_bytes == 1_572_864
    assert [e.type for e in model.events][:2] == ["kick", "command"]  # newest first
    assert model.ignored == 0


def test_wake_column_says_what_the_device_does_not_its_kinds_default() -> None:
    model = loaded()
    wake = {key: cells[6] for key, cells in model.rows("devices", NOW)}
    assert wake == {
        "demo-plug": "always on",
        "demo-sensor": "~5s",  # heard every 5 s; its kind's default (300) is not shown
        "demo-thermostat": "~30s",
        "hall-valve": "never seen",
    }
    # Nothing heard between two wake-ups yet: the configured interval, never the default.
    devices = sample_devices()
    for device in devices:
        device.pop("wake_observed", None)
    model.set_devices(devices)
    wake = {key: cells[6] for key, cells in model.rows("devices", NOW)}
    assert wake["demo-thermostat"] == "30s" and wake["demo-sensor"] == "-"


def test_a_devices_command_schema_comes_from_its_listing() -> None:
    model = loaded()
    schema = model.command_schema("demo-thermostat")
    assert schema is not None and schema.keys == ("mode", "target_temp", "boost")
    assert model.command_schema("demo-sensor") is None  # takes no commands
    assert model.command_schema("nobody") is None
    # A schema this TUI cannot read (a newer gateway): no check here, the gateway checks.
    odd = [{"id": "x", "schema": {"type": "object", "someday": 1}}, {"id": "y", "schema": [1]}]
    model.handle_message("gw/bridge/updates/devices", json.dumps(odd).encode())
    assert model.command_schema("x") is None and model.command_schema("y") is None


def test_changes_bump_versions_only_when_something_changed() -> None:
    model = loaded()
    before = dict(model.versions)
    payload = json.dumps(sample_devices()).encode()
    assert model.handle_message("gw/bridge/updates/devices", payload) is None
    assert model.versions == before
    devices = sample_devices()
    devices[0]["link"] = "offline"
    assert model.handle_message("gw/bridge/updates/devices", json.dumps(devices).encode()) == (
        "devices"
    )
    assert model.versions["devices"] == before["devices"] + 1


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("gw/bridge/updates/devices", b"not json"),
        ("gw/bridge/updates/devices", b"\xff\xfe"),
        ("gw/bridge/updates/devices", b'{"id": "x"}'),
        ("gw/bridge/updates/sessions", b"42"),
        ("gw/bridge/updates/pending", b"[1, 2]"),
        ("gw/bridge/events", b'"text"'),
        ("gw/bridge/status", b"[]"),
        ("gw/bridge/status", b"null"),
        ("gw/bridge/updates/upstreams", b'{"name": "cloud"}'),
        ("gw/bridge/updates/upstreams", b"[}"),
    ],
)
def test_garbage_is_ignored_and_changes_nothing(topic: str, payload: bytes) -> None:
    model = loaded()
    before = (dict(model.devices), dict(model.sessions), dict(model.pending), model.status)
    versions = dict(model.versions)
    assert model.handle_message(topic, payload) is None
    assert (model.devices, model.sessions, model.pending, model.status) == before
    assert model.versions == versions
    assert model.ignored == 1


def test_bad_entries_are_skipped_good_ones_kept() -> None:
    model = Model()
    payload = [
        {"id": "good", "kind": "shelly", "rssi": "strong", "last_seen": "yesterday"},
        {"kind": "no id"},
        "a string",
        {"id": 5},
        {"id": "also-good", "policy": ["not", "a", "dict"], "pending": 1.5e300},
    ]
    model.handle_message("gw/bridge/updates/devices", json.dumps(payload).encode())
    assert sorted(model.devices) == ["also-good", "good"]
    assert model.devices["good"].rssi is None and model.devices["good"].last_seen is None
    assert model.devices["also-good"].policy == ()
    assert model.ignored == 3
    model.rows("devices", NOW)  # renders without trouble


def test_other_topics_are_not_for_the_model() -> None:
    model = Model()
    assert model.handle_message("gw/demo-plug/state", b"{}") is None
    assert model.handle_message("gw/bridge/updates/unknown", b"[]") is None
    assert model.handle_message("gw/bridge/status", b"") is None  # a cleared retained message
    assert model.ignored == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(
        [
            "updates/devices",
            "updates/sessions",
            "updates/pending",
            "updates/upstreams",
            "events",
            "status",
        ]
    ),
    json_values,
)
def test_no_payload_makes_the_model_raise(suffix: str, value: object) -> None:
    model = loaded()
    model.handle_message(f"gw/bridge/{suffix}", json.dumps(value).encode())
    for view in ("devices", "sessions", "pending", "events", "upstreams"):
        model.rows(view, NOW)
        for key, _ in model.rows(view, NOW):
            model.details(view, key)
        model.count_text(view)
        model.empty_text(view)
    model.header(NOW)


def test_filter_keeps_rows_containing_every_word_case_insensitively() -> None:
    model = loaded()
    assert [k for k, _ in model.rows("devices", NOW, "BTHOME")] == ["demo-sensor"]
    assert [k for k, _ in model.rows("devices", NOW, "persistent offline")] == ["demo-thermostat"]
    assert model.rows("devices", NOW, "nothing-like-this") == []
    assert len(model.rows("sessions", NOW, "offline")) == 2
    assert len(model.rows("events", NOW, "demo-thermostat")) == 2


def test_rows_are_sorted_and_formatted() -> None:
    model = loaded()
    devices = model.rows("devices", NOW)
    assert [k for k, _ in devices] == ["demo-plug", "demo-sensor", "demo-thermostat", "hall-valve"]
    thermostat = dict(devices)["demo-thermostat"]
    assert thermostat[:5] == ("demo-thermostat", "eq3", "offline", "1m35s ago", "2")
    logger = dict(model.rows("sessions", NOW))["logger"]
    assert logger[1] == "offline 2h00m"
    assert logger[3] == "130 (17.8 KiB)"
    assert logger[5] == "6d22h"  # expires in
    assert dict(model.rows("sessions", NOW))["home-assistant"][6] == "3.1.1"


def test_pending_rows_show_live_commands_then_what_happened_to_others() -> None:
    model = loaded()
    rows = model.rows("pending", NOW)
    assert [cells[1:4] for _, cells in rows] == [
        ("17", "queued", '{"target_temp":22.5}'),
        ("18", "queued", '{"mode":"manual"}'),
        ("-", "superseded", '{"target_temp":21}'),  # from the events, not cancellable
    ]
    assert rows[0][1][4:7] == ("1m20s", "8m40s", "0")
    live = model.pending_for_key(rows[1][0])
    assert live is not None and live.id == 18 and live.device == "demo-thermostat"
    assert model.pending_for_key(rows[2][0]) is None
    assert model.device_of_key("pending", rows[2][0]) == "demo-thermostat"


def test_events_are_bounded() -> None:
    model = Model(max_events=3)
    for n in range(10):
        model.handle_message("gw/bridge/events", json.dumps({"type": "connect", "n": n}).encode())
    assert len(model.events) == 3
    dropped = {"type": "events_dropped", "count": 12}
    model.handle_message("gw/bridge/events", json.dumps(dropped).encode())
    assert "12 events not shown" in model.events[0].detail


def test_header_and_formatting() -> None:
    model = loaded()
    header = model.header(NOW)
    assert "up 2h03m" in header and "clients 3" in header and "store 1.5 MiB" in header
    assert "msgs/s in 12 out 30" in header
    assert Model().header(NOW) == "gateway status not received yet"
    assert fmt_duration(59) == "59s" and fmt_duration(61) == "1m01s"
    assert fmt_duration(3 * 86400 + 7200) == "3d02h"
    assert fmt_bytes(1023) == "1023 B" and fmt_bytes(2048) == "2.0 KiB"
    assert fmt_until(None, NOW) == "never" and fmt_until(NOW - 1, NOW) == "expired"


def test_details_show_what_the_table_has_no_room_for() -> None:
    model = loaded()
    title, fields = model.details("sessions", "home-assistant") or ("", [])
    values = dict(fields)
    assert title == "home-assistant"
    assert values["subscriptions"] == "gw/#, homeassistant/status"
    assert values["protocol"] == "3.1.1"
    title, fields = model.details("devices", "demo-thermostat") or ("", [])
    assert json.loads(dict(fields)["policy"])["command_ttl"] == 600
    pending_key = model.rows("pending", NOW)[0][0]
    title, fields = model.details("pending", pending_key) or ("", [])
    assert title == "demo-thermostat 17"
    assert dict(fields)["queued_at"] == "2026-09-21 14:12:00 (1789999920.0)"
    history_key = model.rows("pending", NOW)[2][0]
    assert model.details("pending", history_key) is not None
    assert model.details("sessions", "nobody") is None
    assert model.details("pending", "garbage") is None
