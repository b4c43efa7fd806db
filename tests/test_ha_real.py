"""Discovery as Home Assistant itself sees it: a real Home Assistant core (slow).

`edge-gateway run --demo` runs in a subprocess; every discovery payload it publishes is
checked against Home Assistant's own MQTT discovery schemas, and a real Home Assistant core
(its own process, the MQTT integration pointed at the gateway) creates the entities, sets a
setpoint on the sleeping demo thermostat through its climate entity, and is then read back
from its entity states and device registry (``.storage``, written when it stops).

Home Assistant 2024.1 is the last release for Python 3.11 and its pins clash with ours: it
lives in a venv of its own, outside the repository. Install it once with

    python3 -m venv ~/.cache/edge-gateway/ha-2024.1
    ~/.cache/edge-gateway/ha-2024.1/bin/pip install homeassistant==2024.1.6 paho-mqtt==1.6.1 \\
        aiohttp_cors==0.7.0 aiohttp-fast-url-dispatcher==0.3.0 aiohttp-zlib-ng==0.1.3 janus==1.0.0

or point ``EDGE_GATEWAY_HA_VENV`` at another venv with the same packages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import ProcessGateway, free_port, wait_for, write_config

pytestmark = pytest.mark.slow

HA_VENV = Path(
    os.environ.get("EDGE_GATEWAY_HA_VENV", Path.home() / ".cache/edge-gateway/ha-2024.1")
)
HA_PYTHON = HA_VENV / "bin" / "python"
INSTALL = (__doc__ or "").split("Install it once with", 1)[1].strip()


def ha_python() -> Path:
    if not HA_PYTHON.exists():
        pytest.fail(f"Home Assistant's venv is missing ({HA_VENV}). Install it once with\n\n"
                    + textwrap.indent(INSTALL, "    "), pytrace=False)  # fmt: skip
    return HA_PYTHON


@pytest.fixture
def demo(tmp_path: Path) -> Any:
    port = free_port()
    overrides = {
        "demo": True,
        "devices": {"ble": {"enabled": False}, "lan": {"poll_interval": 1, "timeout": 2}},
    }
    gateway = ProcessGateway(write_config(tmp_path, port, overrides), port).start()
    try:
        yield gateway
    finally:
        gateway.stop_if_running()


def retained(port: int, topic_filter: str, settle: float = 3.0) -> dict[str, bytes]:
    """The retained messages under `topic_filter` (and what arrives within `settle` s)."""
    got: dict[str, bytes] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha-test-reader")
    client.on_message = lambda c, u, m: got.__setitem__(m.topic, m.payload)
    client.connect("127.0.0.1", port)
    client.subscribe(topic_filter, qos=1)
    client.loop_start()
    time.sleep(settle)
    client.loop_stop()
    client.disconnect()
    return {topic: payload for topic, payload in got.items() if payload}


VALIDATE = """
import importlib, json, sys
import voluptuous as vol
import homeassistant.components.persistent_notification  # first: HA imports are circular
payloads = json.load(open(sys.argv[1]))
problems = {}
for topic, config in payloads.items():
    component = topic.split("/")[1]
    module = importlib.import_module("homeassistant.components.mqtt." + component)
    try:
        module.DISCOVERY_SCHEMA(config)
    except vol.Invalid as exc:
        problems[topic] = str(exc)
print(json.dumps(problems))
"""


def test_every_demo_payload_passes_home_assistants_own_schemas(
    demo: ProcessGateway, tmp_path: Path
) -> None:
    python = ha_python()
    assert wait_for(lambda: len(retained(demo.port, "homeassistant/#", 1.0)) >= 20, 30)
    payloads = {t: json.loads(p) for t, p in retained(demo.port, "homeassistant/#").items()}
    components = {topic.split("/")[1] for topic in payloads}
    assert {"climate", "switch", "sensor", "binary_sensor"} <= components
    path = tmp_path / "payloads.json"
    path.write_text(json.dumps(payloads))
    out = subprocess.run(
        [str(python), "-c", VALIDATE, str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {}


def ha_config(config_dir: Path, port: int) -> None:
    """A Home Assistant with the MQTT integration on the gateway, and an automation that sets
    the thermostat to 22.5 °C once its climate entity exists (as a user would)."""
    (config_dir / ".storage").mkdir(parents=True)
    entry = {
        "entry_id": "edgegatewaytest", "version": 1, "minor_version": 1, "domain": "mqtt",
        "title": "edge-gateway", "data": {"broker": "127.0.0.1", "port": port,
        "discovery": True}, "options": {}, "pref_disable_new_entities": False,
        "pref_disable_polling": False, "source": "user", "unique_id": None, "disabled_by": None,
    }  # fmt: skip
    storage = {"version": 1, "minor_version": 1, "key": "core.config_entries",
               "data": {"entries": [entry]}}  # fmt: skip
    (config_dir / ".storage" / "core.config_entries").write_text(json.dumps(storage))
    (config_dir / "configuration.yaml").write_text(
        textwrap.dedent(
            """
            homeassistant:
              name: test
              latitude: 0
              longitude: 0
              elevation: 0
              unit_system: metric
              time_zone: UTC
            logger:
              default: warning
            automation:
              - alias: setpoint
                trigger:
                  - platform: template
                    value_template: "{{ states('climate.demo_thermostat') in ['auto', 'heat'] }}"
                action:
                  - service: climate.set_temperature
                    target: {entity_id: climate.demo_thermostat}
                    data: {temperature: 22.5}
              # Climate entities keep no state across restarts: HA tells its attributes here.
              - alias: report
                trigger:
                  - platform: state
                    entity_id: climate.demo_thermostat
                action:
                  - service: mqtt.publish
                    data:
                      topic: test/ha/climate
                      retain: true
                      payload: >-
                        {{ {'state': states('climate.demo_thermostat'),
                            'attributes': states.climate.demo_thermostat.attributes} | tojson }}
            """
        )
    )


def storage(config_dir: Path, key: str) -> Any:
    return json.loads((config_dir / ".storage" / key).read_text())["data"]


def test_real_home_assistant_sees_native_looking_entities_and_sets_a_queued_setpoint(
    demo: ProcessGateway, tmp_path: Path
) -> None:
    python = ha_python()
    config_dir = tmp_path / "ha"
    ha_config(config_dir, demo.port)
    results: list[dict[str, Any]] = []
    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha-test-results")
    reports: list[dict[str, Any]] = []

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        seen = results if message.topic.startswith("gw/") else reports
        seen.append(json.loads(message.payload))

    watcher.on_message = on_message
    watcher.connect("127.0.0.1", demo.port)
    watcher.subscribe([("gw/demo-thermostat/result", 1), ("test/ha/climate", 1)])
    watcher.loop_start()
    log = (tmp_path / "ha.log").open("w")
    ha = subprocess.Popen(
        [str(python), "-m", "homeassistant", "--config", str(config_dir), "--skip-pip"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        # The demo thermostat wakes every 30 s: the setpoint waits for it, then is delivered.
        delivered = wait_for(
            lambda: any(
                r.get("result") == "delivered" and r.get("command") == {"target_temp": 22.5}
                for r in results
            ),
            timeout=150,
            interval=0.5,
        )
        assert delivered, (tmp_path / "ha.log").read_text()[-3000:]
        assert wait_for(
            lambda: bool(reports) and reports[-1]["attributes"].get("temperature") == 22.5, 15
        ), reports[-1:]
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        ha.send_signal(signal.SIGTERM)
        try:
            ha.wait(60)
        except subprocess.TimeoutExpired:
            ha.kill()
        log.close()
    states = {
        s["state"]["entity_id"]: s["state"] for s in storage(config_dir, "core.restore_state")
    }
    climate = reports[-1]["attributes"]
    assert (climate["min_temp"], climate["max_temp"], climate["target_temp_step"]) == (
        4.5, 30.0, 0.5
    )  # fmt: skip
    assert climate["preset_modes"] == ["none", "comfort", "eco", "boost"]
    assert climate["hvac_modes"] == ["auto", "heat"]
    assert climate["temperature"] == 22.5
    assert reports[-1]["state"] in ("auto", "heat")  # never HA's default "off"
    assert states["switch.demo_plug"]["state"] in ("on", "off")
    valve = states["sensor.demo_thermostat_valve"]["attributes"]
    assert (valve["unit_of_measurement"], valve["state_class"]) == ("%", "measurement")
    energy = states["sensor.demo_plug_energy"]["attributes"]
    assert (energy["device_class"], energy["state_class"]) == ("energy", "total_increasing")
    window = states["binary_sensor.demo_thermostat_window_open"]["attributes"]
    assert window["device_class"] == "window"
    assert "sensor.demo_thermostat_pending" in states
    entities = {e["entity_id"]: e for e in storage(config_dir, "core.entity_registry")["entities"]}
    assert entities["sensor.demo_thermostat_pending"]["entity_category"] == "diagnostic"
    devices = {d["name"]: d for d in storage(config_dir, "core.device_registry")["devices"]}
    thermostat, plug, gateway = (
        devices["Demo thermostat"], devices["Demo plug"], devices["edge-gateway"]
    )  # fmt: skip
    assert (thermostat["manufacturer"], thermostat["model"]) == ("eQ-3", "CC-RT-BLE-EQ")
    assert ["bluetooth", "de:4d:00:00:00:02"] in thermostat["connections"]
    assert plug["manufacturer"] == "Shelly" and plug["model"] and plug["sw_version"]
    assert gateway["sw_version"] and gateway["manufacturer"] == "edge-gateway"
    assert thermostat["via_device_id"] == gateway["id"] == plug["via_device_id"]
    assert sys.version_info >= (3, 11)
