"""Entities of Shelly Gen2+ devices: a switch, light or cover per component, and its meters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from devices.ble.bthome_objects import MEASUREMENT, TOTAL_INCREASING
from devices.homeassistant.entity import DIAGNOSTIC, SKIP_KEYS, Entity, topic_level
from devices.homeassistant.readings import generic_entity, rssi_entity
from devices.homeassistant.templates import (
    OFF,
    ON,
    humanize,
    on_off_template,
    ref,
    value_template,
)

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


@dataclass(frozen=True, slots=True)
class _Component:
    """One Shelly component as its entities address it; `id` None: the device's only one,
    whose values are flat in the state object."""

    id: str | None
    set_topic: str
    state_topic: str

    @property
    def main(self) -> bool:
        return self.id is None

    @property
    def name(self) -> str | None:
        # The main control of a single-component device carries the device's name: the MQTT
        # docs allow `name: null` "if only the device name is relevant".
        return None if self.id is None else humanize(self.id)

    def path(self, key: str) -> tuple[str, ...]:
        return (key,) if self.id is None else (self.id, key)

    def key(self, key: str) -> str:
        return key if self.id is None else topic_level(self.id.replace(":", "_")) + "_" + key

    def command(self, body: str) -> str:
        """A command object's JSON text, addressed to this component when there are several."""
        return body if self.id is None else '{"' + self.id + '": ' + body + "}"


def _switch(part: _Component) -> Entity:
    config = {
        "name": part.name,
        "command_topic": part.set_topic,
        "payload_on": part.command('{"on": true}'),
        "payload_off": part.command('{"on": false}'),
        "state_on": ON,
        "state_off": OFF,
        "value_template": on_off_template(part.path("on")),
    }
    return Entity("switch", part.key("on"), config, main=part.main)


def _light(part: _Component) -> Entity:
    # Shelly's brightness is a percentage; Home Assistant's template light speaks 0-255.
    # An "on" command never asks for 0 %, which Shelly would treat as dark.
    pct = "[1, (brightness * 100 / 255) | round | int] | max"
    config = {
        "name": part.name,
        "schema": "template",
        "command_topic": part.set_topic,
        "command_on_template": part.command(
            '{"on": true{% if brightness is defined %}, "brightness": {{ '
            + pct
            + " }}{% endif %}}",
        ),
        "command_off_template": part.command('{"on": false}'),
        "state_template": "{{ 'on' if " + ref(part.path("on")) + " else 'off' }}",
        "brightness_template": "{{ ("
        + ref(part.path("brightness"))
        + " * 255 / 100) | round | int }}",
    }
    return Entity("light", part.key("light"), config, main=part.main)


def _cover(part: _Component, values: Mapping[str, object]) -> Entity:
    flat = part.id is None
    config: dict[str, Any] = {
        "name": part.name,
        "command_topic": part.set_topic,
        "payload_open": part.command('{"cover": "open"}' if flat else '"open"'),
        "payload_close": part.command('{"cover": "close"}' if flat else '"close"'),
        "payload_stop": part.command('{"cover": "stop"}' if flat else '"stop"'),
        "value_template": value_template(part.path("cover")),
    }
    if "position" in values:
        # Shelly reports no position until the cover is calibrated; without one Home
        # Assistant must not offer a position slider.
        config.update(
            position_topic=part.state_topic,
            position_template=value_template(part.path("position")),
            set_position_topic=part.set_topic,
            set_position_template=part.command('{"position": {{ position }}}'),
        )
    return Entity("cover", part.key("cover"), config, main=part.main)


def _readings(part: _Component, values: Mapping[str, object], handled: set[str]) -> list[Entity]:
    entities: list[Entity] = []
    for key, value in values.items():
        if key in handled or key in SKIP_KEYS:
            continue
        path = part.path(key)
        if key == "rssi":
            entities.append(rssi_entity(path, part.key(key)))
        elif key in _SHELLY_METERS:
            meter = dict(_SHELLY_METERS[key])
            if part.id is not None:
                meter["name"] = f"{humanize(part.id)} {meter['name'].lower()}"
            meter["value_template"] = value_template(path)
            entities.append(Entity("sensor", part.key(key), meter))
        else:
            entity = generic_entity(path, part.key(key), value)
            if entity is not None:
                entities.append(entity)
    return entities


def _shelly_component(values: Mapping[str, object], part: _Component) -> list[Entity]:
    """The entities of one Shelly component: its switch, light or cover, then its readings."""
    entities: list[Entity] = []
    kind = _shelly_kind(values)
    if kind == "switch":
        entities.append(_switch(part))
    elif kind == "light":
        entities.append(_light(part))
    elif kind == "cover":
        entities.append(_cover(part, values))
    handled = {"on", "brightness", "cover", "position"} if kind else set()
    return entities + _readings(part, values, handled)


def shelly_entities(state: Mapping[str, object], set_topic: str, state_topic: str) -> list[Entity]:
    nested = {k: v for k, v in state.items() if ":" in k and isinstance(v, Mapping)}
    flat = {k: v for k, v in state.items() if k not in nested}
    entities = _shelly_component(flat, _Component(None, set_topic, state_topic))
    for component, values in nested.items():
        part = _Component(component, set_topic, state_topic)
        entities.extend(_shelly_component(values, part))
    return entities
