"""Entities of WLED controllers: the light with its effects, and its presets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devices.homeassistant.entity import SKIP_KEYS, DeviceFacts, Entity
from devices.homeassistant.readings import generic_entity, rssi_entity
from devices.homeassistant.templates import compact_json, ref, value_template


def _names_by_number(names: Mapping[int, str]) -> str:
    return compact_json({str(number): name for number, name in names.items()})


def wled_entities(
    state: Mapping[str, object], set_topic: str, facts: DeviceFacts | None
) -> list[Entity]:
    # Effects and presets go by number to WLED and by name to Home Assistant: the names are
    # the device's own (/json/effects, /presets.json), read when it was identified.
    effects = list(facts.effects) if facts is not None else []
    presets = dict(facts.presets) if facts is not None else {}
    entities = [_light(state, set_topic, effects)]
    for key, value in state.items():
        if key in ("on", "brightness", "color", "effect") or key in SKIP_KEYS:
            continue
        if key == "rssi":
            entities.append(rssi_entity((key,), key))
            continue
        if key == "preset":
            entities.extend(_wled_presets(set_topic, presets))
            continue
        entity = generic_entity((key,), key, value)
        if entity is not None:
            entities.append(entity)
    return entities


def _light(state: Mapping[str, object], set_topic: str, effects: list[str]) -> Entity:
    on_template, off_template = _command_templates(effects)
    light: dict[str, Any] = {
        "name": None,
        "schema": "template",
        "command_topic": set_topic,
        "command_on_template": on_template,
        "command_off_template": off_template,
        "state_template": "{{ 'on' if " + ref(("on",)) + " else 'off' }}",
    }
    if "brightness" in state:
        light["brightness_template"] = value_template(("brightness",))
    if "color" in state:
        for i, channel in enumerate(("red", "green", "blue")):
            light[f"{channel}_template"] = "{{ " + ref(("color",)) + f"[{i}] }}}}"
    if effects:
        light["effect_list"] = effects
        if "effect" in state:
            light["effect_template"] = _effect_template(effects)
    return Entity("light", "light", light, main=True)


def _command_templates(effects: list[str]) -> tuple[str, str]:
    """The light's on and off command templates.

    WLED speaks 0-255 brightness like Home Assistant; its transition `tt` is in tenths of a
    second (devices/lan/wled.py), Home Assistant's in seconds.
    """
    effect_cmd = ""
    if effects:
        effect_cmd = (
            "{% if effect is defined and effect in " + compact_json(effects) + " %}"
            ', "effect": {{ ' + compact_json(effects) + ".index(effect) }}{% endif %}"
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
    return on_template, off_template


def _effect_template(effects: list[str]) -> str:
    """The effect's name from its number ('' for a number the device did not name)."""
    effect = ref(("effect",))
    return (
        "{{ "
        + compact_json(effects)
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


def _wled_presets(set_topic: str, presets: Mapping[int, str]) -> list[Entity]:
    """The active preset by name (``none`` while none is: never Python's ``None``), and a
    select to apply one by name. The driver always reports `preset`, null while no preset
    is active: the entities must not come and go with it."""
    ps = ref(("preset",))
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
    by_name = compact_json({name: number for number, name in presets.items()})
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
