"""Snapshots of the TUI's main views, from fixed sample data (no gateway, no clock).

Update after an intended change of the screens with
``python -m pytest tests/test_tui_snapshots.py --snapshot-update`` and look at the SVGs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.tui.app import GatewayTUI
from gateway.tui.client import LinkState, LinkStatus
from gateway.tui.model import Model
from gateway.tui.sample import NOW, StaticSource

SIZES = [(80, 24), (120, 40)]


def app(connected: bool = True, upstreams: bool = True) -> GatewayTUI:
    return GatewayTUI(
        StaticSource(connected=connected, upstreams=upstreams),
        clock=lambda: NOW,
        model=Model(localtime=time.gmtime),
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("keys", [["1"], ["2"], ["3"], ["4"], ["5"]], ids=lambda k: f"tab{k[0]}")
def test_main_views(snap_compare: Callable[..., bool], size: tuple[int, int], keys: Any) -> None:
    assert snap_compare(app(), press=keys, terminal_size=size)


# Every dialog at both sizes: nothing clipped at 80x24. Devices are sorted: demo-plug,
# demo-sensor, demo-thermostat, hall-valve.
DIALOGS = {
    "send-thermostat": ["down", "down", "s"],
    "policy-thermostat": ["down", "down", "p"],
    "flush-confirm": ["down", "down", "f"],
    "device-details": ["down", "down", "enter"],
    "filter-devices": ["slash", *"demo"],
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(DIALOGS))
def test_dialogs(snap_compare: Callable[..., bool], size: tuple[int, int], name: str) -> None:
    assert snap_compare(app(), press=DIALOGS[name], terminal_size=size)


def test_disconnected_since_stops_the_uptime(snap_compare: Callable[..., bool]) -> None:
    tui = app()

    async def drop_link(pilot: Any) -> None:
        await pilot.pause(0.1)
        tui.source.on_status(LinkStatus(LinkState.UNREACHABLE, "connection refused"))  # type: ignore[attr-defined]
        await pilot.pause(0.1)

    assert snap_compare(tui, run_before=drop_link, terminal_size=(80, 24))


def test_gateway_unreachable_banner(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(connected=False), terminal_size=(80, 24))


def test_filtered_sessions(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(), press=["2", "slash", *"offline", "enter"], terminal_size=(80, 24))


def test_cancel_confirmation_dialog(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(), press=["3", "c"], terminal_size=(80, 24))


def test_send_dialog_rejects_bad_json(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(), press=["s", *"{on", "enter"], terminal_size=(80, 24))


def test_session_details(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(), press=["2", "down", "down", "enter"], terminal_size=(80, 24))


def test_no_upstream_configured(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(upstreams=False), press=["5"], terminal_size=(80, 24))


def test_upstream_details(snap_compare: Callable[..., bool]) -> None:
    assert snap_compare(app(), press=["5", "enter"], terminal_size=(80, 24))
