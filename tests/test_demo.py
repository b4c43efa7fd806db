"""Demo mode: simulated devices driven through the real device sessions.

The gateway (app.Gateway) runs in the test's event loop with demo mode on and short timings;
a paho client (network thread, blocking calls in a worker thread) watches gw/# and the Home
Assistant discovery topics. A CLI test runs ``python -m gateway run --demo`` as users do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import REPO, free_port, wait_for, write_config
from paho_helpers import Client
from watcher import Watcher

from devices.ble.eq3 import OP_STATUS_REQUEST, OP_TARGET, WRITE_CHAR
from devices.ble.radio import LinkError
from devices.demo import DEMO_IDS, DemoTimings
from devices.demo.ble import DemoLink, DemoThermostat
from devices.demo.demo import start_demo
from devices.lan.shelly import ShellyGen2, ShellyRpcError
from gateway.app import Gateway
from gateway.cli import main
from gateway.config import ConfigError, parse_config, with_demo

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning")]

FAST = DemoTimings(
    sensor_interval=0.1, thermostat_period=3.0, thermostat_awake=0.4, advert_interval=0.1
)


@pytest.fixture
async def demo_gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, int]]:
    port = free_port()
    config = {
        "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": port}],
        "persistence": {"path": str(tmp_path / "gw.db")},
        "sys_interval": 0,
        # BLE off in the file: demo mode simulates it anyway and never touches an adapter.
        "devices": {"ble": {"enabled": False}, "lan": {"poll_interval": 0.2, "timeout": 1}},
        "demo": True,
    }
    gw = Gateway(parse_config(json.dumps(config), "demo.yaml"), demo_timings=FAST)
    await gw.start()
    try:
        yield gw, port
    finally:
        await gw.stop()


def commands(writes: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The writes that carried commands: the gateway also asks for the status (03 ...) when
    it has none yet, and that write is not a command."""
    return [(wake, data) for wake, data in writes if data[0] != OP_STATUS_REQUEST]


async def test_demo_devices_report_take_commands_and_queue_while_asleep(
    demo_gateway: tuple[Gateway, int],
) -> None:
    gw, port = demo_gateway
    demo = gw.demo
    assert demo is not None and gw.supervisor is not None
    assert gw.supervisor.radio is demo.radio  # no bleak radio was built
    w = await Watcher.start(port, "gw/#", "homeassistant/#", client_id="demo-watcher")
    try:
        # The sensor: BTHome readings through the parser, a new packet id each time.
        sensor = "gw/demo-sensor/state"
        await w.until(lambda w: sensor in w.last)
        reading = w.json(sensor)
        assert 18.0 < reading["temperature"] < 24.0
        assert 0 < reading["humidity"] < 100 and reading["battery"] == 97
        first = reading["ts"]
        await w.until(lambda w: w.json(sensor)["ts"] != first)

        # The plug: a command is carried out on it and reported.
        plug_state = "gw/demo-plug/state"
        await w.until(lambda w: w.last.get(plug_state) is not None)
        assert w.json(plug_state)["on"] is False
        # One the plug's schema refuses never reaches it: "rejected" at once.
        await asyncio.to_thread(w.client.publish, "gw/demo-plug/set", b'{"on": "yes"}', 1)
        await w.until(lambda w: bool(w.results("gw/demo-plug/result")))
        rejected = w.results("gw/demo-plug/result")[0]
        assert (rejected["result"], rejected["reason"]) == ("rejected", "invalid")
        assert "Switch.Set" not in demo.plug.calls
        await asyncio.to_thread(w.client.publish, "gw/demo-plug/set", b'{"on": true}', 1)
        await w.until(lambda w: len(w.results("gw/demo-plug/result")) == 2)
        assert w.results("gw/demo-plug/result")[1]["result"] == "delivered"
        assert demo.plug.output is True
        await w.until(lambda w: w.json(plug_state)["on"] is True)
        assert w.json(plug_state)["power"] > 0

        # The thermostat: a command sent while it sleeps waits in its pending list...
        thermostat = demo.thermostat
        if thermostat.awake:
            await asyncio.wait_for(thermostat.wait_asleep(), 5)
        wake = thermostat.wakes
        await asyncio.to_thread(
            w.client.publish, "gw/demo-thermostat/set", b'{"target_temp": 22.5}', 1
        )
        pending = "gw/demo-thermostat/pending"
        await w.until(lambda w: len(json.loads(w.last.get(pending) or b"[]")) == 1, 1.5)
        assert w.json(pending)[0]["command"] == {"target_temp": 22.5}
        assert not thermostat.awake and thermostat.wakes == wake, "the test needs it asleep"
        assert w.results("gw/demo-thermostat/result") == [] and commands(thermostat.writes) == []

        # ...and is carried out at its next wake-up, then reported and shown in its state.
        await w.until(lambda w: bool(w.results("gw/demo-thermostat/result")), 5)
        assert w.results("gw/demo-thermostat/result")[0]["result"] == "delivered"
        assert commands(thermostat.writes) == [(wake + 1, bytes((OP_TARGET, 45)))]
        await w.until(lambda w: w.last.get(pending) == b"[]")
        state = "gw/demo-thermostat/state"
        await w.until(lambda w: state in w.last and w.json(state)["target_temp"] == 22.5)

        # Home Assistant discovery for all three devices.
        await w.until(lambda w: all(w.discovery(d) for d in DEMO_IDS))
        keys = {c["state_topic"].rsplit("/", 1)[-1] for c in w.discovery("demo-sensor")}
        assert keys == {"state"}
        assert any(c.get("device_class") == "temperature" for c in w.discovery("demo-sensor"))
        assert any("command_topic" in c for c in w.discovery("demo-plug"))
        # The thermostat's setpoint range and step are its command schema's.
        (climate,) = [c for c in w.discovery("demo-thermostat") if "temp_step" in c]
        assert (climate["min_temp"], climate["max_temp"], climate["temp_step"]) == (4.5, 30, 0.5)
    finally:
        await asyncio.to_thread(w.client.disconnect)


async def test_stop_ends_the_demo(tmp_path: Path) -> None:
    config = parse_config(
        json.dumps(
            {
                "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": free_port()}],
                "persistence": {"enabled": False},
                "demo": True,
            }
        )
    )
    gw = Gateway(config, demo_timings=FAST)
    await gw.start()
    demo = gw.demo
    assert demo is not None
    plug_port = demo.plug.port
    await gw.stop()
    assert gw.demo is None and not demo.radio.scanning
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", plug_port), timeout=1).close()


def test_demo_ids_must_not_clash(tmp_path: Path) -> None:
    clash = {"devices": {"known": {"demo-plug": {"kind": "shelly", "host": "10.0.0.9"}}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps({**clash, "demo": True}), "c.yaml")
    assert caught.value.key_path == "devices.known.demo-plug"
    assert "demo" in caught.value.detail
    config = parse_config(json.dumps(clash), "c.yaml")  # fine without the demo
    with pytest.raises(ConfigError):
        with_demo(config)
    with pytest.raises(ConfigError):  # a config built in code is checked too
        Gateway(dataclasses.replace(config, demo=True))


def test_cli_demo_clash_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("devices: {known: {demo-sensor: {kind: bthome, address: 'A4:C1:38:00:00:09'}}}")
    assert main(["run", "--demo", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "devices.known.demo-sensor" in err and "--demo" in err


async def test_sleeping_thermostat_cannot_be_reached() -> None:
    thermostat = DemoThermostat("DE:4D:00:00:00:02", period=0.6, awake_for=0.2, latency=0)
    link = DemoLink(thermostat)
    with pytest.raises(LinkError) as caught:
        async with link.connect(thermostat.address):
            pass
    assert caught.value.kind == "not_found"
    thermostat.start()
    try:
        await asyncio.wait_for(thermostat.wait_awake(), 1)
        async with link.connect(thermostat.address) as gatt:
            notes = await gatt.subscribe("d0e8434d-cd29-0996-af41-6c90f4e0eb2a")
            await asyncio.sleep(0.3)  # past its awake time: the connection keeps it awake
            assert thermostat.awake
            await gatt.write(WRITE_CHAR, bytes((OP_TARGET, 44)))
            assert (await asyncio.wait_for(notes.get(), 1))[5] == 44
            with pytest.raises(LinkError) as refused:
                await gatt.write(WRITE_CHAR, b"\x99")
            assert refused.value.kind == "gatt"
        await asyncio.wait_for(thermostat.wait_asleep(), 1)
        with pytest.raises(LinkError):
            async with link.connect(thermostat.address):
                pass
    finally:
        await thermostat.stop()


async def test_plug_speaks_what_the_shelly_driver_needs() -> None:
    demo = await start_demo(FAST, seed=1)
    try:
        async with ShellyGen2("127.0.0.1", demo.plug.port, timeout=2) as driver:
            info = await driver.get_info()
            assert info.manufacturer == "Shelly" and info.id
            assert (await driver.get_state())["on"] is False
            await driver.execute({"toggle": True})
            assert (await driver.get_state())["on"] is True
            await driver.execute({"on": False})
            assert demo.plug.output is False
            with pytest.raises(ShellyRpcError) as caught:
                await driver.call("Switch.Set", {"id": 1, "on": True})
            assert caught.value.code == -105
        devices = {d.id: d for d in demo.devices}
        assert set(devices) == set(DEMO_IDS)
        assert devices["demo-plug"].port == demo.plug.port
    finally:
        await demo.stop()


def test_cli_run_demo_starts_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(tmp_path, port, {"devices": {"ble": {"enabled": False}}})
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--demo", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            cwd=tmp_path,
        )
    client: Client | None = None
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"gateway exited: {log_path.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        assert wait_for(up, 20, 0.05), log_path.read_text()[-3000:]
        client = Client(port, "cli-demo")
        client.subscribe("gw/demo-sensor/state", 1)
        # Retained, and the sensor sends its first reading at once.
        message = client.get(timeout=10)
        assert message.topic == "gw/demo-sensor/state"
        assert "temperature" in json.loads(message.payload)
        client.disconnect()
        client = None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        text = log_path.read_text()
        assert "DEMO MODE" in text and "mosquitto_sub" in text and "demo-thermostat" in text
        assert "Traceback" not in text
    finally:
        if client is not None:
            client.disconnect()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_listing_says_the_observed_wake_interval_and_where_policy_keys_come_from(
    demo_gateway: tuple[Gateway, int],
) -> None:
    gw, _ = demo_gateway
    supervisor = gw.supervisor
    assert supervisor is not None

    def thermostat() -> dict[str, object]:
        return next(d for d in supervisor.device_listing() if d["id"] == "demo-thermostat")

    # It wakes every 3 s (FAST) although its kind expects 600 s: the listing says both.
    for _ in range(100):
        if thermostat()["wake_observed"] is not None:
            break
        await asyncio.sleep(0.1)
    entry = thermostat()
    observed = entry["wake_observed"]
    assert isinstance(observed, float) and 2.5 <= observed <= 4.5, entry
    assert entry["wake_interval"] == 600
    sources = entry["policy_from"]
    assert isinstance(sources, dict) and set(sources.values()) == {"default"}
    await supervisor.set_policy("demo-thermostat", {"queue_depth": 3})
    sources = thermostat()["policy_from"]
    assert isinstance(sources, dict)
    assert sources["queue_depth"] == "admin" and sources["command_ttl"] == "default"
