"""Home Assistant MQTT discovery as the running gateway publishes it (integration).

The parts are those of tests/test_supervisor.py: the gateway in the test's loop, a fake Shelly
Plus 1PM found over real zeroconf on 127.0.0.1, and a paho client playing Home Assistant.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from lan_fakes import announcer, shelly_plus_1pm, shelly_service
from paho_helpers import Client
from test_supervisor import (  # noqa: F401 - start_gateway is a fixture
    SENSOR,
    FakeRadio,
    Watcher,
    bthome,
    start_gateway,
    stop,
    stopped,
)

from devices.ble.radio import BTHOME_UUID, Advertisement
from devices.supervisor import Supervisor, bthome_id
from gateway.config import parse_config

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning")]

BRIDGE_CONFIG = "homeassistant/binary_sensor/edge-gateway/bridge_state/config"


def configs(w: Watcher, component: str) -> dict[str, Any]:
    """The last non-empty config per topic of one component."""
    return {
        t: json.loads(p)
        for t, p in w.last.items()
        if t.startswith(f"homeassistant/{component}/") and t.endswith("/config") and p
    }


def count(w: Watcher, topic: str) -> int:
    return sum(1 for t, _ in w.all if t == topic)


async def ha_watcher(port: int, client_id: str = "watcher") -> Watcher:
    """A Watcher (gw/#) that also follows the discovery topics, as Home Assistant does."""
    w = Watcher(await asyncio.to_thread(Client, port, client_id))
    await asyncio.to_thread(w.client.subscribe, "gw/#", 1)
    await asyncio.to_thread(w.client.subscribe, "homeassistant/#", 1)
    return w


async def test_shelly_switch_discovery_and_resend_on_home_assistant_birth(
    start_gateway: Callable[..., Any],  # noqa: F811
) -> None:
    fake = shelly_plus_1pm()
    async with fake, announcer() as ann:
        await ann.register(shelly_service(fake))
        gw, port = await start_gateway(
            {
                "ble": {"enabled": False},
                "lan": {"interfaces": ["127.0.0.1"], "poll_interval": 0.1, "timeout": 1},
            }
        )
        dev = fake.device_id
        w = await ha_watcher(port)
        try:
            await w.until(lambda w: bool(configs(w, "switch")))
            ((topic, switch),) = configs(w, "switch").items()
            assert topic == f"homeassistant/switch/edge-gateway_{dev}/on/config"
            assert switch["command_topic"] == f"gw/{dev}/set"
            assert switch["state_topic"] == f"gw/{dev}/state"
            assert [a["topic"] for a in switch["availability"]] == [
                f"gw/{dev}/availability",
                "gw/bridge/state",
            ]
            assert switch["unique_id"] == f"edge-gateway_{dev}_on"
            assert switch["device"]["via_device"] == "edge-gateway"
            # Metering readings become sensors of the same device.
            power = f"homeassistant/sensor/edge-gateway_{dev}/power/config"
            await w.until(lambda w: power in configs(w, "sensor"))
            assert configs(w, "sensor")[power]["device"] == switch["device"]
            assert json.loads(w.last[BRIDGE_CONFIG])["state_topic"] == "gw/bridge/state"

            # Retained: a client that subscribes later (Home Assistant starting) gets them.
            late = await ha_watcher(port, "late")
            try:
                await late.until(lambda w: topic in w.last and BRIDGE_CONFIG in w.last)
                assert json.loads(late.last[topic]) == switch
            finally:
                await late.close()

            # A new state with the same keys does not publish the configs again.
            await asyncio.to_thread(w.client.publish, f"gw/{dev}/set", b'{"on": true}', 1)
            await w.until(lambda w: w.json(f"gw/{dev}/state")["on"] is True)
            await asyncio.sleep(0.2)
            w._drain()
            assert count(w, topic) == 1 and count(w, BRIDGE_CONFIG) == 1

            # Home Assistant's birth message: every config comes again.
            await asyncio.to_thread(w.client.publish, "homeassistant/status", b"online", 1)
            await w.until(lambda w: count(w, topic) == 2 and count(w, BRIDGE_CONFIG) == 2)
            assert json.loads(w.last[topic]) == switch
            await w.until(lambda w: count(w, power) == 2)
            # Anything else on the status topic is not a birth.
            await asyncio.to_thread(w.client.publish, "homeassistant/status", b"offline", 1)
            await asyncio.sleep(0.3)
            w._drain()
            assert count(w, topic) == 2

            # A reading the device stops reporting: its entity is removed (empty retained
            # config), the others stay, and a later subscriber sees no config for it.
            temperature = f"homeassistant/sensor/edge-gateway_{dev}/temperature/config"
            assert temperature in configs(w, "sensor")
            del fake.components["switch:0"]["temperature"]
            await w.until(lambda w: w.last.get(temperature) == b"")
            assert "temperature" not in w.json(f"gw/{dev}/state")
            assert count(w, topic) == 2
            late = await ha_watcher(port, "later")
            try:
                await late.until(lambda w: power in w.last)
                await asyncio.sleep(0.2)
                late._drain()
                assert temperature not in late.last
            finally:
                await late.close()
            # Home Assistant's next birth does not bring the removed entity back.
            await asyncio.to_thread(w.client.publish, "homeassistant/status", b"online", 1)
            await w.until(lambda w: count(w, topic) == 3)
            await asyncio.sleep(0.2)
            w._drain()
            assert w.last[temperature] == b""
        finally:
            if gw not in stopped:
                await stop(gw)
            await w.close()


async def test_bthome_sensor_configs_and_events(
    start_gateway: Callable[..., Any],  # noqa: F811
) -> None:
    gw, port = await start_gateway({"ble": {"enabled": False}, "lan": {"enabled": False}})
    config = parse_config(json.dumps({"devices": {"lan": {"enabled": False}}}), "t.yaml").devices
    radio = FakeRadio()
    supervisor = Supervisor(config, gw.server.connect_in_process, "gw", radio=radio)
    w = await ha_watcher(port)
    await supervisor.start()
    dev = bthome_id(SENSOR)
    node = f"homeassistant/sensor/edge-gateway_{dev}"
    try:
        assert radio.callback is not None
        radio.callback(Advertisement(SENSOR, None, -60, bthome(21.5, 45.0, 1)))
        # Every config of the first packet: they are published one after the other.
        await w.until(
            lambda w: f"{node}/humidity/config" in w.last and f"{node}/rssi/config" in w.last
        )
        temperature = json.loads(w.last[f"{node}/temperature/config"])
        assert temperature["device_class"] == "temperature"
        assert temperature["state_topic"] == f"gw/{dev}/state"
        assert f"{node}/rssi/config" in w.last

        # A button press: an event entity, and the event itself, not retained.
        press = bytes((0x40, 0x00, 2, 0x3A, 0x01))
        radio.callback(Advertisement(SENSOR, None, -60, {BTHOME_UUID: press}))
        event_config = f"homeassistant/event/edge-gateway_{dev}/button/config"
        await w.until(lambda w: f"gw/{dev}/event" in w.last and event_config in w.last)
        assert w.json(f"gw/{dev}/event") == {"button": "press"}
        assert json.loads(w.last[event_config])["state_topic"] == f"gw/{dev}/event"
        # The readings of the earlier packet keep their entities (BTHome packets are partial).
        assert count(w, f"{node}/temperature/config") == 1

        late = await ha_watcher(port, "late")
        try:
            await late.until(lambda w: event_config in w.last)
            assert f"gw/{dev}/event" not in late.last
        finally:
            await late.close()
    finally:
        await supervisor.stop()
        await w.close()
