"""What the send-command dialog shows about a device's commands: one line per key, and an
example the device's schema accepts (checked with the schema itself, so it is never wrong)."""

from __future__ import annotations

import json
import math

from gateway.commands.schema import CommandSchema

MAX_KEY_LINES = 6


def _types(spec: dict[str, object]) -> tuple[str, ...]:
    kind = spec.get("type")
    if isinstance(kind, str):
        return (kind,)
    if isinstance(kind, list):
        return tuple(k for k in kind if isinstance(k, str))
    return ()


def _bound(spec: dict[str, object], *names: str) -> float | None:
    for name in names:
        value = spec.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _number(spec: dict[str, object], integer: bool) -> float | int:
    low = _bound(spec, "minimum", "exclusiveMinimum")
    high = _bound(spec, "maximum", "exclusiveMaximum")
    if low is not None and high is not None:
        value = (low + high) / 2
    else:
        value = low if low is not None else high if high is not None else 1.0
    step = _bound(spec, "multipleOf")
    if step:
        value = math.floor(value / step) * step
        if low is not None and value <= low:
            value += step
    if integer or value == int(value):
        return int(value)
    return round(value, 6)


def candidate(spec: dict[str, object]) -> object:
    """A value that probably fits `spec` (the schema decides)."""
    for word in ("enum", "examples"):
        choices = spec.get(word)
        if isinstance(choices, list) and choices:
            return choices[0]
    if "const" in spec:
        return spec["const"]
    types = _types(spec)
    if "boolean" in types:
        return True
    if "integer" in types or "number" in types:
        return _number(spec, "number" not in types)
    if "string" in types:
        return "text"
    return None


def example(schema: CommandSchema) -> str:
    """A command the schema accepts, as compact JSON, with up to two of its keys; "" if none
    could be made (a schema of pattern keys only)."""
    command: dict[str, object] = {}
    # A setpoint or level first: what a user most often sends, and what shows the range.
    numeric = [k for k in schema.keys if {"number", "integer"} & set(_types(schema.key(k) or {}))]
    others = [k for k in schema.keys if k not in numeric]
    keys = numeric[:1] + others + numeric[1:]
    for key in keys:
        spec = schema.key(key) or {}
        value = candidate(spec)
        if value is None:
            continue
        trial = {**command, key: value}
        if schema.problem(trial) is None:
            command = trial
        elif not command and schema.problem({key: value}) is None:
            command = {key: value}
        if len(command) == 2:
            break
    if not command or schema.problem(command) is not None:
        return ""
    return json.dumps(command, separators=(", ", ": "))


def describe(spec: dict[str, object]) -> str:
    """One key's values in a few words: "auto | manual", "number 4.5..30 step 0.5"."""
    choices = spec.get("enum")
    if isinstance(choices, list) and choices:
        return " | ".join(json.dumps(c) if not isinstance(c, str) else c for c in choices)
    types = _types(spec)
    if "boolean" in types:
        return "true | false"
    if "integer" in types or "number" in types:
        text = "integer" if "number" not in types else "number"
        low, high = _bound(spec, "minimum"), _bound(spec, "maximum")
        if low is not None or high is not None:
            text += f" {'' if low is None else f'{low:g}'}..{'' if high is None else f'{high:g}'}"
        step = _bound(spec, "multipleOf")
        return f"{text} step {step:g}" if step else text
    if "object" in types:
        return "object"
    return "/".join(types) or "any"


def key_lines(schema: CommandSchema) -> list[str]:
    keys = schema.keys
    width = max((len(k) for k in keys[:MAX_KEY_LINES]), default=0)
    lines = [f"  {k.ljust(width)}  {describe(schema.key(k) or {})}" for k in keys[:MAX_KEY_LINES]]
    if len(keys) > MAX_KEY_LINES:
        lines.append(f"  … and {len(keys) - MAX_KEY_LINES} more (Enter on the device shows all)")
    return lines
