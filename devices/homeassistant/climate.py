"""The climate entity of a thermostat, from its command schema (the eQ-3 and the demo)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devices.homeassistant.entity import TARGET_TEMP, Entity
from devices.homeassistant.readings import is_number
from devices.homeassistant.templates import ref, value_template
from gateway.commands.schema import CommandSchema


def _enum_of(schema: CommandSchema | None, key: str) -> list[str]:
    """The string values a command key takes ([] when the schema has no such enum)."""
    spec = schema.key(key) if schema is not None else None
    values = spec.get("enum") if spec is not None else None
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def climate_entity(
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
        "temperature_state_template": value_template((TARGET_TEMP,)),
        "mode_state_topic": state_topic,
    }
    config.update(_setpoint_limits(schema))
    config.update(_modes(schema, set_topic))
    config.update(_presets(schema, set_topic, state_topic))
    if "valve" in state:
        config["action_topic"] = state_topic
        config["action_template"] = "{{ 'heating' if " + ref(("valve",)) + " > 0 else 'idle' }}"
    if "temperature" in state:
        config["current_temperature_topic"] = state_topic
        config["current_temperature_template"] = value_template(("temperature",))
    return Entity("climate", "climate", config, main=True)


def _setpoint_limits(schema: CommandSchema | None) -> dict[str, Any]:
    setpoint = schema.key(TARGET_TEMP) if schema is not None else None
    if setpoint is None:
        return {}
    return {
        ha_key: setpoint[schema_key]
        for ha_key, schema_key in (
            ("min_temp", "minimum"),
            ("max_temp", "maximum"),
            ("temp_step", "multipleOf"),
        )
        if is_number(setpoint.get(schema_key))
    }


def _modes(schema: CommandSchema | None, set_topic: str) -> dict[str, Any]:
    modes = _enum_of(schema, "mode")
    if not ("auto" in modes and "manual" in modes):
        return {"modes": ["heat"], "mode_state_template": "{{ 'heat' }}"}
    return {
        "modes": ["auto", "heat"],
        "mode_command_topic": set_topic,
        "mode_command_template": ("{\"mode\": \"{{ 'manual' if value == 'heat' else 'auto' }}\"}"),
        # The eQ-3's vacation mode holds a fixed setpoint: heat.
        "mode_state_template": "{{ 'auto' if " + ref(("mode",)) + " == 'auto' else 'heat' }}",
    }


def _presets(schema: CommandSchema | None, set_topic: str, state_topic: str) -> dict[str, Any]:
    boost = schema is not None and schema.key("boost") is not None
    presets = [*_enum_of(schema, "preset"), *(["boost"] if boost else [])]
    if not presets:
        return {}
    config: dict[str, Any] = {
        "preset_modes": presets,
        "preset_mode_command_topic": set_topic,
        # Home Assistant adds a preset "none" of its own: with a boost switch it ends the
        # boost (as choosing another preset does); without one the gateway refuses it.
        "preset_mode_command_template": (
            '{% if value == "boost" %}{"boost": true}{% elif value == "none" %}'
            '{"boost": false}{% else %}{"preset": "{{ value }}", "boost": false}{% endif %}'
            if boost
            else '{"preset": "{{ value }}"}'
        ),
    }
    if boost:
        # The presets other than boost only set the setpoint once: the thermostat does
        # not remember them, so the state can only tell boost from none.
        config["preset_mode_state_topic"] = state_topic
        config["preset_mode_value_template"] = (
            "{{ 'boost' if " + ref(("boost",)) + " else 'none' }}"
        )
    return config
