"""Home Assistant MQTT discovery for the gateway's devices (pure: dicts and bytes, no I/O).

`discovery_messages` turns a device and the keys of its state object into one retained config
message per entity; `removal_messages` clears the configs of entities that went away. The caller
publishes them (retained, QoS 1) and re-publishes them when ``homeassistant/status`` says
``online``.

Facts from the Home Assistant MQTT documentation (integrations/mqtt, sensor.mqtt,
binary_sensor.mqtt, switch.mqtt, light.mqtt, cover.mqtt, event.mqtt, climate.mqtt) that shape
the payloads:

* Config topic: ``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``; node id and
  object id may only use ``[a-zA-Z0-9_-]``. An empty retained payload on it removes the entity.
* ``device`` ties entities into the device registry and only works with ``unique_id`` set; it
  needs ``identifiers`` (or ``connections``); ``via_device`` names the hub that routes messages.
* ``availability`` is a list of topics (default payloads ``online``/``offline``, the same words
  as DESIGN §2); with ``availability_mode: all`` an entity is available only while every topic
  says ``online``: here the device's will *and* the gateway's own will.
* Event entities: the state topic carries JSON with an ``event_type`` that is one of the
  configured ``event_types``; a value template may render ``{}``, which is ignored.
* Template lights get ``state_template`` (must give ``on``/``off``), ``brightness_template``
  (0-255) and ``command_on_template`` with the variables ``brightness``, ``red``, ``green``,
  ``blue``, ``transition`` when Home Assistant sets them.
* Covers read their state (``open``, ``opening``, ``closed``, ``closing``, ``stopped``, which
  are also the words Shelly's ``Cover.GetStatus`` uses) and position through templates, and
  send ``set_position_template`` with the variable ``position``.

Events go to ``<prefix>/<id>/event`` (not retained) rather than the retained state topic: Home
Assistant fires an event for every message it receives, and a retained message is received
again on every (re)subscription -- each Home Assistant restart would replay the last button
press. `event_message` builds that message.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from devices.ble.bthome_objects import (
    BUTTON_EVENTS,
    COMMAND_OPCODES,
    DIMMER_EVENTS,
    MEASUREMENT,
    TOTAL_INCREASING,
    Kind,
    spec_for_key,
)
from devices.model import Device
from gateway.commands.schema import CommandSchema

Message = tuple[str, bytes]

ORIGIN_NAME = "edge-gateway"

ON, OFF = "ON", "OFF"
TARGET_TEMP = "target_temp"  # the setpoint key of DESIGN §2's command example
DIAGNOSTIC = "diagnostic"

# Keys in a state object that are bookkeeping, not readings.
_SKIP_KEYS = frozenset({"ts", "packet_id", "errors", "segments", "link"})
# Readings that say how the device itself is doing rather than what it measures.
_DIAGNOSTIC_KEYS = frozenset({"battery", "battery_low"})

_TOPIC_LEVEL_OK = re.compile(r"[A-Za-z0-9_-]+")
_NOT_TOPIC_CHAR = re.compile(r"[^A-Za-z0-9_-]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "button": tuple(BUTTON_EVENTS.values()),
    "dimmer": tuple(DIMMER_EVENTS.values()),
    "command": tuple(COMMAND_OPCODES.values()),
}
# Event entity device classes (integrations/event): `button` for push buttons; a rotary dimmer
# or a remote command has no better class than none.
_EVENT_CLASS = {"button": "button"}

# Manufacturer and model per device kind, until (or unless) the device tells better. The eQ-3
# thermostat never tells: its GATT service has no device information; BTHome adverts carry a
# firmware version at most. Shelly and WLED say it over HTTP (`DeviceFacts`).
_KIND_INFO: dict[str, tuple[str, str]] = {
    "bthome": ("BTHome", "BTHome v2 sensor"),
    "eq3": ("eQ-3", "CC-RT-BLE-EQ"),
    "shelly": ("Shelly", "Shelly Gen2+ device"),
    "wled": ("WLED", "WLED controller"),
}
# Kinds whose `Device.address` is a Bluetooth address (the device registry's `bluetooth`
# connection, the one Home Assistant's own Bluetooth integrations use).
_BLE_KINDS = frozenset({"bthome", "eq3", "gatt", "sleepy", "thermostat", "switchbot"})

GATEWAY_MANUFACTURER = "edge-gateway"
GATEWAY_MODEL = "MQTT broker and BLE/LAN bridge"


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What a device said about itself (Shelly.GetDeviceInfo, WLED /json/info, ...).

    ``effects`` and ``presets`` are a WLED's effect names (by index) and preset names (by id).
    """

    manufacturer: str | None = None
    model: str | None = None
    sw_version: str | None = None
    mac: str | None = None
    effects: tuple[str, ...] = ()
    presets: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Origin:
    """Who publishes the configs (`origin` in every payload); `support_url` only when the
    project declares a home page: Home Assistant rejects a payload whose URL is invalid."""

    sw_version: str | None = None
    support_url: str | None = None


@dataclass(frozen=True, slots=True)
class Entity:
    component: str  # sensor, binary_sensor, switch, light, cover, event, climate, select
    key: str  # unique within the device; the tail of unique_id and object_id
    config: dict[str, Any]  # the component-specific part of the discovery payload
    # The device's main feature (`name: null`): its entity id is the device's alone,
    # `climate.demo_thermostat` rather than `climate.demo_thermostat_climate`.
    main: bool = False


# --- topics and names -------------------------------------------------------------------------


def topic_level(text: str) -> str:
    """`text` as a node/object id (``[a-zA-Z0-9_-]`` only).

    Characters outside that class become ``_``; a short checksum of the original then keeps two
    ids that differ only in such characters (``a.b``, ``a:b``) on different topics.
    """
    if _TOPIC_LEVEL_OK.fullmatch(text):
        return text
    return f"{_NOT_TOPIC_CHAR.sub('_', text)}_{zlib.crc32(text.encode()):08x}"


def config_topic(
    component: str, device: Device, key: str, *, discovery_prefix: str, gateway_id: str
) -> str:
    """``<discovery_prefix>/<component>/<gateway>_<device>/<key>/config``.

    The node is the device as this gateway sees it: two gateways never overwrite each other's
    configs, and since the key is a level of its own, device ``a`` with key ``b_c`` and device
    ``a_b`` with key ``c`` cannot meet on one topic.
    """
    node = topic_level(f"{gateway_id}_{device.id}")
    return f"{discovery_prefix}/{component}/{node}/{topic_level(key)}/config"


def slug(text: str) -> str:
    """`text` as the object part of an entity id (``[a-z0-9_]``, no leading, trailing or double
    underscores), as Home Assistant's slugify makes it for ASCII text."""
    out = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return out or "unnamed"


def _object_id(device: Device, entity: Entity) -> str:
    # Home Assistant derives the entity id from it (`sensor.kitchen_temperature`).
    return slug(device.id if entity.main else f"{device.id}_{entity.key}")


def _ref(path: Iterable[str]) -> str:
    """A Jinja expression for a value inside ``value_json``.

    Dotted access is tried as an attribute first, so a key such as ``values`` or ``items`` would
    find the dict's method: those, and keys that are not identifiers, use subscripts.
    """
    expr = "value_json"
    for key in path:
        if _IDENTIFIER.fullmatch(key) and not hasattr(dict, key):
            expr += f".{key}"
        else:
            expr += f"[{json.dumps(key)}]"
    return expr


def _value_template(path: tuple[str, ...]) -> str:
    return "{{ " + _ref(path) + " }}"


def _on_off_template(path: tuple[str, ...]) -> str:
    # Rendering a JSON true directly would give Python's "True"; spelling the payloads out
    # keeps the contract independent of how the template engine prints booleans.
    return "{{ '" + ON + "' if " + _ref(path) + " else '" + OFF + "' }}"


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _humanize(key: str) -> str:
    return key.replace(":", " ").replace("_", " ").capitalize()


# --- entities per device kind -----------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _rssi(path: tuple[str, ...], key: str) -> Entity:
    return Entity(
        "sensor",
        key,
        {
            "name": "Signal strength",
            "device_class": "signal_strength",
            "unit_of_measurement": "dBm",
            "state_class": MEASUREMENT,
            "entity_category": DIAGNOSTIC,
            "value_template": _value_template(path),
        },
    )


# Readings of the LAN and GATT drivers and of state keys no protocol table describes, by key:
# name, device_class, unit, state_class, diagnostic. Units are Home Assistant's spellings; a
# device_class is given only where Home Assistant has one (the valve position has none).
_READINGS: dict[str, tuple[str, str | None, str | None, str, bool]] = {
    "temperature": ("Temperature", "temperature", "°C", MEASUREMENT, False),
    "target_temp": ("Target temperature", "temperature", "°C", MEASUREMENT, False),
    "humidity": ("Humidity", "humidity", "%", MEASUREMENT, False),
    "valve": ("Valve position", None, "%", MEASUREMENT, False),
    "battery": ("Battery", "battery", "%", MEASUREMENT, True),
    "power": ("Power", "power", "W", MEASUREMENT, False),
    "energy": ("Energy", "energy", "Wh", TOTAL_INCREASING, False),
    "voltage": ("Voltage", "voltage", "V", MEASUREMENT, False),
    "current": ("Current", "current", "A", MEASUREMENT, False),
    "illuminance": ("Illuminance", "illuminance", "lx", MEASUREMENT, False),
    "pressure": ("Pressure", "atmospheric_pressure", "hPa", MEASUREMENT, False),
    "co2": ("Carbon dioxide", "carbon_dioxide", "ppm", MEASUREMENT, False),
    "link_quality": ("Link quality", None, "lqi", MEASUREMENT, True),
    "linkquality": ("Link quality", None, "lqi", MEASUREMENT, True),
}
# Binary readings: name, device_class (on = open window, on = low battery), diagnostic.
_BINARY_READINGS: dict[str, tuple[str, str | None, bool]] = {
    "window_open": ("Window", "window", False),
    "low_battery": ("Battery", "battery", True),
    "battery_low": ("Battery", "battery", True),
    "boost": ("Boost", None, False),
    # Not Home Assistant's `lock` class: that one means *unlocked* when on.
    "locked": ("Child lock", None, True),
}


def _energy_like(key: str) -> bool:
    # Counters that only grow (and restart at zero): Home Assistant's total_increasing.
    return key == "energy" or key.endswith(("_energy", "_total")) or key.startswith("energy_")


def _generic(path: tuple[str, ...], key: str, value: object) -> Entity | None:
    """An entity for a key no protocol table describes: by its name where `_READINGS` knows it,
    else by the type of its value. Every numeric reading gets a state_class, so Home Assistant
    keeps long-term statistics of it."""
    if isinstance(value, bool):
        name, device_class, diagnostic = _BINARY_READINGS.get(key, (_humanize(key), None, False))
        config: dict[str, Any] = {"name": name}
        if device_class is not None:
            config["device_class"] = device_class
        config.update(payload_on=ON, payload_off=OFF, value_template=_on_off_template(path))
        if diagnostic:
            config["entity_category"] = DIAGNOSTIC
        return Entity("binary_sensor", key, config)
    if _is_number(value):
        reading = _READINGS.get(key)
        if reading is None:
            state_class = TOTAL_INCREASING if _energy_like(key) else MEASUREMENT
            reading = (_humanize(key), None, None, state_class, False)
        name, device_class, unit, state_class, diagnostic = reading
        config = {"name": name}
        if device_class is not None:
            config["device_class"] = device_class
        if unit is not None:
            config["unit_of_measurement"] = unit
        config["state_class"] = state_class
        if diagnostic:
            config["entity_category"] = DIAGNOSTIC
        config["value_template"] = _value_template(path)
        return Entity("sensor", key, config)
    if isinstance(value, str):
        return Entity(
            "sensor", key, {"name": _humanize(key), "value_template": _value_template(path)}
        )
    return None  # lists, objects, null: nothing Home Assistant can show as one state


def _bthome_entities(state: Mapping[str, object]) -> tuple[list[Entity], dict[str, str]]:
    entities: list[Entity] = []
    device_info: dict[str, str] = {}
    for key, value in state.items():
        if key in _SKIP_KEYS:
            continue
        path = (key,)
        if key == "rssi":
            entities.append(_rssi(path, key))
            continue
        spec = spec_for_key(key)
        if spec is None:
            entity = _generic(path, key, value)
            if entity is not None:
                entities.append(entity)
            continue
        suffix = key[len(spec.key) :].replace("_", " ")
        name = spec.name + suffix
        diagnostic = spec.key in _DIAGNOSTIC_KEYS
        if spec.kind is Kind.DEVICE_INFO:
            if spec.key == "firmware_version" and isinstance(value, str):
                device_info["sw_version"] = value
            continue
        if spec.kind is Kind.PACKET_ID:
            continue
        if spec.kind is Kind.EVENT:
            config: dict[str, Any] = {
                "name": name,
                "event_types": list(_EVENT_TYPES[spec.key]),
                # Renders {} (ignored, per the event docs) for messages about other keys.
                "value_template": (
                    "{% if " + _ref(path) + " is defined %}"
                    '{"event_type": "{{ ' + _ref(path) + ' }}"}'
                    "{% else %}{}{% endif %}"
                ),
            }
            if spec.key in _EVENT_CLASS:
                config["device_class"] = _EVENT_CLASS[spec.key]
            entities.append(Entity("event", key, config))
            continue
        if spec.kind is Kind.BINARY:
            config = {"name": name}
            if spec.device_class is not None:
                config["device_class"] = spec.device_class
            config.update(payload_on=ON, payload_off=OFF, value_template=_on_off_template(path))
        else:
            config = {"name": name}
            if spec.device_class is not None:
                config["device_class"] = spec.device_class
            if spec.unit is not None:
                config["unit_of_measurement"] = spec.unit
            if spec.state_class is not None:
                config["state_class"] = spec.state_class
            if spec.options:
                config["options"] = list(spec.options)
            config["value_template"] = _value_template(path)
        if diagnostic:
            config["entity_category"] = DIAGNOSTIC
        entities.append(
            Entity("binary_sensor" if spec.kind is Kind.BINARY else "sensor", key, config)
        )
    return entities, device_info


# Shelly Gen2 metering as the driver reports it (devices/lan/shelly.py `_metering`): `apower` in
# W, `voltage` in V, `current` in A, `aenergy.total` in Wh, `temperature.tC` in °C (the
# device's own temperature, hence diagnostic).
_SHELLY_METERS: dict[str, dict[str, Any]] = {
    "power": {
        "name": "Power",
        "device_class": "power",
        "unit_of_measurement": "W",
        "state_class": MEASUREMENT,
    },
    "voltage": {
        "name": "Voltage",
        "device_class": "voltage",
        "unit_of_measurement": "V",
        "state_class": MEASUREMENT,
    },
    "current": {
        "name": "Current",
        "device_class": "current",
        "unit_of_measurement": "A",
        "state_class": MEASUREMENT,
    },
    "energy": {
        "name": "Energy",
        "device_class": "energy",
        "unit_of_measurement": "Wh",
        "state_class": TOTAL_INCREASING,
    },
    "temperature": {
        "name": "Device temperature",
        "device_class": "temperature",
        "unit_of_measurement": "°C",
        "state_class": MEASUREMENT,
        "entity_category": DIAGNOSTIC,
    },
}


def _shelly_kind(values: Mapping[str, object]) -> str | None:
    if "cover" in values or "position" in values:
        return "cover"
    if "brightness" in values:
        return "light"
    if "on" in values:
        return "switch"
    return None


def _command(component: str | None, body: str) -> str:
    """A command object's JSON text, addressed to one Shelly component when there are several."""
    return body if component is None else '{"' + component + '": ' + body + "}"


def _shelly_component(
    values: Mapping[str, object], component: str | None, set_topic: str, state_topic: str
) -> list[Entity]:
    """The entities of one Shelly component (`component` None: the device's only one, flat)."""
    base: tuple[str, ...] = () if component is None else (component,)
    tail = "" if component is None else topic_level(component.replace(":", "_")) + "_"
    # The main control of a single-component device carries the device's name: the MQTT docs
    # allow `name: null` "if only the device name is relevant".
    main_name = None if component is None else _humanize(component)
    entities: list[Entity] = []
    kind = _shelly_kind(values)
    if kind == "switch":
        entities.append(
            Entity(
                "switch",
                f"{tail}on",
                {
                    "name": main_name,
                    "command_topic": set_topic,
                    "payload_on": _command(component, '{"on": true}'),
                    "payload_off": _command(component, '{"on": false}'),
                    "state_on": ON,
                    "state_off": OFF,
                    "value_template": _on_off_template((*base, "on")),
                },
                main=component is None,
            )
        )
    elif kind == "light":
        # Shelly's brightness is a percentage; Home Assistant's template light speaks 0-255.
        # An "on" command never asks for 0 %, which Shelly would treat as dark.
        pct = "[1, (brightness * 100 / 255) | round | int] | max"
        entities.append(
            Entity(
                "light",
                f"{tail}light",
                {
                    "name": main_name,
                    "schema": "template",
                    "command_topic": set_topic,
                    "command_on_template": _command(
                        component,
                        '{"on": true{% if brightness is defined %}, "brightness": {{ '
                        + pct
                        + " }}{% endif %}}",
                    ),
                    "command_off_template": _command(component, '{"on": false}'),
                    "state_template": "{{ 'on' if " + _ref((*base, "on")) + " else 'off' }}",
                    "brightness_template": "{{ ("
                    + _ref((*base, "brightness"))
                    + " * 255 / 100) | round | int }}",
                },
                main=component is None,
            )
        )
    elif kind == "cover":
        config: dict[str, Any] = {
            "name": main_name,
            "command_topic": set_topic,
            "payload_open": _command(component, '"open"' if component else '{"cover": "open"}'),
            "payload_close": _command(component, '"close"' if component else '{"cover": "close"}'),
            "payload_stop": _command(component, '"stop"' if component else '{"cover": "stop"}'),
            "value_template": _value_template((*base, "cover")),
        }
        if "position" in values:
            # Shelly reports no position until the cover is calibrated; without one Home
            # Assistant must not offer a position slider.
            config.update(
                position_topic=state_topic,
                position_template=_value_template((*base, "position")),
                set_position_topic=set_topic,
                set_position_template=_command(component, '{"position": {{ position }}}'),
            )
        entities.append(Entity("cover", f"{tail}cover", config, main=component is None))
    handled = {"on", "brightness", "cover", "position"} if kind else set()
    for key, value in values.items():
        if key in handled or key in _SKIP_KEYS:
            continue
        path = (*base, key)
        if key == "rssi":
            entities.append(_rssi(path, f"{tail}{key}"))
        elif key in _SHELLY_METERS:
            meter = dict(_SHELLY_METERS[key])
            if component is not None:
                meter["name"] = f"{_humanize(component)} {meter['name'].lower()}"
            meter["value_template"] = _value_template(path)
            entities.append(Entity("sensor", f"{tail}{key}", meter))
        else:
            entity = _generic(path, f"{tail}{key}", value)
            if entity is not None:
                entities.append(entity)
    return entities


def _shelly_entities(state: Mapping[str, object], set_topic: str, state_topic: str) -> list[Entity]:
    nested = {k: v for k, v in state.items() if ":" in k and isinstance(v, Mapping)}
    flat = {k: v for k, v in state.items() if k not in nested}
    entities = _shelly_component(flat, None, set_topic, state_topic)
    for component, values in nested.items():
        entities.extend(_shelly_component(values, component, set_topic, state_topic))
    return entities


def _names_by_number(names: Mapping[int, str]) -> str:
    return _json({str(number): name for number, name in names.items()})


def _wled_entities(
    state: Mapping[str, object], set_topic: str, facts: DeviceFacts | None
) -> list[Entity]:
    # WLED speaks 0-255 brightness like Home Assistant; its transition `tt` is in tenths of a
    # second (devices/lan/wled.py), Home Assistant's in seconds. Effects and presets go by
    # number to WLED and by name to Home Assistant: the names are the device's own
    # (/json/effects, /presets.json), read when it was identified.
    effects = list(facts.effects) if facts is not None else []
    presets = dict(facts.presets) if facts is not None else {}
    effect_cmd = ""
    if effects:
        effect_cmd = (
            "{% if effect is defined and effect in " + _json(effects) + " %}"
            ', "effect": {{ ' + _json(effects) + ".index(effect) }}{% endif %}"
        )
    on_template = (
        '{"on": true'
        '{% if brightness is defined %}, "brightness": {{ brightness }}{% endif %}'
        "{% if red is defined and green is defined and blue is defined %}"
        ', "color": [{{ red }}, {{ green }}, {{ blue }}]{% endif %}'
        '{% if transition is defined %}, "transition": {{ (transition * 10) | round | int }}'
        "{% endif %}" + effect_cmd + "}"
    )
    off_template = (
        '{"on": false'
        '{% if transition is defined %}, "transition": {{ (transition * 10) | round | int }}'
        "{% endif %}}"
    )
    light: dict[str, Any] = {
        "name": None,
        "schema": "template",
        "command_topic": set_topic,
        "command_on_template": on_template,
        "command_off_template": off_template,
        "state_template": "{{ 'on' if " + _ref(("on",)) + " else 'off' }}",
    }
    if "brightness" in state:
        light["brightness_template"] = _value_template(("brightness",))
    if "color" in state:
        for i, channel in enumerate(("red", "green", "blue")):
            light[f"{channel}_template"] = "{{ " + _ref(("color",)) + f"[{i}] }}}}"
    if effects:
        light["effect_list"] = effects
        if "effect" in state:
            effect = _ref(("effect",))
            light["effect_template"] = (
                "{{ "
                + _json(effects)
                + "["
                + effect
                + "] if "
                + effect
                + " is number and 0 <= "
                + effect
                + " < "
                + str(len(effects))
                + " else '' }}"
            )
    entities = [Entity("light", "light", light, main=True)]
    for key, value in state.items():
        if key in ("on", "brightness", "color", "effect") or key in _SKIP_KEYS:
            continue
        if key == "rssi":
            entities.append(_rssi((key,), key))
            continue
        if key == "preset":
            entities.extend(_wled_presets(set_topic, presets))
            continue
        entity = _generic((key,), key, value)
        if entity is not None:
            entities.append(entity)
    return entities


def _wled_presets(set_topic: str, presets: Mapping[int, str]) -> list[Entity]:
    """The active preset by name (``none`` while none is: never Python's ``None``), and a
    select to apply one by name. The driver always reports `preset`, null while no preset
    is active: the entities must not come and go with it."""
    ps = _ref(("preset",))
    names = _names_by_number(presets)
    sensor = Entity(
        "sensor",
        "preset",
        {
            "name": "Preset",
            "icon": "mdi:palette",
            "value_template": (
                "{% set p = "
                + ps
                + " %}{{ 'none' if p is none else "
                + names
                + ".get(p | string, p | string) }}"
            ),
        },
    )
    if not presets:
        return [sensor]
    by_name = _json({name: number for number, name in presets.items()})
    select = Entity(
        "select",
        "preset_select",
        {
            "name": "Apply preset",
            "icon": "mdi:palette",
            "options": list(presets.values()),
            "command_topic": set_topic,
            "command_template": '{"preset": {{ ' + by_name + "[value] }}}",
            # No preset active: Home Assistant shows the select as unknown ("None" payload).
            "value_template": (
                "{% set p = "
                + ps
                + " %}{{ 'None' if p is none else "
                + names
                + ".get(p | string, 'None') }}"
            ),
        },
    )
    return [sensor, select]


def _pending(prefix: str, device: Device) -> Entity:
    """What waits for the device: the broker's retained pending list (a JSON array, DESIGN
    §2), counted; the list itself as the entity's attributes."""
    topic = f"{prefix}/{device.id}/pending"
    return Entity(
        "sensor",
        "pending",
        {
            "name": "Pending commands",
            "icon": "mdi:tray-full",
            "state_topic": topic,
            "value_template": "{{ value_json | length }}",
            "json_attributes_topic": topic,
            "json_attributes_template": "{{ {'commands': value_json} | tojson }}",
            "state_class": MEASUREMENT,
            "entity_category": DIAGNOSTIC,
        },
    )


def entities_of(
    device: Device,
    state_keys: Mapping[str, object],
    *,
    prefix: str = "gw",
    facts: DeviceFacts | None = None,
) -> tuple[list[Entity], dict[str, str]]:
    """The entities a device's state describes, and device-registry facts found in it.

    A device that takes commands also has the entities its command schema promises before it
    ever reported (a sleeping thermostat's climate entity), and a pending-commands sensor
    when the broker keeps a queue for it.
    """
    set_topic = f"{prefix}/{device.id}/set"
    state_topic = f"{prefix}/{device.id}/state"
    found: dict[str, str] = {}
    if device.kind == "shelly":
        entities = _shelly_entities(state_keys, set_topic, state_topic)
    elif device.kind == "wled":
        entities = _wled_entities(state_keys, set_topic, facts)
    elif device.kind == "bthome":
        entities, found = _bthome_entities(state_keys)
    else:
        entities = []
        schema = device.schema
        if TARGET_TEMP in state_keys or (schema is not None and TARGET_TEMP in schema.keys):
            entities.append(_climate(state_keys, schema, set_topic, state_topic))
        for key, value in state_keys.items():
            if key in _SKIP_KEYS:
                continue
            entity = _rssi((key,), key) if key == "rssi" else _generic((key,), key, value)
            if entity is not None:
                entities.append(entity)
    if device.schema is not None and device.policy.persistent:
        entities.append(_pending(prefix, device))
    return entities, found


def _enum_of(schema: CommandSchema | None, key: str) -> list[str]:
    """The string values a command key takes ([] when the schema has no such enum)."""
    spec = schema.key(key) if schema is not None else None
    values = spec.get("enum") if spec is not None else None
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def _climate(
    state: Mapping[str, object], schema: CommandSchema | None, set_topic: str, state_topic: str
) -> Entity:
    """A thermostat: its setpoint is the `target_temp` command key of the topic contract.

    Everything Home Assistant may send comes from the device's command schema, the one the
    broker checks commands with: the setpoint's range and step (eQ-3: 4.5-30 in steps of
    0.5), the presets (its `preset` enum, and ``boost`` when it has a `boost` switch), the
    modes. A schema whose ``mode`` takes ``auto``/``manual`` (the eQ-3) gets Home Assistant's
    ``auto`` (its own week programme) and ``heat`` (a fixed setpoint); a thermostat without
    modes only ``heat``, and says so in its mode state: without one Home Assistant would show
    ``off`` until it set ``heat`` itself. Climate command templates receive Home Assistant's
    choice as `value` (climate.mqtt).
    """
    config: dict[str, Any] = {
        "name": None,
        "temperature_unit": "C",
        "temperature_command_topic": set_topic,
        "temperature_command_template": '{"' + TARGET_TEMP + '": {{ value }}}',
        "temperature_state_topic": state_topic,
        "temperature_state_template": _value_template((TARGET_TEMP,)),
        "mode_state_topic": state_topic,
    }
    setpoint = schema.key(TARGET_TEMP) if schema is not None else None
    if setpoint is not None:
        for ha_key, schema_key in (
            ("min_temp", "minimum"),
            ("max_temp", "maximum"),
            ("temp_step", "multipleOf"),
        ):
            if _is_number(setpoint.get(schema_key)):
                config[ha_key] = setpoint[schema_key]
    modes = _enum_of(schema, "mode")
    if "auto" in modes and "manual" in modes:
        config["modes"] = ["auto", "heat"]
        config["mode_command_topic"] = set_topic
        config["mode_command_template"] = (
            "{\"mode\": \"{{ 'manual' if value == 'heat' else 'auto' }}\"}"
        )
        # The eQ-3's vacation mode holds a fixed setpoint: heat.
        config["mode_state_template"] = (
            "{{ 'auto' if " + _ref(("mode",)) + " == 'auto' else 'heat' }}"
        )
    else:
        config["modes"] = ["heat"]
        config["mode_state_template"] = "{{ 'heat' }}"
    boost = schema is not None and schema.key("boost") is not None
    presets = [*_enum_of(schema, "preset"), *(["boost"] if boost else [])]
    if presets:
        config["preset_modes"] = presets
        config["preset_mode_command_topic"] = set_topic
        # Home Assistant adds a preset "none" of its own: with a boost switch it ends the
        # boost (as choosing another preset does); without one the gateway refuses it.
        config["preset_mode_command_template"] = (
            '{% if value == "boost" %}{"boost": true}{% elif value == "none" %}'
            '{"boost": false}{% else %}{"preset": "{{ value }}", "boost": false}{% endif %}'
            if boost
            else '{"preset": "{{ value }}"}'
        )
        if boost:
            # The presets other than boost only set the setpoint once: the thermostat does
            # not remember them, so the state can only tell boost from none.
            config["preset_mode_state_topic"] = state_topic
            config["preset_mode_value_template"] = (
                "{{ 'boost' if " + _ref(("boost",)) + " else 'none' }}"
            )
    if "valve" in state:
        config["action_topic"] = state_topic
        config["action_template"] = "{{ 'heating' if " + _ref(("valve",)) + " > 0 else 'idle' }}"
    if "temperature" in state:
        config["current_temperature_topic"] = state_topic
        config["current_temperature_template"] = _value_template(("temperature",))
    return Entity("climate", "climate", config, main=True)


# --- messages ---------------------------------------------------------------------------------


def _mac(text: str) -> str | None:
    """A MAC address as the device registry writes it (``aa:bb:cc:dd:ee:ff``), from any of the
    spellings devices report (Shelly: ``A8032AB12345``); None if it is not one."""
    digits = re.sub(r"[^0-9A-Fa-f]", "", text)
    if len(digits) != 12 or len(re.sub(r"[:.-]", "", text)) != 12:
        return None
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2)).lower()


def _connections(device: Device, facts: DeviceFacts | None) -> list[list[str]]:
    """Ties to Home Assistant's other integrations: a device seen by its own Bluetooth or
    network integration too is one device in the registry, not two."""
    if device.kind in _BLE_KINDS and device.address and (ble := _mac(device.address)):
        return [["bluetooth", ble]]
    if facts is not None and facts.mac and (mac := _mac(facts.mac)):
        return [["mac", mac]]
    return []


def _device_block(
    device: Device, gateway_id: str, facts: DeviceFacts | None, found: Mapping[str, str]
) -> dict[str, Any]:
    manufacturer, model = _KIND_INFO.get(device.kind, ("unknown", device.kind))
    block: dict[str, Any] = {
        "identifiers": [f"{gateway_id}_{device.id}"],
        "name": device.name or device.id,
        "manufacturer": (facts.manufacturer if facts else None) or manufacturer,
        "model": (facts.model if facts else None) or model,
    }
    sw_version = (facts.sw_version if facts else None) or found.get("sw_version")
    if sw_version:
        block["sw_version"] = sw_version
    connections = _connections(device, facts)
    if connections:
        block["connections"] = connections
    block["via_device"] = gateway_id
    return block


def _origin(origin: Origin | None) -> dict[str, str]:
    out = {"name": ORIGIN_NAME}
    if origin is not None and origin.sw_version:
        out["sw_version"] = origin.sw_version
    if origin is not None and origin.support_url:
        out["support_url"] = origin.support_url
    return out


def discovery_configs(
    device: Device,
    state_keys: Mapping[str, object],
    *,
    prefix: str = "gw",
    discovery_prefix: str = "homeassistant",
    gateway_id: str = "edge-gateway",
    facts: DeviceFacts | None = None,
    origin: Origin | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, config object) per entity; `discovery_messages` encodes them."""
    entities, found = entities_of(device, state_keys, prefix=prefix, facts=facts)
    device_block = _device_block(device, gateway_id, facts, found)
    base = f"{prefix}/{device.id}"
    availability = [{"topic": f"{base}/availability"}, {"topic": f"{prefix}/bridge/state"}]
    out: list[tuple[str, dict[str, Any]]] = []
    for entity in entities:
        object_id = _object_id(device, entity)
        config: dict[str, Any] = {
            "unique_id": f"{gateway_id}_{device.id}_{entity.key}",
            # The entity id: `object_id` for Home Assistant before 2025.10 (2024.1 drops
            # the key it does not know), `default_entity_id` from 2025.10 on (which then
            # ignores `object_id` without a warning; 2026.4 no longer reads it).
            "object_id": object_id,
            "default_entity_id": f"{entity.component}.{object_id}",
            "state_topic": f"{base}/event" if entity.component == "event" else f"{base}/state",
            **entity.config,
            "availability": availability,
            "availability_mode": "all",
            # Commands are QoS 1 in the topic contract (DESIGN §2), and the broker keeps QoS 1
            # commands for sleeping devices; a QoS 0 command would be dropped.
            "qos": 1,
            "device": device_block,
            "origin": _origin(origin),
        }
        topic = config_topic(
            entity.component,
            device,
            entity.key,
            discovery_prefix=discovery_prefix,
            gateway_id=gateway_id,
        )
        out.append((topic, config))
    return out


def discovery_messages(
    device: Device,
    state_keys: Mapping[str, object],
    *,
    prefix: str = "gw",
    discovery_prefix: str = "homeassistant",
    gateway_id: str = "edge-gateway",
    facts: DeviceFacts | None = None,
    origin: Origin | None = None,
) -> list[Message]:
    """One (topic, retained JSON payload) config message per entity of `device`.

    `state_keys` is the device's state object (or any mapping with the same keys and values
    of the same types); event keys (``button``, ``dimmer``, ...) are included by the caller
    when the device has sent such events.
    """
    return [
        (topic, _json(config).encode())
        for topic, config in discovery_configs(
            device,
            state_keys,
            prefix=prefix,
            discovery_prefix=discovery_prefix,
            gateway_id=gateway_id,
            facts=facts,
            origin=origin,
        )
    ]


def removal_messages(
    device: Device,
    previous_keys: Mapping[str, object],
    current_keys: Mapping[str, object] | None = None,
    *,
    prefix: str = "gw",
    discovery_prefix: str = "homeassistant",
    gateway_id: str = "edge-gateway",
    facts: DeviceFacts | None = None,
    previous_facts: DeviceFacts | None = None,
) -> list[Message]:
    """Empty retained payloads for the entities of `previous_keys` (and `previous_facts`) that
    `current_keys` (and `facts`) lack.

    With `current_keys` None the device is gone and every entity is removed.
    """

    def topics(keys: Mapping[str, object], known: DeviceFacts | None) -> list[str]:
        return [
            topic
            for topic, _ in discovery_configs(
                device,
                keys,
                prefix=prefix,
                discovery_prefix=discovery_prefix,
                gateway_id=gateway_id,
                facts=known,
            )
        ]

    before = topics(previous_keys, previous_facts)
    after = set() if current_keys is None else set(topics(current_keys, facts))
    return [(topic, b"") for topic in before if topic not in after]


def status_topic(discovery_prefix: str = "homeassistant") -> str:
    """Where Home Assistant announces itself (`online` birth message): re-send discovery then."""
    return f"{discovery_prefix}/status"


def event_message(device: Device, events: Mapping[str, str], *, prefix: str = "gw") -> Message:
    """The (not retained) message that fires event entities: ``{"<key>": "<event_type>"}``."""
    return f"{prefix}/{device.id}/event", _json(dict(events)).encode()


def bridge_messages(
    *,
    prefix: str = "gw",
    discovery_prefix: str = "homeassistant",
    gateway_id: str = "edge-gateway",
    origin: Origin | None = None,
) -> list[Message]:
    """The gateway's own device (the `via_device` of every device) with a connectivity sensor."""
    node = topic_level(gateway_id)
    object_id = slug(f"{gateway_id}_bridge_state")
    device: dict[str, Any] = {
        "identifiers": [gateway_id],
        "name": gateway_id,
        "manufacturer": GATEWAY_MANUFACTURER,
        "model": GATEWAY_MODEL,
    }
    if origin is not None and origin.sw_version:
        device["sw_version"] = origin.sw_version
    config: dict[str, Any] = {
        "unique_id": f"{gateway_id}_bridge_state",
        "object_id": object_id,
        "default_entity_id": f"binary_sensor.{object_id}",
        "name": "Connectivity",
        "device_class": "connectivity",
        "entity_category": DIAGNOSTIC,
        "state_topic": f"{prefix}/bridge/state",
        "payload_on": "online",
        "payload_off": "offline",
        "qos": 1,
        "device": device,
        "origin": _origin(origin),
    }
    topic = f"{discovery_prefix}/binary_sensor/{node}/bridge_state/config"
    return [(topic, _json(config).encode())]


__all__ = [
    "DeviceFacts",
    "Entity",
    "Message",
    "Origin",
    "bridge_messages",
    "config_topic",
    "discovery_configs",
    "discovery_messages",
    "entities_of",
    "event_message",
    "removal_messages",
    "slug",
    "status_topic",
    "topic_level",
]
