"""Shelly Gen2 and WLED drivers against HTTP servers on 127.0.0.1 speaking the devices' APIs."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from devices.lan import (
    CommandRejected,
    DeviceHTTPError,
    DeviceUnreachable,
    LanDeviceError,
    ShellyGen2,
    ShellyRpcError,
    Wled,
    WledError,
    device_id,
    identify,
    make_driver,
)
from devices.lan.poller import StatePoller
from devices.lan.shelly import plan, state_from_status
from tests.lan_fakes import (
    LOOPBACK,
    FakeShelly,
    FakeWled,
    free_port,
    shelly_plus_1pm,
    shelly_plus_2pm_cover,
    shelly_plus_dimmer,
    shelly_service,
    wled_service,
)


@pytest.fixture
async def plug() -> AsyncIterator[FakeShelly]:
    async with shelly_plus_1pm() as fake:
        yield fake


@pytest.fixture
async def cover() -> AsyncIterator[FakeShelly]:
    async with shelly_plus_2pm_cover() as fake:
        yield fake


@pytest.fixture
async def strip() -> AsyncIterator[FakeWled]:
    async with FakeWled() as fake:
        yield fake


# ------------------------------------------------------------------ Shelly: switch (Plus 1PM)


async def test_shelly_info_from_get_device_info(plug: FakeShelly) -> None:
    async with ShellyGen2(LOOPBACK, plug.port, timeout=2) as dev:
        info = await dev.get_info()
    assert info.id == "shellyplus1pm-a8032ab12345"
    assert (info.manufacturer, info.model, info.sw_version) == ("Shelly", "SNSW-001P16EU", "1.0.8")
    assert info.mac == "A8032AB12345"
    assert plug.calls == [("Shelly.GetDeviceInfo", {})]


async def test_shelly_switch_state_and_commands(plug: FakeShelly) -> None:
    async with ShellyGen2(LOOPBACK, plug.port, timeout=2) as dev:
        state = await dev.get_state()
        assert state["on"] is False
        assert state["power"] == 0.0
        assert state["energy"] == 1234.567
        assert state["temperature"] == 41.3
        assert state["voltage"] == 230.4
        assert state["rssi"] == -58

        await dev.execute({"on": True})
        assert plug.calls[-1] == ("Switch.Set", {"id": 0, "on": True})
        assert plug.components["switch:0"]["output"] is True
        state = await dev.get_state()
        assert state["on"] is True
        assert state["power"] == 42.5

        await dev.execute({"switch:0": {"on": False}})
        assert (await dev.get_state())["on"] is False

        await dev.execute({"toggle": True})
        assert (await dev.get_state())["on"] is True


async def test_shelly_frames_are_json_rpc_with_increasing_ids(plug: FakeShelly) -> None:
    seen: list[dict[str, object]] = []
    original = plug.dispatch

    def spy(method: str, params: dict[str, object]) -> object:
        seen.append({"method": method, **params})
        return original(method, params)

    plug.dispatch = spy  # type: ignore[method-assign]
    async with ShellyGen2(LOOPBACK, plug.port, timeout=2) as dev:
        r1 = await dev.call("Switch.GetStatus", {"id": 0})
        r2 = await dev.call("Switch.Set", {"id": 0, "on": True})
    assert r1["output"] is False
    assert r2 == {"was_on": False}
    assert seen == [
        {"method": "Switch.GetStatus", "id": 0},
        {"method": "Switch.Set", "id": 0, "on": True},
    ]


async def test_shelly_rpc_error_is_typed_and_carries_code(plug: FakeShelly) -> None:
    async with ShellyGen2(LOOPBACK, plug.port, timeout=2) as dev:
        with pytest.raises(ShellyRpcError) as bad_id:
            await dev.execute({"switch:3": {"on": True}})
        with pytest.raises(ShellyRpcError) as no_method:
            await dev.call("Thermostat.SetTarget", {"id": 0})
    assert bad_id.value.code == -105
    assert bad_id.value.method == "Switch.Set"
    assert "Bad id=3" in str(bad_id.value)
    assert not bad_id.value.retryable
    assert no_method.value.code == 404
    assert isinstance(bad_id.value, LanDeviceError)


@pytest.mark.parametrize(
    "command",
    [
        {},
        {"on": "yes"},
        {"brightness": 50},  # a plug has no light
        {"position": 40},  # ... and no cover
        {"colour": "red"},
        {"switch:0": {"on": True, "brightness": 3}},
        {"switch:x": {"on": True}},
        {"on": True, "nonsense": 1},
    ],
)
async def test_shelly_bad_commands_rejected_before_anything_is_sent(
    plug: FakeShelly, command: dict[str, object]
) -> None:
    async with ShellyGen2(LOOPBACK, plug.port, timeout=2) as dev:
        await dev.get_state()
        before = len(plug.calls)
        with pytest.raises(CommandRejected):
            await dev.execute(command)
    assert len(plug.calls) == before
    assert plug.components["switch:0"]["output"] is False


# ------------------------------------------------------------------ Shelly: cover (Plus 2PM)


async def test_shelly_cover_position_and_actions(cover: FakeShelly) -> None:
    async with ShellyGen2(LOOPBACK, cover.port, timeout=2) as dev:
        info = await dev.get_info()
        assert info.raw["profile"] == "cover"
        state = await dev.get_state()
        assert (state["cover"], state["position"]) == ("stopped", 50)

        await dev.execute({"position": 40})
        assert cover.calls[-1] == ("Cover.GoToPosition", {"id": 0, "pos": 40})
        assert (await dev.get_state())["position"] == 40

        await dev.execute({"cover": "open"})
        state = await dev.get_state()
        assert (state["cover"], state["position"]) == ("open", 100)

        await dev.execute({"cover:0": "close"})
        state = await dev.get_state()
        assert (state["cover"], state["position"]) == ("closed", 0)

        with pytest.raises(CommandRejected):
            await dev.execute({"cover": "up"})
        with pytest.raises(CommandRejected):
            await dev.execute({"position": 140})
        with pytest.raises(CommandRejected):
            await dev.execute({"on": True})


async def test_shelly_cover_reports_motion_and_stop() -> None:
    fake = shelly_plus_2pm_cover(move_time=0.3)
    async with fake, ShellyGen2(LOOPBACK, fake.port, timeout=2) as dev:
        await dev.execute({"position": 90})
        assert (await dev.get_state())["cover"] == "opening"
        await dev.execute({"cover": "stop"})
        state = await dev.get_state()
        assert (state["cover"], state["position"]) == ("stopped", 50)


async def test_shelly_uncalibrated_cover_refuses_position(cover: FakeShelly) -> None:
    cover.components["cover:0"].update(pos_control=False, current_pos=None)
    async with ShellyGen2(LOOPBACK, cover.port, timeout=2) as dev:
        assert "position" not in await dev.get_state()
        with pytest.raises(ShellyRpcError) as err:
            await dev.execute({"position": 10})
    assert err.value.code == -103


# ------------------------------------------------------------------ Shelly: light


async def test_shelly_light_on_and_brightness_in_one_call() -> None:
    async with shelly_plus_dimmer() as fake, ShellyGen2(LOOPBACK, fake.port, timeout=2) as dev:
        assert await dev.get_state() == {
            "on": False,
            "brightness": 60,
            "temperature": 35.2,
            "rssi": -58,
        }
        await dev.execute({"on": True, "brightness": 25})
        assert fake.calls[-1] == ("Light.Set", {"id": 0, "on": True, "brightness": 25})
        state = await dev.get_state()
        assert (state["on"], state["brightness"]) == (True, 25)


def test_shelly_several_components_stay_nested_and_flat_keys_are_ambiguous() -> None:
    status = {
        "switch:0": {"id": 0, "output": True, "apower": 3.5},
        "switch:1": {"id": 1, "output": False, "apower": 0},
        "input:0": {"id": 0, "state": False},
    }
    assert state_from_status(status) == {
        "switch:0": {"on": True, "power": 3.5},
        "switch:1": {"on": False, "power": 0},
    }
    comps = {"switch": [0, 1]}
    with pytest.raises(CommandRejected, match="ambiguous"):
        plan({"on": True}, comps, "x")
    assert plan({"switch:1": {"on": True}, "switch:0": {"on": False}}, comps, "x") == [
        ("Switch.Set", {"id": 1, "on": True}),
        ("Switch.Set", {"id": 0, "on": False}),
    ]


# ------------------------------------------------------------------ Shelly: transport


async def test_shelly_unreachable_is_typed_and_retryable() -> None:
    async with ShellyGen2(LOOPBACK, free_port(), timeout=1) as dev:
        with pytest.raises(DeviceUnreachable) as err:
            await dev.get_state()
        assert err.value.retryable
        with pytest.raises(DeviceUnreachable):
            await dev.execute({"switch:0": {"on": True}})


async def test_shelly_silent_device_times_out_as_unreachable() -> None:
    # Accepts TCP connections and never answers: the configured timeout must bound the call.
    server = socket.socket()
    server.bind((LOOPBACK, 0))
    server.listen(8)
    port = server.getsockname()[1]
    try:
        async with ShellyGen2(LOOPBACK, port, timeout=0.3) as dev:
            with pytest.raises(DeviceUnreachable, match=r"no answer within 0\.3 s"):
                await asyncio.wait_for(dev.get_state(), 5)
    finally:
        server.close()


async def test_shelly_device_that_goes_away_and_comes_back(plug: FakeShelly) -> None:
    async with ShellyGen2(LOOPBACK, plug.port, timeout=1) as dev:
        await dev.execute({"on": True})
        await plug.stop()
        with pytest.raises(DeviceUnreachable):
            await dev.get_state()
        await plug.start()  # same port, state kept (a power blip of the network, not the relay)
        assert (await dev.get_state())["on"] is True


async def test_shelly_http_error_without_rpc_frame_is_typed() -> None:
    from aiohttp import web

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="internal")

    app = web.Application()
    app.router.add_post("/rpc", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with ShellyGen2(LOOPBACK, port, timeout=1) as dev:
            with pytest.raises(DeviceHTTPError) as err:
                await dev.get_state()
        assert err.value.status == 500
        assert err.value.retryable
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------ WLED


async def test_wled_info_and_state(strip: FakeWled) -> None:
    async with Wled(LOOPBACK, strip.port, timeout=2) as dev:
        info = await dev.get_info()
        state = await dev.get_state()
    assert info.id == "wled-bcdef0"
    assert (info.manufacturer, info.sw_version, info.name) == ("WLED", "0.14.4", "WLED")
    assert state["on"] is True
    assert state["brightness"] == 128
    assert state["preset"] is None
    assert state["color"] == [255, 160, 0]
    assert state["segments"][0]["colors"][0] == [255, 160, 0]


async def test_wled_commands_change_state(strip: FakeWled) -> None:
    async with Wled(LOOPBACK, strip.port, timeout=2) as dev:
        await dev.execute({"on": False})
        assert strip.posts[-1] == {"on": False}
        assert (await dev.get_state())["on"] is False

        await dev.execute({"on": True, "brightness": 200, "color": [10, 20, 30]})
        assert strip.posts[-1] == {
            "on": True,
            "bri": 200,
            "seg": [{"id": 0, "col": [[10, 20, 30]]}],
        }
        state = await dev.get_state()
        assert (state["on"], state["brightness"], state["color"]) == (True, 200, [10, 20, 30])

        await dev.execute({"preset": 2})
        state = await dev.get_state()
        assert (state["preset"], state["brightness"], state["color"]) == (2, 40, [255, 80, 10])

        await dev.execute({"brightness": 90})
        assert (await dev.get_state())["preset"] is None


@pytest.mark.parametrize(
    "command",
    [
        {},
        {"brightness": 256},
        {"brightness": True},
        {"color": [1, 2]},
        {"color": [1, 2, 300]},
        {"preset": 0},
        {"hue": 3},
    ],
)
async def test_wled_bad_commands_rejected(strip: FakeWled, command: dict[str, object]) -> None:
    async with Wled(LOOPBACK, strip.port, timeout=2) as dev:
        with pytest.raises(CommandRejected):
            await dev.execute(command)
    assert strip.posts == []


async def test_wled_error_answer_is_typed(strip: FakeWled) -> None:
    strip.locked = True
    async with Wled(LOOPBACK, strip.port, timeout=2) as dev:
        with pytest.raises(WledError) as err:
            await dev.execute({"on": False})
    assert (err.value.code, err.value.status) == (3, 503)
    assert err.value.retryable
    assert strip.state["on"] is True


async def test_wled_unreachable_is_typed() -> None:
    async with Wled(LOOPBACK, free_port(), timeout=1) as dev:
        with pytest.raises(DeviceUnreachable):
            await dev.get_state()
        with pytest.raises(DeviceUnreachable):
            await dev.execute({"on": True})


# ------------------------------------------------------------------ declared by host


async def test_identify_by_host_gives_the_same_id_discovery_would(
    plug: FakeShelly, cover: FakeShelly, strip: FakeWled
) -> None:
    shelly = await identify(LOOPBACK, plug.port, timeout=2)
    assert (shelly.id, shelly.kind, shelly.port) == (plug.device_id, "shelly", plug.port)
    assert device_id(shelly_service(plug).name.split(".")[0]) == shelly.id
    assert shelly.properties["gen"] == "2"
    assert shelly.properties["app"] == "Plus1PM"
    assert shelly.service_type == "static"

    two = await identify(LOOPBACK, cover.port, kind="shelly", timeout=2)
    assert two.properties["profile"] == "cover"

    wled = await identify(LOOPBACK, strip.port, timeout=2)
    assert (wled.kind, wled.id) == ("wled", "wled-bcdef0")
    assert device_id(wled_service(strip).name.split(".")[0]) == wled.id

    async with make_driver(wled.kind, wled.host, wled.port, timeout=2) as drv:
        await drv.execute({"on": False})
    assert strip.state["on"] is False


async def test_identify_failures_are_typed(strip: FakeWled) -> None:
    with pytest.raises(DeviceUnreachable):
        await identify(LOOPBACK, free_port(), timeout=1)
    with pytest.raises(LanDeviceError):
        await identify(LOOPBACK, strip.port, kind="shelly", timeout=1)
    with pytest.raises(ValueError, match="unknown LAN device kind"):
        make_driver("hue", LOOPBACK)


# ------------------------------------------------------------------ polling / reachability


class Events:
    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []
        self.changed = asyncio.Event()

    def state(self, state: dict[str, object]) -> None:
        self.log.append(("state", state.get("on")))
        self.changed.set()

    async def reachable(self, up: bool) -> None:
        self.log.append(("reachable", up))
        self.changed.set()

    async def until(self, entry: tuple[str, object], timeout: float = 5) -> None:
        async def wait() -> None:
            while entry not in self.log:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)


async def test_poller_reports_state_changes_and_reachability(plug: FakeShelly) -> None:
    ev = Events()
    async with ShellyGen2(LOOPBACK, plug.port, timeout=0.5) as dev:
        poller = StatePoller(
            dev, interval=0.05, on_state=ev.state, on_reachable=ev.reachable, misses=2
        )
        await poller.start()
        try:
            await ev.until(("state", False))
            assert ev.log[:2] == [("reachable", True), ("state", False)]
            await asyncio.sleep(0.2)
            assert len(ev.log) == 2  # unchanged state is not reported again

            plug.dispatch("Switch.Set", {"id": 0, "on": True})  # pressed on the wall
            await ev.until(("state", True))

            await plug.stop()
            await ev.until(("reachable", False))
            assert ev.log.count(("reachable", False)) == 1

            await plug.start()
            await ev.until(("reachable", True))
            await asyncio.sleep(0.1)
            assert ev.log[-2:] == [("reachable", True), ("state", True)]
        finally:
            await poller.stop()


async def test_poller_needs_consecutive_misses_and_poll_once_is_direct(plug: FakeShelly) -> None:
    ev = Events()
    async with ShellyGen2(LOOPBACK, plug.port, timeout=0.5) as dev:
        poller = StatePoller(
            dev, interval=60, on_state=ev.state, on_reachable=ev.reachable, misses=3
        )
        assert (await poller.poll_once() or {}).get("on") is False
        await plug.stop()
        assert await poller.poll_once() is None
        assert await poller.poll_once() is None
        assert ("reachable", False) not in ev.log
        assert await poller.poll_once() is None
        assert ev.log[-1] == ("reachable", False)
        await plug.start()
        await dev.execute({"on": True})
        await poller.start()  # polls at once
        await ev.until(("state", True), timeout=2)
        try:
            ev.log.clear()
            plug.dispatch("Switch.Set", {"id": 0, "on": False})
            poller.poll_soon()
            await ev.until(("state", False), timeout=2)  # long before the 60 s interval
        finally:
            await poller.stop()
