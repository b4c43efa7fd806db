"""Home Assistant MQTT discovery payloads (devices/homeassistant/).

Facts checked here come from the Home Assistant MQTT documentation (integrations/mqtt and the
sensor/binary_sensor/switch/light/cover/event.mqtt pages): the config topic layout and the
`[a-zA-Z0-9_-]` rule for node and object ids, the empty retained payload that removes an
entity, `availability` as a list with `availability_mode: all`, event payloads carrying an
`event_type` from `event_types` (a template rendering `{}` is ignored), template lights giving
`on`/`off` and 0-255 brightness, and covers reading `open`/`closed`/... and a 0-100 position.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from devices.ble import eq3
from devices.homeassistant import (
    DeviceFacts,
    bridge_messages,
    discovery_messages,
    event_message,
    removal_messages,
    status_topic,
    topic_level,
)
from devices.lan.shelly import plan, state_from_status
from devices.lan.wled import state_from_wled, wled_body
from devices.model import Device
from gateway.commands.schema import CommandSchema

TOPIC = re.compile(r"homeassistant/([a-z_]+)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/config")
COMPONENTS = {"sensor", "binary_sensor", "switch", "light", "cover", "event", "climate"}
TEMPLATE_KEYS = (
    "value_template",
    "state_template",
    "brightness_template",
    "red_template",
    "green_template",
    "blue_template",
    "position_template",
    "temperature_state_template",
    "current_temperature_template",
)
REF = re.compile(r"value_json((?:\.[A-Za-z_]\w*|\[\"[^\"]*\"\]|\[\d+\])+)")

BTHOME_STATE: dict[str, Any] = {
    "temperature": 21.45,
    "humidity": 48.2,
    "battery": 87,
    "button": "press",
    "rssi": -67,
    "ts": 1700000000.0,
}
# A Shelly Plus 1PM's Shelly.GetStatus, as the driver flattens it.
SHELLY_SWITCH_STATUS = {
    "switch:0": {
        "id": 0,
        "output": True,
        "apower": 12.5,
        "voltage": 231.0,
        "current": 0.071,
        "aenergy": {"total": 1234.5},
        "temperature": {"tC": 41.2, "tF": 106.2},
    },
    "wifi": {"rssi": -58},
}
SHELLY_COVER_STATUS = {
    "cover:0": {"id": 0, "state": "stopped", "current_pos": 40, "apower": 0.0},
}
WLED_STATE = {
    "on": True,
    "bri": 128,
    "ps": -1,
    "mainseg": 0,
    "seg": [{"id": 0, "on": True, "bri": 255, "col": [[255, 160, 0], [0, 0, 0]], "fx": 0}],
}


def common(device_id: str, device: dict[str, Any], topic: str = "state") -> dict[str, Any]:
    return {
        "state_topic": f"gw/{device_id}/{topic}",
        "availability": [
            {"topic": f"gw/{device_id}/availability"},
            {"topic": "gw/bridge/state"},
        ],
        "availability_mode": "all",
        "qos": 1,
        "device": device,
        "origin": {"name": "edge-gateway"},
    }


def entity_id(component: str, device_id: str, key: str, main: bool) -> dict[str, str]:
    object_id = (device_id if main else f"{device_id}_{key}").replace("-", "_")
    return {"object_id": object_id, "default_entity_id": f"{component}.{object_id}"}


def decoded(messages: list[tuple[str, bytes]]) -> list[tuple[str, dict[str, Any]]]:
    return [(topic, json.loads(payload)) for topic, payload in messages]


def entity(
    device_id: str,
    key: str,
    device: dict[str, Any],
    topic: str = "state",
    *,
    component: str = "sensor",
    main: bool = False,
    **config: Any,
) -> dict[str, Any]:
    base = common(device_id, device, topic)
    return {
        "unique_id": f"edge-gateway_{device_id}_{key}",
        **entity_id(component, device_id, key, main),
        "state_topic": base.pop("state_topic"),
        **config,
        **base,
    }


# --- exact payloads -----------------------------------------------------------------------------


def test_bthome_sensor_exact_payloads() -> None:
    dev = Device.of_kind("kitchen", "bthome", name="Kitchen climate")
    block = {
        "identifiers": ["edge-gateway_kitchen"],
        "name": "Kitchen climate",
        "manufacturer": "BTHome",
        "model": "BTHome v2 sensor",
        "via_device": "edge-gateway",
    }
    got = decoded(discovery_messages(dev, BTHOME_STATE))
    assert got == [
        (
            "homeassistant/sensor/edge-gateway_kitchen/temperature/config",
            entity(
                "kitchen",
                "temperature",
                block,
                name="Temperature",
                device_class="temperature",
                unit_of_measurement="°C",
                state_class="measurement",
                value_template="{{ value_json.temperature }}",
            ),
        ),
        (
            "homeassistant/sensor/edge-gateway_kitchen/humidity/config",
            entity(
                "kitchen",
                "humidity",
                block,
                name="Humidity",
                device_class="humidity",
                unit_of_measurement="%",
                state_class="measurement",
                value_template="{{ value_json.humidity }}",
            ),
        ),
        (
            "homeassistant/sensor/edge-gateway_kitchen/battery/config",
            entity(
                "kitchen",
                "battery",
                block,
                name="Battery",
                device_class="battery",
                unit_of_measurement="%",
                state_class="measurement",
                value_template="{{ value_json.battery }}",
                entity_category="diagnostic",
            ),
        ),
        (
            "homeassistant/event/edge-gateway_kitchen/button/config",
            entity(
                "kitchen",
                "button",
                block,
                "event",
                component="event",
                name="Button",
                event_types=[
                    "press",
                    "double_press",
                    "triple_press",
                    "long_press",
                    "long_double_press",
                    "long_triple_press",
                    "hold_press",
                ],
                value_template=(
                    "{% if value_json.button is defined %}"
                    '{"event_type": "{{ value_json.button }}"}{% else %}{}{% endif %}'
                ),
                device_class="button",
            ),
        ),
        (
            "homeassistant/sensor/edge-gateway_kitchen/rssi/config",
            entity(
                "kitchen",
                "rssi",
                block,
                name="Signal strength",
                device_class="signal_strength",
                unit_of_measurement="dBm",
                state_class="measurement",
                entity_category="diagnostic",
                value_template="{{ value_json.rssi }}",
            ),
        ),
    ]


def test_shelly_switch_with_power_metering_exact_payloads() -> None:
    dev = Device.of_kind("plug", "shelly", name="Desk plug")
    state = state_from_status(SHELLY_SWITCH_STATUS)
    block = {
        "identifiers": ["edge-gateway_plug"],
        "name": "Desk plug",
        "manufacturer": "Shelly",
        "model": "Plus 1PM",
        "sw_version": "1.4.4",
        "via_device": "edge-gateway",
    }
    facts = DeviceFacts(manufacturer="Shelly", model="Plus 1PM", sw_version="1.4.4")
    got = decoded(discovery_messages(dev, state, facts=facts))
    meters = [
        ("power", "Power", "power", "W", "measurement", {}),
        ("voltage", "Voltage", "voltage", "V", "measurement", {}),
        ("current", "Current", "current", "A", "measurement", {}),
        # Shelly's aenergy.total is in watt-hours.
        ("energy", "Energy", "energy", "Wh", "total_increasing", {}),
        (
            "temperature",
            "Device temperature",
            "temperature",
            "°C",
            "measurement",
            {"entity_category": "diagnostic"},
        ),
    ]
    assert got == [
        (
            "homeassistant/switch/edge-gateway_plug/on/config",
            entity(
                "plug",
                "on",
                block,
                component="switch",
                main=True,
                name=None,
                command_topic="gw/plug/set",
                payload_on='{"on": true}',
                payload_off='{"on": false}',
                state_on="ON",
                state_off="OFF",
                value_template="{{ 'ON' if value_json.on else 'OFF' }}",
            ),
        ),
        *[
            (
                f"homeassistant/sensor/edge-gateway_plug/{key}/config",
                entity(
                    "plug",
                    key,
                    block,
                    name=name,
                    device_class=cls,
                    unit_of_measurement=unit,
                    state_class=state_class,
                    **extra,
                    value_template=f"{{{{ value_json.{key} }}}}",
                ),
            )
            for key, name, cls, unit, state_class, extra in meters
        ],
        (
            "homeassistant/sensor/edge-gateway_plug/rssi/config",
            entity(
                "plug",
                "rssi",
                block,
                name="Signal strength",
                device_class="signal_strength",
                unit_of_measurement="dBm",
                state_class="measurement",
                entity_category="diagnostic",
                value_template="{{ value_json.rssi }}",
            ),
        ),
    ]
    # The switch's payloads are commands the Shelly driver accepts.
    comps = {"switch": [0]}
    switch = got[0][1]
    assert plan(json.loads(switch["payload_on"]), comps, "t") == [
        ("Switch.Set", {"id": 0, "on": True})
    ]
    assert plan(json.loads(switch["payload_off"]), comps, "t") == [
        ("Switch.Set", {"id": 0, "on": False})
    ]


def test_shelly_cover_exact_payloads() -> None:
    dev = Device.of_kind("blinds", "shelly", name="Blinds")
    state = state_from_status(SHELLY_COVER_STATUS)
    assert state == {"cover": "stopped", "position": 40, "power": 0.0}
    block = {
        "identifiers": ["edge-gateway_blinds"],
        "name": "Blinds",
        "manufacturer": "Shelly",
        "model": "Shelly Gen2+ device",
        "via_device": "edge-gateway",
    }
    got = decoded(discovery_messages(dev, state))
    assert got == [
        (
            "homeassistant/cover/edge-gateway_blinds/cover/config",
            entity(
                "blinds",
                "cover",
                block,
                component="cover",
                main=True,
                name=None,
                command_topic="gw/blinds/set",
                payload_open='{"cover": "open"}',
                payload_close='{"cover": "close"}',
                payload_stop='{"cover": "stop"}',
                value_template="{{ value_json.cover }}",
                position_topic="gw/blinds/state",
                position_template="{{ value_json.position }}",
                set_position_topic="gw/blinds/set",
                set_position_template='{"position": {{ position }}}',
            ),
        ),
        (
            "homeassistant/sensor/edge-gateway_blinds/power/config",
            entity(
                "blinds",
                "power",
                block,
                name="Power",
                device_class="power",
                unit_of_measurement="W",
                state_class="measurement",
                value_template="{{ value_json.power }}",
            ),
        ),
    ]
    cover = got[0][1]
    comps = {"cover": [0]}
    for key, method in (
        ("payload_open", "Cover.Open"),
        ("payload_close", "Cover.Close"),
        ("payload_stop", "Cover.Stop"),
    ):
        assert plan(json.loads(cover[key]), comps, "t") == [(method, {"id": 0})]


def test_uncalibrated_shelly_cover_offers_no_position() -> None:
    dev = Device.of_kind("blinds", "shelly")
    state = state_from_status({"cover:0": {"id": 0, "state": "open", "current_pos": None}})
    [(_, cover)] = decoded(discovery_messages(dev, state))
    assert "position_template" not in cover and "set_position_topic" not in cover


def test_wled_light_exact_payloads() -> None:
    dev = Device.of_kind("strip", "wled", name="Shelf strip")
    state = state_from_wled(WLED_STATE)
    block = {
        "identifiers": ["edge-gateway_strip"],
        "name": "Shelf strip",
        "manufacturer": "WLED",
        "model": "FOSS",
        "via_device": "edge-gateway",
    }
    got = decoded(discovery_messages(dev, state, facts=DeviceFacts(model="FOSS")))
    on_template = (
        '{"on": true'
        '{% if brightness is defined %}, "brightness": {{ brightness }}{% endif %}'
        "{% if red is defined and green is defined and blue is defined %}"
        ', "color": [{{ red }}, {{ green }}, {{ blue }}]{% endif %}'
        '{% if transition is defined %}, "transition": {{ (transition * 10) | round | int }}'
        "{% endif %}}"
    )
    off_template = (
        '{"on": false'
        '{% if transition is defined %}, "transition": {{ (transition * 10) | round | int }}'
        "{% endif %}}"
    )
    assert got == [
        (
            "homeassistant/light/edge-gateway_strip/light/config",
            entity(
                "strip",
                "light",
                block,
                component="light",
                main=True,
                name=None,
                schema="template",
                command_topic="gw/strip/set",
                command_on_template=on_template,
                command_off_template=off_template,
                state_template="{{ 'on' if value_json.on else 'off' }}",
                brightness_template="{{ value_json.brightness }}",
                red_template="{{ value_json.color[0] }}",
                green_template="{{ value_json.color[1] }}",
                blue_template="{{ value_json.color[2] }}",
            ),
        ),
        # `preset` is null while no preset is active, but the entity stays put and says
        # "none"; `segments` (a list) is no entity.
        (
            "homeassistant/sensor/edge-gateway_strip/preset/config",
            entity(
                "strip",
                "preset",
                block,
                name="Preset",
                icon="mdi:palette",
                value_template=(
                    "{% set p = value_json.preset %}{{ 'none' if p is none else "
                    "{}.get(p | string, p | string) }}"
                ),
            ),
        ),
    ]
    assert state["preset"] is None


def test_home_assistant_birth_topic() -> None:
    assert status_topic() == "homeassistant/status"
    assert status_topic("ha") == "ha/status"


# --- properties of every payload ----------------------------------------------------------------


def all_cases() -> list[tuple[Device, dict[str, Any]]]:
    return [
        (Device.of_kind("kitchen", "bthome"), BTHOME_STATE),
        (
            Device.of_kind("multi", "bthome"),
            {
                "temperature": 20.1,
                "temperature_2": 19.0,
                "motion": True,
                "battery_low": False,
                "dimmer": "rotate_left",
                "light_level": "dark",
                "firmware_version": "1.2.3",
                "packet_id": 7,
                "mystery": 3,
                "rssi": -80,
            },
        ),
        (Device.of_kind("plug", "shelly"), state_from_status(SHELLY_SWITCH_STATUS)),
        (Device.of_kind("blinds", "shelly"), state_from_status(SHELLY_COVER_STATUS)),
        (
            Device.of_kind("pro2", "shelly"),
            state_from_status(
                {
                    "switch:0": {"output": False, "apower": 0},
                    "switch:1": {"output": True, "apower": 5},
                    "wifi": {"rssi": -40},
                }
            ),
        ),
        (
            Device.of_kind("dimmer", "shelly"),
            state_from_status({"light:0": {"output": True, "brightness": 50}}),
        ),
        (Device.of_kind("strip", "wled"), state_from_wled(WLED_STATE)),
        (
            Device.of_kind("radiator", "thermostat"),
            {"target_temp": 21.5, "temperature": 19.8, "valve": 40, "rssi": -70},
        ),
    ]


@pytest.mark.parametrize(("device", "state"), all_cases(), ids=lambda v: getattr(v, "id", ""))
def test_topics_ids_json_and_template_keys(device: Device, state: dict[str, Any]) -> None:
    messages = discovery_messages(device, state)
    assert messages
    seen_unique: set[str] = set()
    seen_topics: set[str] = set()
    for topic, payload in messages:
        m = TOPIC.fullmatch(topic)
        assert m, topic
        assert m.group(1) in COMPONENTS
        assert m.group(2) == f"edge-gateway_{device.id}"
        config = json.loads(payload.decode("utf-8"))
        assert isinstance(config, dict)
        main = config.get("name", "") is None
        object_id = device.id if main else f"{device.id}_{m.group(3)}"
        assert config["object_id"] == object_id.replace("-", "_")
        assert config["default_entity_id"] == f"{m.group(1)}.{config['object_id']}"
        assert config["unique_id"].startswith(f"edge-gateway_{device.id}_")
        assert config["unique_id"] not in seen_unique
        assert topic not in seen_topics
        seen_unique.add(config["unique_id"])
        seen_topics.add(topic)
        assert config["availability_mode"] == "all"
        assert [a["topic"] for a in config["availability"]] == [
            f"gw/{device.id}/availability",
            "gw/bridge/state",
        ]
        assert config["device"]["identifiers"] == [f"edge-gateway_{device.id}"]
        assert config["device"]["via_device"] == "edge-gateway"
        assert config["origin"]["name"] == "edge-gateway"
        if m.group(1) == "event":
            assert config["state_topic"] == f"gw/{device.id}/event"
        else:
            assert config["state_topic"] == f"gw/{device.id}/state"
        if "command_topic" in config:
            assert config["command_topic"] == f"gw/{device.id}/set"
        for key in TEMPLATE_KEYS:
            for ref in REF.finditer(config.get(key, "")):
                assert lookup(state, ref.group(1)) is not MISSING, (topic, key, ref.group(0))


MISSING = object()


def lookup(state: Any, path: str) -> Any:
    for part in re.findall(r"\.([A-Za-z_]\w*)|\[\"([^\"]*)\"\]|\[(\d+)\]", path):
        name = part[0] or part[1]
        if name:
            if not isinstance(state, dict) or name not in state:
                return MISSING
            state = state[name]
        else:
            index = int(part[2])
            if not isinstance(state, list) or index >= len(state):
                return MISSING
            state = state[index]
    return state


def test_bthome_kinds_device_info_and_skipped_keys() -> None:
    dev, state = all_cases()[1]
    got = dict(decoded(discovery_messages(dev, state)))
    by_key = {c["unique_id"].rsplit("multi_", 1)[1]: (t, c) for t, c in got.items()}
    assert set(by_key) == {
        "temperature",
        "temperature_2",
        "motion",
        "battery_low",
        "dimmer",
        "light_level",
        "mystery",
        "rssi",
    }
    assert by_key["temperature_2"][1]["name"] == "Temperature 2"
    assert by_key["temperature_2"][1]["unit_of_measurement"] == "°C"
    motion_topic, motion = by_key["motion"]
    assert motion_topic.startswith("homeassistant/binary_sensor/")
    assert motion["device_class"] == "motion"
    assert (motion["payload_on"], motion["payload_off"]) == ("ON", "OFF")
    assert by_key["battery_low"][1]["entity_category"] == "diagnostic"
    assert by_key["dimmer"][1]["event_types"] == ["rotate_left", "rotate_right"]
    assert "device_class" not in by_key["dimmer"][1]
    assert by_key["light_level"][1]["device_class"] == "enum"
    assert by_key["light_level"][1]["options"] == ["dark", "twilight", "bright"]
    assert "state_class" not in by_key["light_level"][1]
    assert by_key["mystery"][1]["name"] == "Mystery"
    # The firmware version describes the device, not an entity.
    assert all(c["device"]["sw_version"] == "1.2.3" for c in got.values())


def test_multi_component_shelly_addresses_each_component() -> None:
    dev, state = all_cases()[4]
    got = dict(decoded(discovery_messages(dev, state)))
    sw1 = got["homeassistant/switch/edge-gateway_pro2/switch_1_on/config"]
    assert sw1["name"] == "Switch 1"
    assert sw1["value_template"] == "{{ 'ON' if value_json[\"switch:1\"].on else 'OFF' }}"
    comps = {"switch": [0, 1]}
    assert plan(json.loads(sw1["payload_on"]), comps, "t") == [
        ("Switch.Set", {"id": 1, "on": True})
    ]
    power1 = got["homeassistant/sensor/edge-gateway_pro2/switch_1_power/config"]
    assert power1["name"] == "Switch 1 power"
    assert power1["value_template"] == '{{ value_json["switch:1"].power }}'


# --- templates, rendered ------------------------------------------------------------------------


def render(template: str, **variables: Any) -> str:
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    return str(env.from_string(template).render(**variables))


def test_templates_render_against_real_state() -> None:
    plug = dict(decoded(discovery_messages(*all_cases()[2])))
    switch = plug["homeassistant/switch/edge-gateway_plug/on/config"]
    state = state_from_status(SHELLY_SWITCH_STATUS)
    assert render(switch["value_template"], value_json=state) == switch["state_on"]
    off = state_from_status({"switch:0": {"output": False}})
    assert render(switch["value_template"], value_json=off) == switch["state_off"]
    energy = plug["homeassistant/sensor/edge-gateway_plug/energy/config"]
    assert render(energy["value_template"], value_json=state) == "1234.5"

    kitchen = dict(decoded(discovery_messages(*all_cases()[0])))
    button = kitchen["homeassistant/event/edge-gateway_kitchen/button/config"]
    _, payload = event_message(Device.of_kind("kitchen", "bthome"), {"button": "double_press"})
    rendered = json.loads(render(button["value_template"], value_json=json.loads(payload)))
    assert rendered == {"event_type": "double_press"}
    assert rendered["event_type"] in button["event_types"]
    # A message about another key renders {}, which Home Assistant ignores.
    assert json.loads(render(button["value_template"], value_json={"dimmer": "x"})) == {}


def test_cover_templates_make_driver_commands() -> None:
    cover = decoded(discovery_messages(*all_cases()[3]))[0][1]
    state = state_from_status(SHELLY_COVER_STATUS)
    assert render(cover["value_template"], value_json=state) == "stopped"
    assert render(cover["position_template"], value_json=state) == "40"
    command = json.loads(render(cover["set_position_template"], position=75))
    assert plan(command, {"cover": [0]}, "t") == [("Cover.GoToPosition", {"id": 0, "pos": 75})]


def test_shelly_light_brightness_is_scaled_both_ways() -> None:
    light = decoded(discovery_messages(*all_cases()[5]))[0][1]
    state = state_from_status({"light:0": {"output": True, "brightness": 50}})
    assert render(light["state_template"], value_json=state) == "on"
    assert render(light["brightness_template"], value_json=state) == "128"
    command = json.loads(render(light["command_on_template"], brightness=255))
    assert plan(command, {"light": [0]}, "t") == [
        ("Light.Set", {"id": 0, "on": True, "brightness": 100})
    ]
    # The dimmest step Home Assistant offers still lights the lamp.
    assert json.loads(render(light["command_on_template"], brightness=1))["brightness"] == 1
    assert json.loads(render(light["command_on_template"])) == {"on": True}
    assert json.loads(render(light["command_off_template"])) == {"on": False}


def test_wled_templates_make_driver_commands() -> None:
    light = decoded(discovery_messages(*all_cases()[6]))[0][1]
    state = state_from_wled(WLED_STATE)
    assert render(light["state_template"], value_json=state) == "on"
    assert render(light["brightness_template"], value_json=state) == "128"
    assert [render(light[f"{c}_template"], value_json=state) for c in ("red", "green", "blue")] == [
        "255",
        "160",
        "0",
    ]
    command = json.loads(
        render(light["command_on_template"], brightness=200, red=1, green=2, blue=3, transition=1.5)
    )
    assert wled_body(command, "t") == {
        "on": True,
        "bri": 200,
        "tt": 15,
        "seg": [{"id": 0, "col": [[1, 2, 3]]}],
    }
    assert wled_body(json.loads(render(light["command_off_template"])), "t") == {"on": False}


# --- removal, ids, bridge -----------------------------------------------------------------------


def test_removal_messages_clear_only_entities_that_went_away() -> None:
    dev = Device.of_kind("kitchen", "bthome")
    before = {"temperature": 20.0, "humidity": 40.0, "motion": True}
    after = {"temperature": 20.5}
    gone = removal_messages(dev, before, after)
    assert gone == [
        ("homeassistant/sensor/edge-gateway_kitchen/humidity/config", b""),
        ("homeassistant/binary_sensor/edge-gateway_kitchen/motion/config", b""),
    ]
    assert removal_messages(dev, before, before) == []
    everything = removal_messages(dev, before)
    assert [t for t, _ in everything] == [t for t, _ in discovery_messages(dev, before)]
    assert all(p == b"" for _, p in everything)


def test_removal_follows_a_component_change() -> None:
    # The same key now reads as a number: the binary sensor's config goes, the sensor's stays.
    dev = Device.of_kind("box", "sensor")
    assert removal_messages(dev, {"x": True}, {"x": 1.5}) == [
        ("homeassistant/binary_sensor/edge-gateway_box/x/config", b"")
    ]


def test_ids_outside_the_topic_character_class_are_made_safe_and_distinct() -> None:
    assert topic_level("kitchen_1-a") == "kitchen_1-a"
    a, b = topic_level("aa:bb"), topic_level("aa.bb")
    assert a != b
    assert re.fullmatch(r"[A-Za-z0-9_-]+", a) and re.fullmatch(r"[A-Za-z0-9_-]+", b)
    dev = Device.of_kind("hall.sensor", "bthome")
    [(topic, payload)] = discovery_messages(dev, {"temperature": 1.0}, gateway_id="gw.1")
    assert TOPIC.fullmatch(topic)
    config = json.loads(payload)
    assert config["unique_id"] == "gw.1_hall.sensor_temperature"
    assert config["device"]["via_device"] == "gw.1"


def test_prefixes_are_configurable() -> None:
    dev = Device.of_kind("plug", "shelly")
    [(topic, payload)] = discovery_messages(
        dev, {"on": True}, prefix="home", discovery_prefix="ha", gateway_id="attic"
    )
    assert topic == "ha/switch/attic_plug/on/config"
    config = json.loads(payload)
    assert config["command_topic"] == "home/plug/set"
    assert config["unique_id"] == "attic_plug_on"
    assert [a["topic"] for a in config["availability"]] == [
        "home/plug/availability",
        "home/bridge/state",
    ]


def test_bridge_device_is_the_via_device() -> None:
    [(topic, payload)] = bridge_messages()
    assert TOPIC.fullmatch(topic)
    config = json.loads(payload)
    assert config["device"]["identifiers"] == ["edge-gateway"]
    assert config["state_topic"] == "gw/bridge/state"
    assert (config["payload_on"], config["payload_off"]) == ("online", "offline")


def test_thermostat_climate_sends_the_setpoint_command() -> None:
    dev, state = all_cases()[7]
    got = dict(decoded(discovery_messages(dev, state)))
    climate = got["homeassistant/climate/edge-gateway_radiator/climate/config"]
    assert climate["name"] is None
    assert climate["modes"] == ["heat"]
    assert climate["temperature_command_topic"] == "gw/radiator/set"
    # Climate command templates get the new setpoint as `value` (climate.mqtt docs).
    command = json.loads(render(climate["temperature_command_template"], value=22.5))
    assert command == {"target_temp": 22.5}
    assert render(climate["temperature_state_template"], value_json=state) == "21.5"
    assert render(climate["current_temperature_template"], value_json=state) == "19.8"
    assert "homeassistant/sensor/edge-gateway_radiator/valve/config" in got


def test_device_and_key_boundaries_cannot_collide() -> None:
    a = discovery_messages(Device.of_kind("a", "sensor"), {"b_c": 1})
    b = discovery_messages(Device.of_kind("a_b", "sensor"), {"c": 1})
    assert a[0][0] == "homeassistant/sensor/edge-gateway_a/b_c/config"
    assert b[0][0] == "homeassistant/sensor/edge-gateway_a_b/c/config"


def test_thermostat_with_auto_and_manual_modes_offers_auto_and_heat() -> None:
    dev = Device.of_kind("trv", "eq3", schema=eq3.COMMAND_SCHEMA)
    state = {"target_temp": 21.0, "mode": "manual", "valve": 30, "boost": False}
    got = dict(decoded(discovery_messages(dev, state)))
    climate = got["homeassistant/climate/edge-gateway_trv/climate/config"]
    assert climate["modes"] == ["auto", "heat"]
    assert climate["mode_command_topic"] == "gw/trv/set"
    # Home Assistant's mode becomes the device's `mode` command, and back.
    assert json.loads(render(climate["mode_command_template"], value="heat")) == {"mode": "manual"}
    assert json.loads(render(climate["mode_command_template"], value="auto")) == {"mode": "auto"}
    for mode, shown in (("manual", "heat"), ("auto", "auto"), ("vacation", "heat")):
        assert render(climate["mode_state_template"], value_json={"mode": mode}) == shown
    assert climate["mode_state_topic"] == "gw/trv/state"


def test_thermostat_setpoint_range_and_step_come_from_its_command_schema() -> None:
    """Home Assistant offers only setpoints the broker would accept: the eQ-3's 4.5-30 in
    steps of 0.5 (its own defaults would be 7-35 in steps of 1)."""
    state = {"target_temp": 21.0, "mode": "auto"}
    trv = Device.of_kind("trv", "eq3", schema=eq3.COMMAND_SCHEMA)
    climate = dict(decoded(discovery_messages(trv, state)))[
        "homeassistant/climate/edge-gateway_trv/climate/config"
    ]
    assert (climate["min_temp"], climate["max_temp"], climate["temp_step"]) == (4.5, 30.0, 0.5)
    for setpoint in (climate["min_temp"], climate["max_temp"]):
        command = render(climate["temperature_command_template"], value=setpoint)
        assert eq3.COMMAND_SCHEMA.check_payload(command.encode()) is None
    # Another schema, other values: they are read from it, not written down twice.
    other = CommandSchema.from_data(
        {
            "type": "object",
            "properties": {
                "target_temp": {"type": "number", "minimum": 5, "maximum": 25, "multipleOf": 1}
            },
        }
    )
    climate = dict(decoded(discovery_messages(Device.of_kind("trv", "eq3", schema=other), state)))[
        "homeassistant/climate/edge-gateway_trv/climate/config"
    ]
    assert (climate["min_temp"], climate["max_temp"], climate["temp_step"]) == (5, 25, 1)
    assert climate["modes"] == ["heat"]  # this schema has no mode command
