"""The discovery messages of a device: its entities as config payloads on their topics, the
empty payloads that remove them, the events, and the gateway's own bridge device."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devices.ble.bthome_objects import MEASUREMENT
from devices.homeassistant.bthome import bthome_entities
from devices.homeassistant.climate import climate_entity
from devices.homeassistant.entity import (
    DIAGNOSTIC,
    SKIP_KEYS,
    TARGET_TEMP,
    DeviceFacts,
    Entity,
    Message,
    Origin,
    config_topic,
    slug,
    topic_level,
)
from devices.homeassistant.readings import generic_entity, rssi_entity
from devices.homeassistant.registry import (
    GATEWAY_MANUFACTURER,
    GATEWAY_MODEL,
    device_payload,
    origin_block,
)
from devices.homeassistant.shelly import shelly_entities
from devices.homeassistant.templates import compact_json
from devices.homeassistant.wled import wled_entities
from devices.model import Device


def _object_id(device: Device, entity: Entity) -> str:
    # Home Assistant derives the entity id from it (`sensor.kitchen_temperature`).
    return slug(device.id if entity.main else f"{device.id}_{entity.key}")


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
        entities = shelly_entities(state_keys, set_topic, state_topic)
    elif device.kind == "wled":
        entities = wled_entities(state_keys, set_topic, facts)
    elif device.kind == "bthome":
        entities, found = bthome_entities(state_keys)
    else:
        entities = _plain_entities(device, state_keys, set_topic, state_topic)
    if device.schema is not None and device.policy.persistent:
        entities.append(_pending(prefix, device))
    return entities, found


def _plain_entities(
    device: Device, state: Mapping[str, object], set_topic: str, state_topic: str
) -> list[Entity]:
    """A device of no family with a module of its own (eQ-3 and other thermostats, GATT and
    sleepy sensors): a climate entity when it has a setpoint, and its readings."""
    entities: list[Entity] = []
    schema = device.schema
    if TARGET_TEMP in state or (schema is not None and TARGET_TEMP in schema.keys):
        entities.append(climate_entity(state, schema, set_topic, state_topic))
    for key, value in state.items():
        if key in SKIP_KEYS:
            continue
        entity = rssi_entity((key,), key) if key == "rssi" else generic_entity((key,), key, value)
        if entity is not None:
            entities.append(entity)
    return entities


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
    device_block = device_payload(device, gateway_id, facts, found)
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
            "origin": origin_block(origin),
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
        (topic, compact_json(config).encode())
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
    return f"{prefix}/{device.id}/event", compact_json(dict(events)).encode()


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
        "origin": origin_block(origin),
    }
    topic = f"{discovery_prefix}/binary_sensor/{node}/bridge_state/config"
    return [(topic, compact_json(config).encode())]
