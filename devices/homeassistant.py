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

# Manufacturer and model per device kind, when nothing better is known.
_KIND_INFO: dict[str, tuple[str | None, str | None]] = {
    "bthome": (None, "BTHome v2 sensor"),
    "shelly": ("Shelly", None),
    "wled": ("WLED", None),
}


@dataclass(frozen=True, slots=True)
class Entity:
    component: str  # sensor, binary_sensor, switch, light, cover, event, climate
    key: str  # unique within the device; the tail of unique_id and object_id
    config: dict[str, Any]  # the component-specific part of the discovery payload


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


def _object_id(device: Device, key: str) -> str:
    # Home Assistant derives the entity id from it (`sensor.kitchen_temperature`).
    return topic_level(f"{device.id}_{key}")


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


def _generic(path: tuple[str, ...], key: str, value: object) -> Entity | None:
    """An entity for a key no table describes, chosen by the type of its value."""
    name = _humanize(key)
    if isinstance(value, bool):
        return Entity(
            "binary_sensor",
            key,
            {
                "name": name,
                "payload_on": ON,
                "payload_off": OFF,
                "value_template": _on_off_template(path),
            },
        )
    if _is_number(value) or isinstance(value, str):
        return Entity("sensor", key, {"name": name, "value_template": _value_template(path)})
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
        entities.append(Entity("cover", f"{tail}cover", config))
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


def _wled_entities(state: Mapping[str, object], set_topic: str) -> list[Entity]:
    # WLED speaks 0-255 brightness like Home Assistant; its transition `tt` is in tenths of a
    # second (devices/lan/wled.py), Home Assistant's in seconds.
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
    entities = [Entity("light", "light", light)]
    for key, value in state.items():
        if key in ("on", "brightness", "color") or key in _SKIP_KEYS:
            continue
        if key == "rssi":
            entities.append(_rssi((key,), key))
            continue
        if key == "preset":
            # The driver always reports `preset`, null while none is active: the entity must
            # not come and go with it.
            entities.append(
                Entity("sensor", key, {"name": "Preset", "value_template": _value_template((key,))})
            )
            continue
        entity = _generic((key,), key, value)
        if entity is not None:
            entities.append(entity)
    return entities


def entities_of(
    device: Device, state_keys: Mapping[str, object], *, prefix: str = "gw"
) -> tuple[list[Entity], dict[str, str]]:
    """The entities a device's state describes, and device-registry facts found in it."""
    set_topic = f"{prefix}/{device.id}/set"
    state_topic = f"{prefix}/{device.id}/state"
    if device.kind == "shelly":
        return _shelly_entities(state_keys, set_topic, state_topic), {}
    if device.kind == "wled":
        return _wled_entities(state_keys, set_topic), {}
    if device.kind == "bthome":
        return _bthome_entities(state_keys)
    entities: list[Entity] = []
    if TARGET_TEMP in state_keys:
        entities.append(_climate(state_keys, device.schema, set_topic, state_topic))
    for key, value in state_keys.items():
        if key in _SKIP_KEYS:
            continue
        entity = _rssi((key,), key) if key == "rssi" else _generic((key,), key, value)
        if entity is not None:
            entities.append(entity)
    return entities, {}


def _climate(
    state: Mapping[str, object], schema: CommandSchema | None, set_topic: str, state_topic: str
) -> Entity:
    """A thermostat: its setpoint is the `target_temp` command key of the topic contract.

    Climate command templates receive the new setpoint as `value` (climate.mqtt). The range
    and step of the setpoint are the device's command schema's (eQ-3: 4.5-30 in steps of 0.5),
    so Home Assistant never offers a setpoint the gateway would refuse. A device whose schema
    takes a ``mode`` of ``auto``/``manual`` (the eQ-3 thermostat) gets Home Assistant's
    ``auto`` (its own week programme) and ``heat`` (a fixed setpoint), sent as its ``mode``
    command; any other device only ``heat``: a mode Home Assistant cannot send would be a lie
    in the UI.
    """
    config: dict[str, Any] = {
        "name": None,
        "modes": ["heat"],
        "temperature_unit": "C",
        # Without a schema: radiator thermostats set half degrees (Home Assistant's default
        # step is 1 degree).
        "temp_step": 0.5,
        "temperature_command_topic": set_topic,
        "temperature_command_template": '{"' + TARGET_TEMP + '": {{ value }}}',
        "temperature_state_topic": state_topic,
        "temperature_state_template": _value_template((TARGET_TEMP,)),
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
    mode = schema.key("mode") if schema is not None else None
    modes = mode.get("enum") if mode is not None else None
    if isinstance(modes, list) and "auto" in modes and "manual" in modes:
        config["modes"] = ["auto", "heat"]
        config["mode_command_topic"] = set_topic
        config["mode_command_template"] = (
            "{\"mode\": \"{{ 'manual' if value == 'heat' else 'auto' }}\"}"
        )
        if "mode" in state:
            config["mode_state_topic"] = state_topic
            config["mode_state_template"] = (
                "{{ 'auto' if " + _ref(("mode",)) + " == 'auto' else 'heat' }}"
            )
    if "temperature" in state:
        config["current_temperature_topic"] = state_topic
        config["current_temperature_template"] = _value_template(("temperature",))
    return Entity("climate", "climate", config)


# --- messages ---------------------------------------------------------------------------------


def _device_block(
    device: Device,
    gateway_id: str,
    manufacturer: str | None,
    model: str | None,
    sw_version: str | None,
) -> dict[str, Any]:
    kind_manufacturer, kind_model = _KIND_INFO.get(device.kind, (None, None))
    block: dict[str, Any] = {
        "identifiers": [f"{gateway_id}_{device.id}"],
        "name": device.name or device.id,
    }
    if manufacturer or kind_manufacturer:
        block["manufacturer"] = manufacturer or kind_manufacturer
    if model or kind_model:
        block["model"] = model or kind_model
    if sw_version:
        block["sw_version"] = sw_version
    block["via_device"] = gateway_id
    return block


def _origin(origin_version: str | None) -> dict[str, str]:
    origin = {"name": ORIGIN_NAME}
    if origin_version:
        origin["sw_version"] = origin_version
    return origin


def discovery_configs(
    device: Device,
    state_keys: Mapping[str, object],
    *,
    prefix: str = "gw",
    discovery_prefix: str = "homeassistant",
    gateway_id: str = "edge-gateway",
    manufacturer: str | None = None,
    model: str | None = None,
    sw_version: str | None = None,
    origin_version: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, config object) per entity; `discovery_messages` encodes them."""
    entities, found = entities_of(device, state_keys, prefix=prefix)
    device_block = _device_block(
        device, gateway_id, manufacturer, model, sw_version or found.get("sw_version")
    )
    base = f"{prefix}/{device.id}"
    availability = [{"topic": f"{base}/availability"}, {"topic": f"{prefix}/bridge/state"}]
    out: list[tuple[str, dict[str, Any]]] = []
    for entity in entities:
        object_id = _object_id(device, entity.key)
        config: dict[str, Any] = {
            "unique_id": f"{gateway_id}_{device.id}_{entity.key}",
            "object_id": object_id,
            "state_topic": f"{base}/event" if entity.component == "event" else f"{base}/state",
            **entity.config,
            "availability": availability,
            "availability_mode": "all",
            # Commands are QoS 1 in the topic contract (DESIGN §2), and the broker keeps QoS 1
            # commands for sleeping devices; a QoS 0 command would be dropped.
            "qos": 1,
            "device": device_block,
            "origin": _origin(origin_version),
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
    manufacturer: str | None = None,
    model: str | None = None,
    sw_version: str | None = None,
    origin_version: str | None = None,
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
            manufacturer=manufacturer,
            model=model,
            sw_version=sw_version,
            origin_version=origin_version,
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
) -> list[Message]:
    """Empty retained payloads for the entities of `previous_keys` that `current_keys` lacks.

    With `current_keys` None the device is gone and every entity is removed.
    """
    kwargs = {"prefix": prefix, "discovery_prefix": discovery_prefix, "gateway_id": gateway_id}
    before = [t for t, _ in discovery_configs(device, previous_keys, **kwargs)]
    after = (
        set()
        if current_keys is None
        else {t for t, _ in discovery_configs(device, current_keys, **kwargs)}
    )
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
    origin_version: str | None = None,
) -> list[Message]:
    """The gateway's own device (the `via_device` of every device) with a connectivity sensor."""
    node = topic_level(gateway_id)
    config: dict[str, Any] = {
        "unique_id": f"{gateway_id}_bridge_state",
        "object_id": topic_level(f"{gateway_id}_bridge_state"),
        "name": "Connectivity",
        "device_class": "connectivity",
        "entity_category": DIAGNOSTIC,
        "state_topic": f"{prefix}/bridge/state",
        "payload_on": "online",
        "payload_off": "offline",
        "qos": 1,
        "device": {"identifiers": [gateway_id], "name": gateway_id, "model": ORIGIN_NAME},
        "origin": _origin(origin_version),
    }
    topic = f"{discovery_prefix}/binary_sensor/{node}/bridge_state/config"
    return [(topic, _json(config).encode())]


__all__ = [
    "Entity",
    "Message",
    "bridge_messages",
    "config_topic",
    "discovery_configs",
    "discovery_messages",
    "entities_of",
    "event_message",
    "removal_messages",
    "status_topic",
    "topic_level",
]
