"""Entities for plain readings: the signal strength, and state keys no protocol table
describes, known by their name or else by the type of their value."""

from __future__ import annotations

from typing import Any

from devices.ble.bthome_objects import MEASUREMENT, TOTAL_INCREASING
from devices.homeassistant.entity import DIAGNOSTIC, Entity
from devices.homeassistant.templates import (
    OFF,
    ON,
    humanize,
    on_off_template,
    value_template,
)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def rssi_entity(path: tuple[str, ...], key: str) -> Entity:
    return Entity(
        "sensor",
        key,
        {
            "name": "Signal strength",
            "device_class": "signal_strength",
            "unit_of_measurement": "dBm",
            "state_class": MEASUREMENT,
            "entity_category": DIAGNOSTIC,
            "value_template": value_template(path),
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


def generic_entity(path: tuple[str, ...], key: str, value: object) -> Entity | None:
    """An entity for a key no protocol table describes: by its name where `_READINGS` knows it,
    else by the type of its value. Every numeric reading gets a state_class, so Home Assistant
    keeps long-term statistics of it."""
    if isinstance(value, bool):
        name, device_class, diagnostic = _BINARY_READINGS.get(key, (humanize(key), None, False))
        config: dict[str, Any] = {"name": name}
        if device_class is not None:
            config["device_class"] = device_class
        config.update(payload_on=ON, payload_off=OFF, value_template=on_off_template(path))
        if diagnostic:
            config["entity_category"] = DIAGNOSTIC
        return Entity("binary_sensor", key, config)
    if is_number(value):
        reading = _READINGS.get(key)
        if reading is None:
            state_class = TOTAL_INCREASING if _energy_like(key) else MEASUREMENT
            reading = (humanize(key), None, None, state_class, False)
        name, device_class, unit, state_class, diagnostic = reading
        config = {"name": name}
        if device_class is not None:
            config["device_class"] = device_class
        if unit is not None:
            config["unit_of_measurement"] = unit
        config["state_class"] = state_class
        if diagnostic:
            config["entity_category"] = DIAGNOSTIC
        config["value_template"] = value_template(path)
        return Entity("sensor", key, config)
    if isinstance(value, str):
        return Entity(
            "sensor", key, {"name": humanize(key), "value_template": value_template(path)}
        )
    return None  # lists, objects, null: nothing Home Assistant can show as one state
