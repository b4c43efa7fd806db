"""Home Assistant discovery that looks like a native integration's (issue 11, part 1).

The keys and values promised here are checked without Home Assistant installed; the same
payloads go through Home Assistant's own MQTT schemas and a real Home Assistant core in
tests/test_ha_real.py (slow).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from devices.ble.eq3 import COMMAND_SCHEMA as EQ3_SCHEMA
from devices.ble.eq3 import Eq3Profile
from devices.homeassistant import (
    DeviceFacts,
    Origin,
    bridge_messages,
    discovery_configs,
    removal_messages,
    slug,
)
from devices.lan.wled import COMMAND_SCHEMA as WLED_SCHEMA
from devices.lan.wled import state_from_wled, wled_body
from devices.model import Device

jinja2 = pytest.importorskip("jinja2")

THERMOSTAT = Device.of_kind(
    "demo-thermostat", "eq3", name="Demo thermostat", address="DE:4D:00:00:00:02",
    schema=EQ3_SCHEMA,
)  # fmt: skip
EQ3_STATE = {
    "target_temp": 21.0, "mode": "manual", "valve": 40, "boost": False, "window_open": False,
    "locked": False, "low_battery": False,
}  # fmt: skip


def render(template: str, **variables: Any) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return str(env.from_string(template).render(**variables))


def configs(device: Device, state: dict[str, Any], **kwargs: Any) -> dict[str, dict[str, Any]]:
    """Config per entity key (the config topic's object level)."""
    return {
        topic.split("/")[-2]: config for topic, config in discovery_configs(device, state, **kwargs)
    }


def test_eq3_climate_range_step_presets_and_modes_come_from_its_command_schema() -> None:
    climate = configs(THERMOSTAT, EQ3_STATE)["climate"]
    target = EQ3_SCHEMA.key("target_temp")
    assert target is not None
    assert (climate["min_temp"], climate["max_temp"], climate["temp_step"]) == (4.5, 30.0, 0.5)
    assert (climate["min_temp"], climate["max_temp"], climate["temp_step"]) == (
        target["minimum"], target["maximum"], target["multipleOf"]
    )  # fmt: skip
    assert climate["preset_modes"] == ["comfort", "eco", "boost"]
    assert climate["modes"] == ["auto", "heat"]
    # Every preset Home Assistant can send (its own "none" too) is a command the schema takes.
    for preset in ["none", *climate["preset_modes"]]:
        command = json.loads(render(climate["preset_mode_command_template"], value=preset))
        assert EQ3_SCHEMA.problem(command) is None, (preset, command)
        assert Eq3Profile().plan(command)
    for mode in climate["modes"]:
        command = json.loads(render(climate["mode_command_template"], value=mode))
        assert EQ3_SCHEMA.problem(command) is None
    setpoint = json.loads(render(climate["temperature_command_template"], value=22.5))
    assert setpoint == {"target_temp": 22.5}
    # The states it reports map onto Home Assistant's words.
    template = climate["mode_state_template"]
    assert render(template, value_json={"mode": "auto"}) == "auto"
    assert render(template, value_json={"mode": "manual"}) == "heat"
    assert render(template, value_json={"mode": "vacation"}) == "heat"
    preset = climate["preset_mode_value_template"]
    assert render(preset, value_json={"boost": True}) == "boost"
    assert render(preset, value_json={"boost": False}) == "none"
    action = climate["action_template"]
    assert render(action, value_json={"valve": 40}) == "heating"
    assert render(action, value_json={"valve": 0}) == "idle"


def test_a_sleeping_thermostat_has_its_climate_before_it_ever_reported() -> None:
    got = configs(THERMOSTAT, {})
    assert set(got) == {"climate", "pending"}
    assert got["climate"]["min_temp"] == 4.5 and got["climate"]["object_id"] == "demo_thermostat"


def test_a_thermostat_without_modes_says_heat() -> None:
    device = Device.of_kind("radiator", "thermostat")
    climate = configs(device, {"target_temp": 20.0})["climate"]
    assert climate["modes"] == ["heat"]
    assert climate["mode_state_topic"] == "gw/radiator/state"
    assert render(climate["mode_state_template"], value_json={"target_temp": 20.0}) == "heat"
    assert "preset_modes" not in climate  # nothing it could send


def test_every_numeric_sensor_has_a_state_class_and_known_ones_units_and_classes() -> None:
    got = configs(THERMOSTAT, {**EQ3_STATE, "rssi": -70, "energy_total": 3, "mystery": 1.5})
    sensors = {k: c for k, c in got.items() if k not in ("climate", "pending")}
    assert sensors["valve"]["unit_of_measurement"] == "%"
    assert sensors["valve"]["state_class"] == "measurement"
    target = sensors["target_temp"]
    assert (target["device_class"], target["unit_of_measurement"], target["state_class"]) == (
        "temperature", "°C", "measurement"
    )  # fmt: skip
    assert sensors["energy_total"]["state_class"] == "total_increasing"
    assert sensors["mystery"]["state_class"] == "measurement"
    assert got["window_open"]["device_class"] == "window"
    assert got["low_battery"]["device_class"] == "battery"
    for key in ("rssi", "low_battery", "pending"):
        assert got[key]["entity_category"] == "diagnostic", key
    # A string sensor never gets a state_class (Home Assistant would refuse its state).
    assert "state_class" not in sensors["mode"]


def test_pending_sensor_counts_the_brokers_pending_list_and_lists_it() -> None:
    pending = configs(THERMOSTAT, {})["pending"]
    assert pending["state_topic"] == pending["json_attributes_topic"] == (
        "gw/demo-thermostat/pending"
    )  # fmt: skip
    queued = [{"id": 3, "command": {"target_temp": 22.5}, "state": "queued"}]
    assert render(pending["value_template"], value_json=queued) == "1"
    assert render(pending["value_template"], value_json=[]) == "0"
    attributes = json.loads(render(pending["json_attributes_template"], value_json=queued))
    assert attributes == {"commands": queued}
    # Devices that take no commands, or whose commands do not wait, have none.
    assert "pending" not in configs(Device.of_kind("kitchen", "bthome"), {"temperature": 20})
    clean = Device.of_kind("t", "eq3", schema=EQ3_SCHEMA, overrides={"session": "clean"})
    assert "pending" not in configs(clean, {})


def test_device_registry_facts_connections_via_device_and_origin() -> None:
    origin = Origin(sw_version="9.9.9", support_url="https://example.org/edge-gateway")
    climate = configs(THERMOSTAT, {}, origin=origin)["climate"]
    assert climate["device"] == {
        "identifiers": ["edge-gateway_demo-thermostat"],
        "name": "Demo thermostat",
        "manufacturer": "eQ-3",
        "model": "CC-RT-BLE-EQ",
        "connections": [["bluetooth", "de:4d:00:00:00:02"]],
        "via_device": "edge-gateway",
    }
    assert climate["origin"] == {
        "name": "edge-gateway", "sw_version": "9.9.9",
        "support_url": "https://example.org/edge-gateway",
    }  # fmt: skip
    plug = Device.of_kind("plug", "shelly", address="127.0.0.1")
    facts = DeviceFacts("Shelly", "SNPL-00112EU", "1.4.4", "A8032AB12345")
    block = configs(plug, {"on": True}, facts=facts)["on"]["device"]
    assert (block["manufacturer"], block["model"], block["sw_version"]) == (
        "Shelly", "SNPL-00112EU", "1.4.4"
    )  # fmt: skip
    assert block["connections"] == [["mac", "a8:03:2a:b1:23:45"]]
    # Every kind has a manufacturer and a model, even before the device said anything.
    for kind in ("bthome", "eq3", "shelly", "wled", "thermostat", "gatt"):
        block = configs(Device.of_kind("d", kind), {"x": 1})["x"]["device"]
        assert block["manufacturer"] and block["model"], kind
    [(_, bridge)] = bridge_messages(origin=origin)
    gateway = json.loads(bridge)
    assert gateway["device"] == {
        "identifiers": ["edge-gateway"], "name": "edge-gateway", "manufacturer": "edge-gateway",
        "model": "MQTT broker and BLE/LAN bridge", "sw_version": "9.9.9",
    }  # fmt: skip
    assert gateway["origin"]["sw_version"] == "9.9.9"
    assert gateway["default_entity_id"] == "binary_sensor.edge_gateway_bridge_state"


def test_main_entities_take_the_devices_id_and_ids_are_stable() -> None:
    first = configs(THERMOSTAT, EQ3_STATE)
    assert first["climate"]["default_entity_id"] == "climate.demo_thermostat"
    assert first["valve"]["default_entity_id"] == "sensor.demo_thermostat_valve"
    plug = configs(Device.of_kind("demo-plug", "shelly"), {"on": True, "power": 1.0})
    assert plug["on"]["object_id"] == "demo_plug"
    assert plug["on"]["default_entity_id"] == "switch.demo_plug"
    # Rediscovery (a restart, a new state) builds the same ids.
    again = configs(THERMOSTAT, {**EQ3_STATE, "valve": 0})
    for key, config in first.items():
        assert (again[key]["unique_id"], again[key]["default_entity_id"]) == (
            config["unique_id"], config["default_entity_id"]
        )  # fmt: skip


def test_slug_makes_valid_entity_ids() -> None:
    assert slug("demo-thermostat") == "demo_thermostat"
    assert slug("Küche--Sensor_") == "k_che_sensor"
    assert slug("__") == "unnamed"


WLED_STATE = {
    "on": True, "bri": 128, "ps": -1, "mainseg": 0,
    "seg": [{"id": 0, "on": True, "bri": 255, "col": [[255, 160, 0]], "fx": 2}],
}  # fmt: skip
WLED_FACTS = DeviceFacts(
    "WLED", "FOSS", "0.14.4", "aabbccddeeff",
    effects=("Solid", "Blink", "Breathe"), presets=((1, "Evening"), (3, "Party")),
)  # fmt: skip


def test_wled_effects_and_presets_by_name() -> None:
    strip = Device.of_kind("strip", "wled", schema=WLED_SCHEMA)
    state = state_from_wled(WLED_STATE)
    got = configs(strip, state, facts=WLED_FACTS)
    light = got["light"]
    assert light["effect_list"] == ["Solid", "Blink", "Breathe"]
    assert render(light["effect_template"], value_json=state) == "Breathe"
    command = json.loads(render(light["command_on_template"], effect="Blink"))
    assert command == {"on": True, "effect": 1}
    assert wled_body(command, "t") == {"on": True, "seg": [{"id": 0, "fx": 1}]}
    # The preset sensor says "none" (never Python's None) or the preset's name.
    preset = got["preset"]["value_template"]
    assert state["preset"] is None
    assert render(preset, value_json=state) == "none"
    assert render(preset, value_json={**state, "preset": 3}) == "Party"
    assert render(preset, value_json={**state, "preset": 7}) == "7"
    select = got["preset_select"]
    assert select["options"] == ["Evening", "Party"]
    command = json.loads(render(select["command_template"], value="Party"))
    assert command == {"preset": 3} and WLED_SCHEMA.problem(command) is None
    assert render(select["value_template"], value_json={**state, "preset": 1}) == "Evening"
    # Names learnt later: the select appears; names gone: it is removed.
    assert "preset_select" not in configs(strip, state)
    removed = removal_messages(strip, state, state, previous_facts=WLED_FACTS)
    assert [t for t, _ in removed] == [
        "homeassistant/select/edge-gateway_strip/preset_select/config"
    ]
