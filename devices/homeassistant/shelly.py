"""Entities of Shelly Gen2+ devices: a switch, light or cover per component, and its meters."""

from __future__ import annotations

from collections.abc import Mapping
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
    main_name = None if component is None else humanize(component)
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
                    "value_template": on_off_template((*base, "on")),
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
                    "state_template": "{{ 'on' if " + ref((*base, "on")) + " else 'off' }}",
                    "brightness_template": "{{ ("
                    + ref((*base, "brightness"))
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
            "value_template": value_template((*base, "cover")),
        }
        if "position" in values:
            # Shelly reports no position until the cover is calibrated; without one Home
            # Assistant must not offer a position slider.
            config.update(
                position_topic=state_topic,
                position_template=value_template((*base, "position")),
                set_position_topic=set_topic,
                set_position_template=_command(component, '{"position": {{ position }}}'),
            )
        entities.append(Entity("cover", f"{tail}cover", config, main=component is None))
    handled = {"on", "brightness", "cover", "position"} if kind else set()
    for key, value in values.items():
        if key in handled or key in SKIP_KEYS:
            continue
        path = (*base, key)
        if key == "rssi":
            entities.append(rssi_entity(path, f"{tail}{key}"))
        elif key in _SHELLY_METERS:
            meter = dict(_SHELLY_METERS[key])
            if component is not None:
                meter["name"] = f"{humanize(component)} {meter['name'].lower()}"
            meter["value_template"] = value_template(path)
            entities.append(Entity("sensor", f"{tail}{key}", meter))
        else:
            entity = generic_entity(path, f"{tail}{key}", value)
            if entity is not None:
                entities.append(entity)
    return entities


def shelly_entities(state: Mapping[str, object], set_topic: str, state_topic: str) -> list[Entity]:
    nested = {k: v for k, v in state.items() if ":" in k and isinstance(v, Mapping)}
    flat = {k: v for k, v in state.items() if k not in nested}
    entities = _shelly_component(flat, None, set_topic, state_topic)
    for component, values in nested.items():
        entities.extend(_shelly_component(values, component, set_topic, state_topic))
    return entities
