"""The device layer inside the running gateway (integration, real parts).

The gateway (app.Gateway) runs in the test's event loop, next to the simulated devices: a
Shelly Plus 1PM speaking its real JSON-RPC API on loopback and announced with real zeroconf on
127.0.0.1, and a fake BlueZ on a private D-Bus that the real bleak scans. A paho client, with
its network thread, plays Home Assistant; blocking paho calls run in a worker thread so that
the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from fakebluez import FakeBlueZ
from lan_fakes import announcer, shelly_plus_1pm, shelly_service
from lan_fakes import free_port as lan_free_port
from watcher import Watcher, listed

from devices.ble.radio import BTHOME_UUID, Advertisement
from devices.supervisor import Supervisor
from gateway.app import Gateway
from gateway.config import parse_config

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning")]

SENSOR = "A4:C1:38:00:00:01"


def gateway_config(tmp_path: Path, port: int, devices: dict[str, Any]) -> str:
    return json.dumps(
        {
            "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": port}],
            "persistence": {"path": str(tmp_path / "gw.db")},
            "sys_interval": 0,
            "devices": devices,
        }
    )


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Gateway] = []

    async def start(devices: dict[str, Any]) -> tuple[Gateway, int]:
        port = free_port()
        gw = Gateway(parse_config(gateway_config(tmp_path, port, devices), "test.yaml"))
        await gw.start()
        started.append(gw)
        return gw, port

    yield start
    for gw in started:
        if gw not in stopped:
            await stop(gw)


stopped: list[Gateway] = []


async def stop(gw: Gateway) -> None:
    stopped.append(gw)
    await gw.stop()


async def test_lan_shelly_state_commands_and_queue_while_away(
    start_gateway: Callable[..., Any],
) -> None:
    fake = shelly_plus_1pm()
    await fake.start()
    async with announcer() as ann:
        await ann.register(shelly_service(fake))
        gw, port = await start_gateway(
            {
                "ble": {"enabled": False},
                "lan": {"interfaces": ["127.0.0.1"], "poll_interval": 0.2, "timeout": 1},
            }
        )
        dev = fake.device_id
        state, avail = f"gw/{dev}/state", f"gw/{dev}/availability"
        w = await Watcher.start(port)
        try:
            await w.until(lambda w: state in w.last and w.json(state).get("on") is False)
            assert w.json(state)["power"] == 0.0 and "ts" in w.json(state)
            assert w.last["gw/bridge/state"] == b"online"
            await w.until(lambda w: (listed(w, dev) or {}).get("link") == "online")
            assert listed(w, dev) == {
                "id": dev,
                "kind": "shelly",
                "session": "persistent",
                "link": "online",
            }

            # A command: executed on the device, then reported delivered.
            w.client.c.publish(f"gw/{dev}/set", b'{"on": true}', qos=1)
            await w.until(lambda w: bool(w.results(f"gw/{dev}/result")))
            assert w.results(f"gw/{dev}/result")[0]["result"] == "delivered"
            assert fake.components["switch:0"]["output"] is True
            await w.until(lambda w: w.json(state).get("on") is True)

            # The device goes away: offline; a command sent meanwhile waits.
            await fake.stop()
            await w.until(lambda w: w.last.get(avail) == b"offline")
            await w.until(lambda w: (listed(w, dev) or {}).get("link") == "offline")
            w.client.c.publish(f"gw/{dev}/set", b'{"on": false}', qos=1)
            await asyncio.sleep(0.5)
            assert len(w.results(f"gw/{dev}/result")) == 1
            assert fake.components["switch:0"]["output"] is True

            # It comes back (same port): the waiting command is delivered.
            await fake.start()
            await w.until(lambda w: len(w.results(f"gw/{dev}/result")) == 2)
            assert w.results(f"gw/{dev}/result")[1]["result"] == "delivered"
            assert w.results(f"gw/{dev}/result")[1]["command"] == {"on": False}
            assert fake.components["switch:0"]["output"] is False
            await w.until(lambda w: w.last.get(avail) == b"online")

            # Stopping the device layer: the bridge says offline (the broker still serves).
            assert gw.supervisor is not None
            await gw.supervisor.stop()
            await w.until(lambda w: w.last.get("gw/bridge/state") == b"offline")
        finally:
            if gw not in stopped:
                await stop(gw)
            await asyncio.to_thread(w.client.drop)
            await fake.stop()


async def test_lan_device_declared_by_host(start_gateway: Callable[..., Any]) -> None:
    fake = shelly_plus_1pm()
    async with fake:
        _, port = await start_gateway(
            {
                "ble": {"enabled": False},
                "lan": {"poll_interval": 0.2, "timeout": 1},
                "known": {"boiler": {"kind": "shelly", "host": "127.0.0.1", "port": fake.port}},
            }
        )
        w = await Watcher.start(port)
        try:
            await w.until(lambda w: "gw/boiler/state" in w.last)
            await w.until(lambda w: (listed(w, "boiler") or {}).get("link") == "online")
            assert w.last["gw/bridge/state"] == b"online"
            w.client.c.publish("gw/boiler/set", b'{"toggle": true}', qos=1)
            await w.until(lambda w: bool(w.results("gw/boiler/result")))
            assert fake.components["switch:0"]["output"] is True
        finally:
            await w.close()


# --- BLE ----------------------------------------------------------------------------------------


def bthome(temperature: float, humidity: float, packet_id: int) -> dict[str, bytes]:
    # BTHome v2, unencrypted (0x40): packet id 0x00, temperature 0x02 (0.01 °C),
    # humidity 0x03 (0.01 %).
    payload = bytes((0x40, 0x00, packet_id))
    payload += b"\x02" + round(temperature * 100).to_bytes(2, "little", signed=True)
    payload += b"\x03" + round(humidity * 100).to_bytes(2, "little")
    return {BTHOME_UUID: payload}


async def test_ble_bthome_readings_become_state(
    system_bus: str, bleak_released: None, start_gateway: Callable[..., Any]
) -> None:
    async with FakeBlueZ(system_bus) as bluez:
        bluez.add_device(SENSOR, rssi=-67, service_data=bthome(21.5, 45.25, 1))
        gw, port = await start_gateway({"lan": {"enabled": False}})
        topic = "gw/bthome-a4c138000001/state"
        w = await Watcher.start(port)
        try:
            await w.until(lambda w: topic in w.last)
            reading = w.json(topic)
            assert reading["temperature"] == 21.5 and reading["humidity"] == 45.25
            assert reading["rssi"] == -67
            assert w.last["gw/bthome-a4c138000001/availability"] == b"online"
            await w.until(lambda w: listed(w, "bthome-a4c138000001") is not None)
            entry = listed(w, "bthome-a4c138000001")
            assert entry == {
                "id": "bthome-a4c138000001",
                "kind": "bthome",
                "session": "clean",
                "link": "online",
            }
            # A new packet (new packet id) updates the retained state.
            bluez.devices[SENSOR].advertise(service_data=bthome(22.0, 44.0, 2))
            await w.until(lambda w: w.json(topic)["temperature"] == 22.0)
        finally:
            await w.close()
            await stop(gw)


async def test_silent_ble_sensor_goes_offline_and_comes_back(
    system_bus: str, bleak_released: None, start_gateway: Callable[..., Any]
) -> None:
    async with FakeBlueZ(system_bus) as bluez:
        sensor = bluez.add_device(SENSOR, rssi=-67, service_data=bthome(21.5, 45.25, 1))
        rules = [{"address": SENSOR, "wake_interval": 0.2}]
        gw, port = await start_gateway({"lan": {"enabled": False}, "policy_rules": rules})
        availability = "gw/bthome-a4c138000001/availability"
        w = await Watcher.start(port)
        try:
            await w.until(lambda w: w.last.get(availability) == b"online")
            sensor.advertising = False  # out of range: 3 missed wake-ups of 0.2 s
            await w.until(lambda w: w.last.get(availability) == b"offline")
            await w.until(
                lambda w: (listed(w, "bthome-a4c138000001") or {}).get("link") == "offline"
            )
            sensor.advertising = True
            sensor.advertise(service_data=bthome(21.0, 45.0, 2))
            await w.until(lambda w: w.last.get(availability) == b"online")
            await w.until(
                lambda w: (listed(w, "bthome-a4c138000001") or {}).get("link") == "online"
            )
        finally:
            await w.close()
            await stop(gw)


async def test_ble_without_bluez_keeps_the_gateway_serving(
    system_bus: str,
    bleak_released: None,
    start_gateway: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # A bus without org.bluez (bluetoothd not running, as on a server).
    gw, port = await start_gateway({"lan": {"enabled": False}})
    w = await Watcher.start(port)
    try:
        await asyncio.to_thread(w.client.subscribe, "t/#", 1)
        w.client.c.publish("t/x", b"hello", qos=1)
        await w.until(lambda w: w.last.get("t/x") == b"hello")
        # No device yet, so no client of the gateway's own: the broker looks as without BLE.
        assert "gw/bridge/state" not in w.last
        assert gw.supervisor is not None and gw.supervisor.idle()
    finally:
        await w.close()
    warnings = [r for r in caplog.records if "no Bluetooth adapter" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert any(r.getMessage().startswith("BLE: ") for r in caplog.records)
    assert any(r.getMessage().startswith("LAN: disabled") for r in caplog.records)
    assert any("durable MQTT broker only" in r.getMessage() for r in caplog.records)


class FakeRadio:
    """The radio seam: advertisements handed in by the test, no D-Bus."""

    def __init__(self) -> None:
        self.callback: Callable[[Advertisement], None] | None = None
        self.stopped = False

    async def start(self, callback: Callable[[Advertisement], None]) -> None:
        self.callback = callback

    async def stop(self) -> None:
        self.stopped = True


def encrypted_bthome(key: bytes, mac: str, counter: int, temperature: float) -> dict[str, bytes]:
    # https://bthome.io/encryption/: nonce = MAC + UUID (LE) + device info + counter; AES-CCM
    # with a 4-byte MIC; the frame is info, ciphertext, counter, MIC.
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    info = 0x41
    plain = b"\x02" + round(temperature * 100).to_bytes(2, "little", signed=True)
    counter_bytes = counter.to_bytes(4, "little")
    nonce = bytes.fromhex(mac.replace(":", "")) + b"\xd2\xfc" + bytes((info,)) + counter_bytes
    sealed = AESCCM(key, tag_length=4).encrypt(nonce, plain, None)
    return {BTHOME_UUID: bytes((info,)) + sealed[:-4] + counter_bytes + sealed[-4:]}


async def test_declared_bthome_sensor_uses_its_id_and_bind_key(
    start_gateway: Callable[..., Any],
) -> None:
    key = "231d39c1d7cc1ab1aee224cd096db932"
    gw, port = await start_gateway({"ble": {"enabled": False}, "lan": {"enabled": False}})
    config = parse_config(
        json.dumps(
            {
                "devices": {
                    "known": {"kitchen": {"kind": "bthome", "address": SENSOR, "bind_key": key}}
                }
            }
        ),
        "test.yaml",
    ).devices
    radio = FakeRadio()
    supervisor = Supervisor(config, gw.server.connect_in_process, "gw", radio=radio)
    w = await Watcher.start(port)
    await supervisor.start()
    try:
        # Declared devices are listed before they are heard from.
        await w.until(lambda w: (listed(w, "kitchen") or {}).get("link") == "unknown")
        assert radio.callback is not None
        # Without encryption the sensor is refused (downgrade); with its key it is read.
        radio.callback(Advertisement(SENSOR, None, -70, bthome(30.0, 10.0, 9)))
        payload = encrypted_bthome(bytes.fromhex(key), SENSOR, 7, 19.25)
        radio.callback(Advertisement(SENSOR, None, -71, payload))
        await w.until(lambda w: "gw/kitchen/state" in w.last)
        assert w.json("gw/kitchen/state")["temperature"] == 19.25
        assert w.json("gw/kitchen/state")["rssi"] == -71
        await w.until(lambda w: (listed(w, "kitchen") or {}).get("link") == "online")
        assert not any(t.startswith("gw/bthome-") for t in w.last)
    finally:
        await supervisor.stop()
        await w.close()
    assert radio.stopped


async def test_lan_command_the_device_rejects_fails_and_does_not_block_the_queue(
    start_gateway: Callable[..., Any],
) -> None:
    fake = shelly_plus_1pm()
    async with fake:
        _, port = await start_gateway(
            {
                "ble": {"enabled": False},
                "lan": {"poll_interval": 0.2, "timeout": 1},
                "known": {
                    "plug": {
                        "kind": "shelly",
                        "host": "127.0.0.1",
                        "port": fake.port,
                        "max_attempts": 3,
                    }
                },
            }
        )
        w = await Watcher.start(port)
        try:
            await w.until(lambda w: (listed(w, "plug") or {}).get("link") == "online")
            # A Shelly command (the broker's schema lets it through) that only this device
            # cannot carry out: a plug has no light.
            w.client.c.publish("gw/plug/set", b'{"brightness": 50}', qos=1)
            w.client.c.publish("gw/plug/set", b'{"on": true}', qos=1)
            await w.until(lambda w: len(w.results("gw/plug/result")) == 2)
            failed, delivered = w.results("gw/plug/result")
            assert (failed["result"], failed["reason"]) == ("failed", "invalid")
            assert "'brightness': the device has no light" in failed["detail"]
            assert delivered["result"] == "delivered" and delivered["command"] == {"on": True}
            assert fake.components["switch:0"]["output"] is True
        finally:
            await w.close()


async def test_command_for_a_declared_device_never_seen_waits_for_it(
    start_gateway: Callable[..., Any],
) -> None:
    fake = shelly_plus_1pm()
    fake.port = lan_free_port()  # nothing answers there yet
    _, port = await start_gateway(
        {
            "ble": {"enabled": False},
            "lan": {"poll_interval": 0.2, "timeout": 1},
            "known": {"heater": {"kind": "shelly", "host": "127.0.0.1", "port": fake.port}},
        }
    )
    w = await Watcher.start(port)
    try:
        await w.until(lambda w: (listed(w, "heater") or {}).get("link") == "offline")
        w.client.c.publish("gw/heater/set", b'{"on": true}', qos=1)
        await asyncio.sleep(0.3)
        assert w.results("gw/heater/result") == []
        async with fake:
            await w.until(lambda w: bool(w.results("gw/heater/result")))
            assert w.results("gw/heater/result")[0]["result"] == "delivered"
            assert fake.components["switch:0"]["output"] is True
            await w.until(lambda w: (listed(w, "heater") or {}).get("link") == "online")
    finally:
        await w.close()


async def test_mdns_on_an_address_this_machine_lacks_is_logged_not_fatal(
    start_gateway: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never a local interface; nothing is sent.
    gw, port = await start_gateway(
        {"ble": {"enabled": False}, "lan": {"interfaces": ["192.0.2.1"]}}
    )
    assert gw.supervisor is not None and gw.supervisor.discovery is None
    assert any("mDNS discovery on 192.0.2.1 failed" in r.getMessage() for r in caplog.records)
    w = await Watcher.start(port)  # the broker serves
    await w.close()


async def test_a_device_bridge_that_fails_to_start_leaves_the_broker_running(
    start_gateway: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(self: Supervisor) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Supervisor, "start", broken)
    gw, port = await start_gateway({"ble": {"enabled": False}})
    assert gw.supervisor is None
    assert any("device bridge failed to start" in r.getMessage() for r in caplog.records)
    w = await Watcher.start(port)
    await asyncio.to_thread(w.client.subscribe, "t/#", 1)
    w.client.c.publish("t/x", b"still a broker", qos=1)
    try:
        await w.until(lambda w: w.last.get("t/x") == b"still a broker")
    finally:
        await w.close()


async def test_lan_device_that_leaves_mdns_goes_offline_and_comes_back(
    start_gateway: Callable[..., Any],
) -> None:
    fake = shelly_plus_1pm()
    async with fake, announcer() as ann:
        info = shelly_service(fake)
        await ann.register(info)
        _, port = await start_gateway(
            {"ble": {"enabled": False}, "lan": {"interfaces": ["127.0.0.1"], "timeout": 1}}
        )
        dev = fake.device_id
        w = await Watcher.start(port)
        try:
            await w.until(lambda w: (listed(w, dev) or {}).get("link") == "online")
            await ann.unregister(info)  # a polite goodbye
            await w.until(lambda w: w.last.get(f"gw/{dev}/availability") == b"offline")
            await w.until(lambda w: (listed(w, dev) or {}).get("link") == "offline")
            await ann.register(shelly_service(fake))
            await w.until(lambda w: (listed(w, dev) or {}).get("link") == "online")
            assert w.last[f"gw/{dev}/availability"] == b"online"
        finally:
            await w.close()


async def test_policy_rule_by_mdns_name_applies_to_a_discovered_device(
    start_gateway: Callable[..., Any],
) -> None:
    fake = shelly_plus_1pm()
    await fake.start()
    async with announcer() as ann:
        await ann.register(shelly_service(fake))
        gw, port = await start_gateway(
            {
                "ble": {"enabled": False},
                "lan": {"interfaces": ["127.0.0.1"], "poll_interval": 0.2, "timeout": 1},
                # Shelly devices are persistent by default; this rule makes this one clean.
                "policy_rules": [{"name": f"{fake.device_id[:8]}*", "session": "clean"}],
            }
        )
        dev = fake.device_id
        w = await Watcher.start(port)
        try:
            await w.until(lambda w: (listed(w, dev) or {}).get("link") == "online")
            assert (listed(w, dev) or {})["session"] == "clean"
        finally:
            await w.close()
            await stop(gw)
            await fake.stop()
