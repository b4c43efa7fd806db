"""The TUI (Textual run_test + Pilot) against a real in-process gateway in demo mode.

The gateway (app.Gateway, admin API included) runs in the test's event loop with a Unix
listener marked admin, as the shipped config has; the TUI connects to it with its real
AdminClient. The demo thermostat sleeps for a minute, so a command sent to it stays pending.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot

from devices.demo import DemoTimings
from gateway.app import Gateway
from gateway.config import GatewayConfig, parse_config
from gateway.tui.app import GatewayTUI
from gateway.tui.client import AdminClient, LinkState, unix_connector
from gateway.tui.screens import ConfirmScreen, SendScreen

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning")]

SLEEPY = DemoTimings(
    sensor_interval=0.2, thermostat_period=60.0, thermostat_awake=0.3, advert_interval=0.1
)


def make_config(tmp_path: Path) -> GatewayConfig:
    config = {
        "listeners": [{"type": "unix", "path": str(tmp_path / "gw.sock"), "admin": True}],
        "persistence": {"path": str(tmp_path / "gw.db")},
        "sys_interval": 0,
        "devices": {"ble": {"enabled": False}, "lan": {"poll_interval": 0.2, "timeout": 1}},
        "demo": True,
    }
    return parse_config(json.dumps(config), "tui-test.yaml")


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    gw = Gateway(make_config(tmp_path), demo_timings=SLEEPY)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def tui(tmp_path: Path) -> GatewayTUI:
    client = AdminClient(
        unix_connector(str(tmp_path / "gw.sock")),
        client_id="tui-test",
        backoff_initial=0.05,
        backoff_max=0.2,
        where="the test gateway",
    )
    return GatewayTUI(client, tick=0.05)


async def until(
    pilot: Pilot[None], predicate: Callable[[], object], what: str, timeout: float = 8.0
) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def table_keys(app: GatewayTUI, view: str) -> list[str]:
    assert app.view == view
    return app.table.keys


def cells(app: GatewayTUI, view: str, key: str) -> list[str]:
    assert app.view == view
    return list(app.table.row(key))


async def select(pilot: Pilot[None], app: GatewayTUI, view: str, key: str) -> None:
    assert app.view == view and app.table.select(key)
    await pilot.pause()


async def test_devices_and_sessions_appear(gateway: Gateway, tmp_path: Path) -> None:
    app = tui(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.link.state is LinkState.CONNECTED, "the link")
        await until(
            pilot,
            lambda: table_keys(app, "devices") == ["demo-plug", "demo-sensor", "demo-thermostat"],
            "the demo devices in the table",
        )
        assert cells(app, "devices", "demo-thermostat")[1] == "eq3"
        await until(pilot, lambda: app.model.status is not None, "the gateway's status")
        assert app.query_one("#banner").has_class("hidden")
        await pilot.press("2")
        await until(
            pilot,
            lambda: (
                {"dev-demo-plug", "dev-demo-thermostat", "tui-test"}
                <= set(table_keys(app, "sessions"))
            ),
            "the sessions",
        )
        assert cells(app, "sessions", "tui-test")[1] == "online"
        assert cells(app, "sessions", "dev-demo-thermostat")[2] == "persistent"


async def test_pending_command_shows_up_and_goes_on_cancel(
    gateway: Gateway, tmp_path: Path
) -> None:
    app = tui(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: "demo-thermostat" in table_keys(app, "devices"), "devices")
        await select(pilot, app, "devices", "demo-thermostat")
        await pilot.press("s")
        assert isinstance(app.screen, SendScreen)
        await pilot.press(*'{"target_temp": 22.5}', "enter")
        await until(pilot, lambda: app.last_result.startswith("sent"), "the send")

        await pilot.press("3")
        await until(pilot, lambda: len(table_keys(app, "pending")) == 1, "the pending command")
        [key] = table_keys(app, "pending")
        row = cells(app, "pending", key)
        assert row[0] == "demo-thermostat" and row[2] == "queued"
        assert row[3] == '{"target_temp":22.5}'

        await select(pilot, app, "pending", key)
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # declined: nothing changes
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.pause(0.3)
        assert key in table_keys(app, "pending")

        await pilot.press("c")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: key not in table_keys(app, "pending"), "the cancel")
        assert app.model.pending.get("demo-thermostat", ()) == ()
        # What happened to it stays visible, from the command's result event.
        await until(
            pilot,
            lambda: any(
                cells(app, "pending", k)[2] == "cancelled" for k in table_keys(app, "pending")
            ),
            "the cancelled outcome",
        )


async def test_kick_asks_for_confirmation(gateway: Gateway, tmp_path: Path) -> None:
    app = tui(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: "dev-demo-plug" in table_keys(app, "sessions"), "sessions")
        await select(pilot, app, "sessions", "dev-demo-plug")
        kicks = []
        original = app.source.request

        async def spy(
            action: str, body: dict[str, object] | None = None, timeout: float | None = None
        ) -> object:
            if action == "kick":
                kicks.append(body)
            return await original(action, body, timeout)

        app.source.request = spy  # type: ignore[method-assign]
        await pilot.press("k")
        assert isinstance(app.screen, ConfirmScreen)
        assert "dev-demo-plug" in app.screen.question
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert kicks == [] and app.last_result.startswith("cancelled")

        await pilot.press("k", "y")
        await until(pilot, lambda: app.last_result.startswith("kicked"), "the kick")
        assert kicks == [{"client_id": "dev-demo-plug"}]
        assert '"kicked":true' in app.last_result


async def test_unreachable_while_the_gateway_is_down_and_back_after_restart(
    tmp_path: Path,
) -> None:
    gw = Gateway(make_config(tmp_path), demo_timings=SLEEPY)
    await gw.start()
    app = tui(tmp_path)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: len(table_keys(app, "devices")) == 3, "devices")
            await gw.stop()
            banner = app.query_one("#banner")
            await until(pilot, lambda: not banner.has_class("hidden"), "the banner")
            assert "unreachable" in str(banner.render())
            assert app.link.state is LinkState.UNREACHABLE
            await pilot.pause(0.5)  # several failed attempts: the app keeps running

            gw = Gateway(make_config(tmp_path), demo_timings=SLEEPY)
            await gw.start()
            await until(pilot, lambda: app.link.state is LinkState.CONNECTED, "the reconnect")
            await until(pilot, lambda: banner.has_class("hidden"), "the banner to go")
            await until(pilot, lambda: len(table_keys(app, "devices")) == 3, "devices again")
    finally:
        await gw.stop()
