"""The TUI's Upstreams tab (issue 10): the model's reading of the admin API's upstream list,
the tab with Pilot on sample data at 80x24, and against a real gateway whose admin service
has a fake upstream bridge (the engine is not needed to show what it reports)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import free_port
from test_admin_upstreams import FakeUpstreams, status
from test_tui_app import settle
from test_tui_gateway import tui, until
from textual.widgets import Tab

from devices.demo import DemoTimings
from gateway.admin.service import AdminService
from gateway.app import Gateway
from gateway.config import parse_config
from gateway.tui.app import GatewayTUI
from gateway.tui.client import LinkState
from gateway.tui.model import NO_UPSTREAM, Model, printable
from gateway.tui.sample import NOW, StaticSource, sample_status, sample_upstreams
from gateway.tui.screens import ConfirmScreen, DetailScreen
from gateway.upstream.status import UpstreamStatus

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning")]

SMALL = (80, 24)
FIELDS = [f.name for f in dataclasses.fields(UpstreamStatus)]
UPDATES = "gw/bridge/updates/upstreams"


def with_upstreams(upstreams: list[dict[str, object]] | None = None) -> Model:
    model = Model(localtime=time.gmtime)
    upstreams = sample_upstreams() if upstreams is None else upstreams
    model.handle_message(UPDATES, json.dumps(upstreams).encode())
    model.handle_message(
        "gw/bridge/status", json.dumps(sample_status(upstreams=upstreams)).encode()
    )
    return model


def make(source: StaticSource | None = None) -> tuple[GatewayTUI, StaticSource]:
    source = source or StaticSource()
    app = GatewayTUI(source, clock=lambda: NOW, model=Model(localtime=time.gmtime), tick=0.05)
    return app, source


def screen_text(app: GatewayTUI) -> str:
    """The table's lines as a terminal shows them (what is scrolled out is not there)."""
    table = app.table
    return "\n".join(table.render_line(y).text for y in range(table.size.height))


# --- the model -----------------------------------------------------------------------------------


def test_rows_show_state_since_queue_traffic_rates_and_the_error() -> None:
    model = with_upstreams()
    rows = dict(model.rows("upstreams", NOW))
    assert list(rows) == ["backup", "cloud", "site-b"]  # by name
    assert rows["cloud"] == (
        "cloud",
        "connected 2h01m",
        "0",
        "48213/37",
        "12/0.1",
        "0",
        "broker.example.org:8883",
        "-",
    )
    assert rows["backup"][1:3] == ("disconnected 1m35s", "1520")
    assert rows["backup"][7] == "[Errno 111] Connect call failed ('10.0.0.5', 1883)"
    assert rows["site-b"][1] == "connecting 4s" and rows["site-b"][5] == "250"
    assert model.count_text("upstreams") == "3"
    assert model.empty_text("upstreams") == ""
    assert "upstreams 1/3 up" in model.header(NOW)


def test_details_have_every_field_of_the_gateways_status() -> None:
    model = with_upstreams()
    title, fields = model.details("upstreams", "backup") or ("", [])
    assert title == "upstream backup"
    assert [name for name, _ in fields] == FIELDS  # nothing of the shared shape is left out
    values = dict(fields)
    assert values["protocol"] == "3.1.1" and values["client_id"] == "edge-gateway-pi-backup"
    assert values["since"] == "2026-09-21 14:11:45 (1789999905.0)"
    assert values["last_error"] == "[Errno 111] Connect call failed ('10.0.0.5', 1883)"
    assert dict((model.details("upstreams", "cloud") or ("", []))[1])["last_error"] == "-"
    assert model.details("upstreams", "nobody") is None


def test_what_an_empty_upstreams_table_says() -> None:
    model = Model()
    assert model.empty_text("upstreams") == ""  # not known yet: says nothing
    model.upstreams_unavailable("upstreams: unknown action 'upstreams'")
    assert "not available: upstreams: unknown action" in model.empty_text("upstreams")
    assert model.apply_response("upstreams", []) is True  # known now: none configured
    assert model.empty_text("upstreams") == NO_UPSTREAM
    assert model.rows("upstreams", NOW) == []
    assert model.apply_response("upstreams", []) is False
    assert "upstreams" not in model.header(NOW)
    model.set_status(sample_status(upstreams=[]))
    assert "upstreams" not in model.header(NOW)  # a gateway without the bridge: not a word
    assert model.empty_text("devices") == ""  # the other views have no such line


def test_odd_entries_are_skipped_and_odd_values_made_safe() -> None:
    model = Model()
    payload = [
        {"name": "ok", "state": "connected", "queued": "many", "since": "noon", "rate_out": None},
        {"name": ""},
        {"host": "no name"},
        ["a", "list"],
        {"name": 7},
        {"name": "odd", "last_error": {"nested": True}, "port": 1e300, "rate_in": float("nan")},
    ]
    model.handle_message(UPDATES, json.dumps(payload).encode())
    assert sorted(model.upstreams) == ["odd", "ok"] and model.ignored == 4
    ok = model.upstreams["ok"]
    assert ok.queued == 0 and ok.since is None and ok.rate_out == 0.0
    rows = dict(model.rows("upstreams", NOW))
    assert rows["ok"][1] == "connected"  # no "since" to tell
    assert rows["odd"][6:] == ("-", "-")
    for key in rows:
        assert model.details("upstreams", key) is not None


def test_a_live_update_bumps_the_version_only_when_something_changed() -> None:
    model = with_upstreams()
    before = model.versions["upstreams"]
    assert model.handle_message(UPDATES, json.dumps(sample_upstreams()).encode()) is None
    changed = sample_upstreams()
    changed[1]["state"] = "connected"
    assert model.handle_message(UPDATES, json.dumps(changed).encode()) == "upstreams"
    assert model.versions["upstreams"] == before + 1


# --- the tab, on sample data ---------------------------------------------------------------------


async def test_the_tab_lists_upstreams_at_80x24_and_enter_shows_every_field() -> None:
    app, source = make()
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        assert ("upstreams", {}) in source.requests
        await pilot.press("5")
        assert app.view == "upstreams"
        assert app.table.keys == ["backup", "cloud", "site-b"]
        assert "(3)" in app.query_one("#upstreams", Tab).label_text
        text = screen_text(app)
        # Name, state with its age, queue and traffic are on an 80-column screen.
        assert "backup    disconnected 1m35s  1520    9120/0" in text
        assert "upstreams 1/3 up" in str(app.query_one("#status").render())
        await pilot.press("down", "enter")
        assert isinstance(app.screen, DetailScreen)
        assert app.screen.heading == "upstream cloud"
        assert [name for name, _ in app.screen.fields] == FIELDS
        assert dict(app.screen.fields)["host"] == "broker.example.org"
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)


async def test_the_tab_follows_live_updates_and_keeps_the_cursor() -> None:
    app, source = make()
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        await pilot.press("5")
        app.table.select("cloud")
        upstreams = sample_upstreams()
        backup = next(u for u in upstreams if u["name"] == "backup")
        backup.update(state="connected", since=NOW - 2, queued=40, last_error=None)
        upstreams.append({**backup, "name": "aaa-first"})
        source.on_message(UPDATES, json.dumps(upstreams).encode())
        await settle(pilot)
        assert app.table.keys == ["aaa-first", "backup", "cloud", "site-b"]
        assert app.table.selected == "cloud"
        assert app.table.row("backup")[1:3] == ("connected 2s", "40")
        assert "(4)" in app.query_one("#upstreams", Tab).label_text


async def test_no_upstream_configured_is_said_in_the_tab() -> None:
    app, _ = make(StaticSource(upstreams=False))
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        assert app.table.keys == []
        assert NO_UPSTREAM in screen_text(app)
        assert "upstreams" not in str(app.query_one("#status").render())
        await pilot.press("enter")  # nothing to open
        assert not isinstance(app.screen, DetailScreen)
        await pilot.press("1")
        await settle(pilot)
        assert NO_UPSTREAM not in screen_text(app)  # only the Upstreams tab says it


async def test_a_gateway_without_the_request_still_works() -> None:
    """An older gateway answers `upstreams` with an error: said in the tab, not at every
    connect, and the other lists load as before."""
    source = StaticSource()
    del source.data["upstreams"]
    app, _ = make(source)
    async with app.run_test(size=SMALL) as pilot:
        await settle(pilot)
        assert app.table.keys == ["demo-plug", "demo-sensor", "demo-thermostat", "hall-valve"]
        assert app.last_result == ""  # no error popped up
        await pilot.press("5")
        await settle(pilot)
        assert "upstreams not available: upstreams: not available" in screen_text(app)


# --- against a real gateway ----------------------------------------------------------------------


@pytest.fixture
async def bridged(tmp_path: Path) -> AsyncIterator[FakeUpstreams]:
    """A demo gateway on a Unix socket (admin), its admin service built as gateway/app.py
    does, with a fake upstream bridge."""
    config = {
        "listeners": [{"type": "unix", "path": str(tmp_path / "gw.sock"), "admin": True}],
        "persistence": {"path": str(tmp_path / "gw.db")},
        "sys_interval": 0,
        "devices": {"ble": {"enabled": False}, "lan": {"poll_interval": 0.2, "timeout": 1}},
        "demo": True,
        "admin_api": False,
    }
    gw = Gateway(
        parse_config(json.dumps(config), "tui-upstreams.yaml"),
        demo_timings=DemoTimings(sensor_interval=0.5, thermostat_period=60.0),
    )
    await gw.start()
    layer = FakeUpstreams(status("cloud"), status("backup", state="connecting", queued=9))
    service = AdminService(
        gw.server,
        gw.server.connect_in_process,
        lambda: gw.supervisor,
        gw.config.topic_prefix,
        upstreams=lambda: layer,
        poll_interval=0.05,
    )
    await service.start()
    try:
        yield layer
    finally:
        await service.stop()
        await gw.stop()


async def test_the_tab_against_a_gateway_follows_the_bridge(
    bridged: FakeUpstreams, tmp_path: Path
) -> None:
    app = tui(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: app.link.state is LinkState.CONNECTED, "the link")
        await pilot.press("5")
        await until(pilot, lambda: app.table.keys == ["backup", "cloud"], "the upstreams")
        assert (
            app.table.row("backup")[1].startswith("connecting")
            and app.table.row("backup")[2] == "9"
        )
        bridged.change("backup", state="connected", queued=0, forwarded=9)
        await until(
            pilot,
            lambda: (
                app.table.row("backup")[1].startswith("connected ")
                and app.table.row("backup")[3] == "9/2"
            ),
            "the live update",
        )
        await until(
            pilot,
            lambda: "upstreams 2/2 up" in str(app.query_one("#status").render()),
            "the status counts",
        )
        app.table.select("backup")
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        fields = dict(app.screen.fields)
        assert fields["client_id"] == "edge-gateway-test-backup" and fields["queued"] == "0"


# --- abuse: text from the network must not drive the operator's terminal -------------------------

HOSTILE = "evil\x1b[2J\x1b]0;pwned\x07\x9b31m\r\nend"


def test_control_characters_are_written_out() -> None:
    assert printable("plain text, ünïcode ✓") == "plain text, ünïcode ✓"
    assert printable(HOSTILE) == "evil\\x1b[2J\\x1b]0;pwned\\x07\\x9b31m\\x0d\\x0aend"
    assert printable("\x00\x7f") == "\\x00\\x7f"


async def test_hostile_names_and_errors_are_shown_not_obeyed() -> None:
    source = StaticSource()
    upstreams = source.data["upstreams"]
    sessions = source.data["sessions"]
    assert isinstance(upstreams, list) and isinstance(sessions, list)
    upstreams[0]["last_error"] = HOSTILE
    upstreams[0]["name"] = "a\x1b[7m"
    sessions[0]["client_id"] = "\x1b]0;pwned\x07"
    app, _ = make(source)
    async with app.run_test(size=(160, 24)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        text = screen_text(app)
        assert "\x1b" not in text and "\x07" not in text
        assert "a\\x1b[7m" in text and "evil\\x1b[2J\\x1b]0;pwned\\x07" in text
        app.table.select("a\x1b[7m")
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        shown = str(app.screen.query_one("#fields").render())
        assert "\x1b" not in shown and "evil\\x1b[2J" in shown
        await pilot.press("escape", "2")
        app.table.select("\x1b]0;pwned\x07")
        await pilot.press("k")  # the confirmation names the client
        assert isinstance(app.screen, ConfirmScreen)
        question = str(app.screen.query_one("#question").render())
        assert question == "Kick \\x1b]0;pwned\\x07?"
        await pilot.press("n")


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_hostile_client_id_and_upstream_error_in_a_real_terminal(tmp_path: Path) -> None:
    """`edge-gateway tui` in a pseudo-terminal against a gateway where a LAN client connected
    with an escape sequence as its client id, and an upstream broker's error carries one:
    the terminal receives them as text."""
    from paho_helpers import V311, Client
    from test_tui_cli import _read_until, plain_text, spawn_tui_in_pty

    sock = tmp_path / "gw.sock"
    port = free_port()
    config = {
        "listeners": [
            {"type": "unix", "path": str(sock), "admin": True},
            {"type": "tcp", "host": "127.0.0.1", "port": port},
        ],
        "persistence": {"enabled": False},
        "sys_interval": 0,
        "devices": {"ble": {"enabled": False}, "lan": {"enabled": False}},
        "admin_api": False,
    }
    gw = Gateway(parse_config(json.dumps(config), "pty.yaml"))
    await gw.start()
    layer = FakeUpstreams(status("cloud", state="disconnected", last_error="bad\x1b]0;owned\x07"))
    service = AdminService(
        gw.server, gw.server.connect_in_process, lambda: gw.supervisor, upstreams=lambda: layer
    )
    await service.start()
    hostile = await asyncio.to_thread(Client, port, "\x1b]0;pwned\x07", version=V311)
    leader, proc = spawn_tui_in_pty(sock, columns=120)
    try:
        seen = await asyncio.to_thread(_read_until, leader, b"[connected]", 20.0)
        os.write(leader, b"2")
        seen += await asyncio.to_thread(_read_until, leader, b"\\x1b]0;pwned\\x07", 10.0)
        os.write(leader, b"5")
        seen += await asyncio.to_thread(_read_until, leader, b"bad\\x1b]0;owned\\x07", 10.0)
        plain = plain_text(seen)
        assert b"\\x1b]0;pwned\\x07" in plain and b"bad\\x1b]0;owned\\x07" in plain
        assert b"\x1b]0;pwned" not in seen and b"\x1b]0;owned" not in seen
        os.write(leader, b"q")
        assert await asyncio.to_thread(proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
        await asyncio.to_thread(hostile.disconnect)
        await service.stop()
        await gw.stop()
