"""Tolerant readers of the admin API's JSON: every payload comes from the network, so a field
of the wrong type reads as its default (or None) instead of raising."""

from __future__ import annotations

import json
from collections.abc import Mapping


def read_str(obj: Mapping[str, object], key: str, default: str = "") -> str:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return default


def read_int(obj: Mapping[str, object], key: str, default: int = 0) -> int:
    value = obj.get(key)
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) < 2**53:
        return int(value)
    return default


def read_opt_float(obj: Mapping[str, object], key: str) -> float | None:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    as_float = float(value)
    if as_float != as_float or as_float in (float("inf"), float("-inf")):
        return None
    return as_float


def read_opt_int(obj: Mapping[str, object], key: str) -> int | None:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return read_int(obj, key)


def read_str_pairs(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        return ()
    return tuple(
        sorted((k, v) for k, v in value.items() if isinstance(k, str) and isinstance(v, str))
    )


def read_bool(obj: Mapping[str, object], key: str) -> bool:
    return obj.get(key) is True


def is_object(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def schema_text(value: object) -> str:
    # In the order the device declares its keys: messages about a command list them so.
    if not is_object(value):
        return ""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return ""
