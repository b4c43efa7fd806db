"""Entities of BTHome v2 sensors, described by the BTHome object table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devices.ble.bthome_objects import (
    BUTTON_EVENTS,
    COMMAND_OPCODES,
    DIMMER_EVENTS,
    Kind,
    ObjectSpec,
    spec_for_key,
)
from devices.homeassistant.entity import DIAGNOSTIC, SKIP_KEYS, Entity
from devices.homeassistant.readings import generic_entity, rssi_entity
from devices.homeassistant.templates import (
    OFF,
    ON,
    on_off_template,
    ref,
    value_template,
)

# Readings that say how the device itself is doing rather than what it measures.
_DIAGNOSTIC_KEYS = frozenset({"battery", "battery_low"})

_EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "button": tuple(BUTTON_EVENTS.values()),
    "dimmer": tuple(DIMMER_EVENTS.values()),
    "command": tuple(COMMAND_OPCODES.values()),
}
# Event entity device classes (integrations/event): `button` for push buttons; a rotary dimmer
# or a remote command has no better class than none.
_EVENT_CLASS = {"button": "button"}


def bthome_entities(state: Mapping[str, object]) -> tuple[list[Entity], dict[str, str]]:
    entities: list[Entity] = []
    device_info: dict[str, str] = {}
    for key, value in state.items():
        if key in SKIP_KEYS:
            continue
        path = (key,)
        if key == "rssi":
            entities.append(rssi_entity(path, key))
            continue
        spec = spec_for_key(key)
        if spec is None:
            entity = generic_entity(path, key, value)
            if entity is not None:
                entities.append(entity)
            continue
        if spec.kind is Kind.DEVICE_INFO:
            if spec.key == "firmware_version" and isinstance(value, str):
                device_info["sw_version"] = value
            continue
        if spec.kind is Kind.PACKET_ID:
            continue
        entities.append(_object_entity(spec, key))
    return entities, device_info


def _object_entity(spec: ObjectSpec, key: str) -> Entity:
    """The entity of one BTHome object; `key` is the spec's key, with ``_2``... when the
    device sends several objects of the type."""
    path = (key,)
    suffix = key[len(spec.key) :].replace("_", " ")
    name = spec.name + suffix
    if spec.kind is Kind.EVENT:
        return _event_entity(spec, key, name)
    if spec.kind is Kind.BINARY:
        config: dict[str, Any] = {"name": name}
        if spec.device_class is not None:
            config["device_class"] = spec.device_class
        config.update(payload_on=ON, payload_off=OFF, value_template=on_off_template(path))
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
        config["value_template"] = value_template(path)
    if spec.key in _DIAGNOSTIC_KEYS:
        config["entity_category"] = DIAGNOSTIC
    return Entity("binary_sensor" if spec.kind is Kind.BINARY else "sensor", key, config)


def _event_entity(spec: ObjectSpec, key: str, name: str) -> Entity:
    path = (key,)
    config: dict[str, Any] = {
        "name": name,
        "event_types": list(_EVENT_TYPES[spec.key]),
        # Renders {} (ignored, per the event docs) for messages about other keys.
        "value_template": (
            "{% if " + ref(path) + " is defined %}"
            '{"event_type": "{{ ' + ref(path) + ' }}"}'
            "{% else %}{}{% endif %}"
        ),
    }
    if spec.key in _EVENT_CLASS:
        config["device_class"] = _EVENT_CLASS[spec.key]
    return Entity("event", key, config)
