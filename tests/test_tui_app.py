"""The TUI's behaviour on a static source (no gateway): keys, dialogs, requests, filters,
what it does with nonsense, and which keys each tab offers."""

from __future__ import annotations

import json
import time

from textual.pilot import Pilot
from textual.widgets import Input, Tab

from gateway.tui.app import GatewayTUI
from gateway.tui.client import LinkState, LinkStatus
from gateway.tui.model import Model
from gateway.tui.sample import NOW, StaticSource
from gateway.tui.screens import ConfirmScreen, DetailScreen, PolicyScreen, SendScreen


def make(source: StaticSource | None = None) -> tuple[GatewayTUI, StaticSource]:
    source = source or StaticSource()
    app = GatewayTUI(source, clock=lambda: NOW, model=Model(localtime=time.gmtime), tick=0.05)
    return app, source


def keys(app: GatewayTUI, view: str) -> list[str]:
    assert app.view == view
    return app.table.keys


def footer_actions(app: GatewayTUI) -> set[str]:
    """The actions the footer offers now (enabled and shown)."""
    return {
        binding.action
        for _, binding, enabled, _ in app.active_bindings.values()
        if binding.show and enabled
    }


async def settle(pilot: Pilot[None]) -> None:
    await pilot.pause(0.1)


async def test_send_validates_json_and_sends_with_ttl() -> None:
    app, source = make()
    async with app.run_test() as pilot:
        await settle(pilot)
        app.table.select("demo-thermostat")
        await pilot.press("s")
        assert isinstance(app.screen, SendScreen)
        await pilot.press(*"[1]", "enter")
        assert isinstance(app.screen, SendScreen)  # refused: not an object
        assert "non-empty JSON object" in str(app.screen.query_one("#error").render())
        app.screen.query_one("#command", Input).value = '{"mode": "auto"}'
        await pilot.press("tab", *"90", "enter")
        await settle(pilot)
        assert not isinstance(app.screen, SendScreen)
        assert source.requests[-1] == (
            "send",
            {"device": "demo-thermostat", "command": {"mode": "auto"}, "ttl": 90},
        )


async def test_send_checks_the_command_against_the_devices_schema() -> None:
    app, source = make()
    async with app.run_test() as pilot:
        await settle(pilot)
        app.table.select("demo-thermostat")
        await pilot.press("s")
        assert isinstance(app.screen, SendScreen)
        keys = str(app.screen.query_one("#keys").render())
        assert (
            "target_temp  number 4.5..30 step 0.5" in keys and "mode         auto | manual" in keys
        )
        # The example is the device's own, and valid for it (not {"on": true}).
        assert app.screen.example == '{"target_temp": 17, "mode": "auto"}'
        sent = len(source.requests)
        await pilot.press(*'{"target_temp": 99}', "enter")
        assert isinstance(app.screen, SendScreen)  # refused here, nothing sent
        error = str(app.screen.query_one("#error").render())
        assert "target_temp: expected a number 4.5-30 in steps of 0.5, got 99" in error
        assert len(source.requests) == sent
        app.screen.query_one("#command", Input).value = '{"target_temp": 21.5}'
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, SendScreen)
        assert source.requests[-1] == (
            "send",
            {"device": "demo-thermostat", "command": {"target_temp": 21.5}},
        )


async def test_flush_delete_and_policy_ask_first_and_send_the_right_request() -> None:
    app, source = make()
    async with app.run_test() as pilot:
        await settle(pilot)
        app.table.select("demo-thermostat")
        await pilot.press("f")
        assert isinstance(app.screen, ConfirmScreen)
        assert "2 pending command(s)" in app.screen.detail
        await pilot.press("y")
        await settle(pilot)
        assert source.requests[-1] == ("flush", {"device": "demo-thermostat"})

        await pilot.press("p")
        assert isinstance(app.screen, PolicyScreen)
        # One field per key, with its value and where it comes from.
        assert app.screen.fields()["command_ttl"] == "600"
        assert app.screen.fields()["wake_interval"] == "30"
        froms = [str(label.render()) for label in app.screen.query(".from")]
        assert froms[4].startswith("config.yaml") and froms[7].startswith("set here")
        assert froms[0].startswith("eq3 default")
        sent = len(source.requests)
        app.screen.query_one("#p-queue_depth", Input).value = "0"
        await pilot.press("enter")
        assert isinstance(app.screen, PolicyScreen)  # refused in the form, nothing sent
        assert "queue_depth: must be a whole number >= 1" in str(
            app.screen.query_one("#error").render()
        )
        app.screen.query_one("#p-queue_depth", Input).value = ""  # empty: inherited
        app.screen.query_one("#p-command_ttl", Input).value = "60"
        await pilot.press("enter")
        assert isinstance(app.screen, ConfirmScreen)  # a second step: confirm the change
        await pilot.press("y")
        await settle(pilot)
        assert len(source.requests) == sent + 1
        # The change, and the key set here before (still in the form) stays set.
        assert source.requests[-1] == (
            "set_policy",
            {"device": "demo-thermostat", "policy": {"command_ttl": 60, "wake_interval": 30}},
        )

        await pilot.press("2")
        app.table.select("logger")
        sent = len(source.requests)
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        assert "130 queued" in app.screen.detail
        await pilot.press("enter")  # the focus is on "No": Enter alone destroys nothing
        await settle(pilot)
        assert len(source.requests) == sent
        await pilot.press("d", "y")
        await settle(pilot)
        assert source.requests[-1] == ("delete_session", {"client_id": "logger"})


async def test_failed_requests_are_reported_not_raised() -> None:
    app, source = make()
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("3")
        await pilot.press("c", "y")
        await settle(pilot)
        assert source.requests[-1] == ("cancel", {"device": "demo-thermostat", "id": 17})
        assert app.last_result.startswith("cancel")  # "cancel: not available..."
        assert "not available" in app.last_result


async def test_filter_narrows_the_visible_table_and_escape_clears_it() -> None:
    app, _ = make()
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("2", "slash", *"OFF")
        app.query_one("#filter", Input).value += "LINE"
        await settle(pilot)
        assert keys(app, "sessions") == ["gw-device-demo-thermostat", "logger"]
        assert app.query_one("#filter").border_title == "2 of 5 match"
        assert "(5)" in app.query_one("#sessions", Tab).label_text
        await pilot.press("enter")
        assert app.table.has_focus
        await pilot.press("1")  # each tab has its own filter
        await settle(pilot)
        assert len(keys(app, "devices")) == 4
        await pilot.press("2", "slash", "escape")
        await settle(pilot)
        assert len(keys(app, "sessions")) == 5


async def test_each_tab_offers_its_own_actions() -> None:
    app, _ = make()
    async with app.run_test() as pilot:
        await settle(pilot)
        assert {"send", "flush", "policy"} <= footer_actions(app)
        assert not {"kick", "delete", "cancel"} & footer_actions(app)
        await pilot.press("2")
        assert {"kick", "delete"} <= footer_actions(app)
        assert not {"send", "flush", "policy", "cancel"} & footer_actions(app)
        await pilot.press("3")
        assert {"cancel", "flush", "send"} <= footer_actions(app)
        await pilot.press("4")
        assert not {"send", "flush", "policy", "kick", "delete", "cancel"} & footer_actions(app)


async def test_actions_are_disabled_while_disconnected() -> None:
    app, source = make(StaticSource(connected=False))
    async with app.run_test() as pilot:
        await settle(pilot)
        assert not app.query_one("#banner").has_class("hidden")
        assert "unreachable" in str(app.query_one("#banner").render())
        await pilot.press("s", "f", "p")
        assert not isinstance(app.screen, SendScreen | ConfirmScreen | PolicyScreen)
        assert source.requests == []
        source.connected = True
        source.on_status(LinkStatus(LinkState.CONNECTED, "connected"))
        await settle(pilot)
        assert app.query_one("#banner").has_class("hidden")
        assert {action for action, _ in source.requests} == {
            "devices",
            "sessions",
            "pending",
            "upstreams",
        }


async def test_nonsense_from_the_gateway_changes_nothing_and_crashes_nothing() -> None:
    app, source = make()
    async with app.run_test() as pilot:
        await settle(pilot)
        before = keys(app, "devices")
        for topic, payload in [
            ("gw/bridge/updates/devices", b"\x00\xff garbage"),
            ("gw/bridge/updates/devices", b'{"not": "a list"}'),
            ("gw/bridge/updates/sessions", json.dumps([{"client_id": 5}]).encode()),
            ("gw/bridge/updates/pending", b"[]"),
            ("gw/bridge/events", b"[[[["),
            ("gw/bridge/status", b'"up"'),
            ("gw/bridge/updates/devices", json.dumps([{"id": "x", "rssi": "loud"}]).encode()),
        ]:
            source.on_message(topic, payload)
        await settle(pilot)
        assert app.is_running
        # The last one was a list with a usable entry: it replaced the devices.
        assert keys(app, "devices") == ["x"] and before != ["x"]
        assert app.model.ignored >= 6
        await pilot.press("2", "3", "4", "1")
        assert app.is_running


async def test_live_update_keeps_the_cursor_on_the_same_row() -> None:
    app, source = make()
    async with app.run_test() as pilot:
        await settle(pilot)
        table = app.table
        table.select("demo-sensor")
        devices = json.loads(json.dumps(source.data["devices"]))
        devices.insert(0, {"id": "a-first-device", "kind": "wled"})
        source.on_message("gw/bridge/updates/devices", json.dumps(devices).encode())
        await settle(pilot)
        assert table.keys[0] == "a-first-device"
        assert table.selected == "demo-sensor"


async def test_enter_shows_every_field_of_a_row() -> None:
    app, _ = make()
    async with app.run_test() as pilot:
        await settle(pilot)
        await pilot.press("2")
        app.table.select("home-assistant")
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        assert dict(app.screen.fields)["subscriptions"] == "gw/#, homeassistant/status"
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)


async def test_uptime_stops_while_disconnected_and_says_since_when() -> None:
    now = [NOW]
    source = StaticSource()
    app = GatewayTUI(source, clock=lambda: now[0], model=Model(localtime=time.gmtime), tick=0.05)

    def status_line() -> str:
        return str(app.query_one("#status").render())

    async with app.run_test() as pilot:
        await settle(pilot)
        assert "up 2h03m" in status_line()  # started 7,384 s before NOW
        source.on_status(LinkStatus(LinkState.UNREACHABLE, "connection refused"))
        now[0] += 3600  # an hour without the gateway: its uptime is not known to grow
        app.redraw(force=True)
        await settle(pilot)
        line = status_line()
        assert "up 2h03m" in line, line
        down = time.strftime("%H:%M:%S", time.gmtime(NOW))
        assert f"disconnected since {down}" in line, line
        source.on_status(LinkStatus(LinkState.CONNECTED, "back"))
        app.redraw(force=True)
        await settle(pilot)
        assert "up 3h03m" in status_line() and "disconnected" not in status_line()
