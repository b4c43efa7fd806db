"""A GATT device's command set declared in config.yaml (devices.gatt_profiles.<name>).

Each command key of a JSON command maps to one write: a characteristic, a payload template
(hex bytes with at most one placeholder for the command's value), and optionally a
confirmation by notification or read-back. `profile_from_config` builds a
`ConfiguredProfile` from the plain data YAML gives and refuses anything it cannot make sense of
with a `ProfileError` whose message starts with the key path inside the profile
(``commands.open.payload: ...``), so the config loader can prefix the file and full path.

Placeholders: ``{u8} {i8} {u16le} {u16be} {i16le} {i16be} {u32le} {u32be} {i32le} {f32le}``
(the command's value, times ``scale``; ``true``/``false`` are 1/0) and ``{raw}`` (the hex
that ``values`` gives for the command's value). A payload without a placeholder is a trigger:
the command's value must be ``true``.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.commands.schema import CommandSchema
from gateway.devicetypes.gatt_ops import CommandError, Confirmation, GattStep

# struct formats of the numeric placeholders.
NUMERIC_PLACEHOLDERS: dict[str, str] = {
    "u8": "<B",
    "i8": "<b",
    "u16le": "<H",
    "u16be": ">H",
    "i16le": "<h",
    "i16be": ">h",
    "u32le": "<I",
    "u32be": ">I",
    "i32le": "<i",
    "f32le": "<f",
}
PLACEHOLDERS: tuple[str, ...] = (*NUMERIC_PLACEHOLDERS, "raw")
COMMAND_KEYS = ("char", "payload", "values", "scale", "min", "max", "response", "confirm")
CONFIRM_KEYS = ("notify", "read", "expect", "timeout")
MAX_TIMEOUT = 300.0

_BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"
_FULL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SHORT_UUID = re.compile(r"^([0-9a-f]{4}|[0-9a-f]{8})$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_F32_MAX = struct.unpack("<f", bytes.fromhex("ffff7f7f"))[0]

JsonKey = bool | int | str


class ProfileError(ValueError):
    """A profile in config that cannot be used; ``path`` is the key path inside the profile."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}" if path else detail)
        self.path = path
        self.detail = detail


def _int_range(placeholder: str) -> tuple[int, int]:
    bits = struct.calcsize(NUMERIC_PLACEHOLDERS[placeholder]) * 8
    if placeholder.startswith("u"):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _json(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _tidy(bound: float) -> float:
    # 255 / 10 is 25.5, but it is also where 25.500000000000004 would come from: an integral
    # bound stays an integer, so that it reads well in messages and Home Assistant.
    return int(bound) if float(bound).is_integer() and abs(bound) < 2**53 else bound


def _same_json(a: object, b: object) -> bool:
    # In Python True == 1; in a JSON command they are different values.
    return isinstance(a, bool) == isinstance(b, bool) and a == b


@dataclass(frozen=True, slots=True)
class GattCommandSpec:
    """How one command key is written: ``prefix + <value> + suffix`` to ``char``."""

    key: str
    char: str
    prefix: bytes
    placeholder: str | None = None  # one of PLACEHOLDERS; None: a fixed payload
    suffix: bytes = b""
    values: tuple[tuple[JsonKey, bytes], ...] = ()  # for {raw}
    scale: float = 1.0
    min: float | None = None
    max: float | None = None
    response: bool = True
    confirm_notify: str | None = None
    confirm_read: str | None = None
    expect: bytes | None = None  # prefix the confirming value must start with
    timeout: float = 5.0

    def encode(self, value: object) -> bytes:
        """The bytes written for ``value``, a value `value_schema` allows (the profile's
        `plan` checks); raises `CommandError` naming the key only if it does not fit."""
        return self.prefix + self._value_bytes(value) + self.suffix

    def _value_bytes(self, value: object) -> bytes:
        placeholder = self.placeholder
        if placeholder is None:
            return b""
        if placeholder == "raw":
            for known, data in self.values:
                if _same_json(known, value):
                    return data
            raise CommandError(f"{self.key}: {_json(value)} is none of the values")
        fmt = NUMERIC_PLACEHOLDERS[placeholder]
        if isinstance(value, bool):
            return struct.pack(fmt, int(value))
        assert isinstance(value, int | float)
        try:
            scaled = value * self.scale
            return struct.pack(fmt, scaled if placeholder == "f32le" else round(scaled))
        except (OverflowError, ValueError, struct.error):
            # Only a value at the very edge of the schema's range, after float rounding.
            raise CommandError(
                f"{self.key}: {_json(value)} * scale {self.scale:g} does not fit {{{placeholder}}}"
            ) from None

    def value_schema(self) -> dict[str, object]:
        """What the command's value may be: the payload's placeholder, scale, min and max
        as a command schema (gateway/commands/schema.py)."""
        placeholder = self.placeholder
        if placeholder is None:
            return {"enum": [True]}  # a trigger
        if placeholder == "raw":
            return {"enum": [known for known, _ in self.values]}
        low, high = self._value_range(placeholder)
        integral = placeholder != "f32le"
        schema: dict[str, object] = {
            # true and false are written as 1 and 0 (documented in config.yaml).
            "type": ["boolean", "integer" if integral and self.scale == 1 else "number"],
            "minimum": low,
            "maximum": high,
        }
        if integral and self.scale != 1:
            schema["multipleOf"] = 1 / abs(self.scale)
        return schema

    def _value_range(self, placeholder: str) -> tuple[float, float]:
        """The values whose scaled form fits the placeholder, within min and max."""
        if placeholder == "f32le":
            lowest, highest = -_F32_MAX, _F32_MAX
        else:
            lowest, highest = _int_range(placeholder)
        ends = sorted((lowest / self.scale, highest / self.scale))
        low = ends[0] if self.min is None else max(ends[0], self.min)
        high = ends[1] if self.max is None else min(ends[1], self.max)
        return _tidy(low), _tidy(high)

    def step(self, value: object) -> GattStep:
        data = self.encode(value)
        confirm: Confirmation | None = None
        if self.confirm_notify is not None or self.confirm_read is not None:
            confirm = Confirmation(
                self._acceptor(data),
                notify=self.confirm_notify,
                read=self.confirm_read,
                timeout=self.timeout,
            )
        return GattStep(self.char, data, response=self.response, confirm=confirm)

    def _acceptor(self, written: bytes) -> Callable[[bytes], bool]:
        expect = self.expect
        if expect is not None:
            return lambda answer: answer.startswith(expect)
        if self.confirm_read is not None:
            # Read-back without an expectation: the characteristic holds what was written.
            return lambda answer: answer == written
        return lambda answer: True


@dataclass(frozen=True, slots=True)
class ConfiguredProfile:
    """A command set from config (implements `gatt_ops.GattProfile`); reports no state."""

    commands: tuple[GattCommandSpec, ...]
    schema: CommandSchema = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not self.commands:
            raise ProfileError("commands", "a profile needs at least one command")
        keys = [spec.key for spec in self.commands]
        if len(set(keys)) != len(keys):
            raise ProfileError("commands", "command keys must be unique")
        # The one description of this device's commands (the broker, the plan, the TUI).
        schema = CommandSchema.from_data(
            {
                "type": "object",
                "properties": {spec.key: spec.value_schema() for spec in self.commands},
                "additionalProperties": False,
                "minProperties": 1,
            }
        )
        object.__setattr__(self, "schema", schema)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(spec.key for spec in self.commands)

    @property
    def notify_chars(self) -> tuple[str, ...]:
        chars = (spec.confirm_notify for spec in self.commands if spec.confirm_notify)
        return tuple(dict.fromkeys(chars))

    def plan(self, command: Mapping[str, object]) -> list[GattStep]:
        """One step per key, in the order the profile declares its commands."""
        problem = self.schema.problem(dict(command))
        if problem is not None:
            raise CommandError(problem)
        return [spec.step(command[spec.key]) for spec in self.commands if spec.key in command]

    def refresh(self) -> list[GattStep]:
        return []  # a declared profile has no status request

    def state(self, notification: bytes) -> dict[str, object] | None:
        return None


# ---------------------------------------------------------------------------- from config


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return _json(value)


def _key_name(key: JsonKey) -> str:
    # As the key is written in YAML (true, 3, open), so that the loader finds its line.
    return key if isinstance(key, str) else _json(key)


def _mapping(path: str, raw: object, allowed: tuple[str, ...]) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise ProfileError(path, f"expected a mapping of keys, got {_show(raw)}")
    for key in raw:
        if not isinstance(key, str):
            raise ProfileError(path, f"keys must be strings, got {_show(key)}")
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise ProfileError(where, f"unknown key {key!r}; valid keys here: {', '.join(allowed)}")
    return raw


def normalize_uuid(value: str) -> str | None:
    """The full lower-case 128-bit form of a UUID (16/32-bit short forms expanded), or None."""
    text = value.strip().lower()
    if _FULL_UUID.match(text):
        return text
    if _SHORT_UUID.match(text):
        return text.rjust(8, "0") + _BASE_UUID_TAIL
    return None


def _uuid(path: str, raw: object) -> str:
    uuid = normalize_uuid(raw) if isinstance(raw, str) else None
    if uuid is None:
        hint = " (in quotes: YAML reads bare digits as a number)" if isinstance(raw, int) else ""
        raise ProfileError(
            path,
            "expected a characteristic UUID: 128-bit "
            f"(0000fff1-0000-1000-8000-00805f9b34fb) or 16-bit (fff1){hint}, got {_show(raw)}",
        )
    return uuid


def _hex(path: str, raw: object, *, allow_empty: bool = True) -> bytes:
    problem = None
    if not isinstance(raw, str):
        problem = "(in quotes: YAML reads bare digits as a number) "
    else:
        try:
            data = bytes.fromhex("".join(raw.split()))
        except ValueError:
            problem = ""
        else:
            if data or allow_empty:
                return data
            problem = "(at least one byte) "
    raise ProfileError(path, f'expected hex bytes such as "01 ff" {problem}got {_show(raw)}')


def _number(path: str, raw: object) -> float:
    try:
        number = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
    except OverflowError:  # an integer too large for a float
        number = None
    if number is None or not math.isfinite(number):
        raise ProfileError(path, f"expected a number, got {_show(raw)}")
    return number


def _payload(path: str, raw: object) -> tuple[bytes, str | None, bytes]:
    if not isinstance(raw, str):
        raise ProfileError(
            path,
            f'expected hex bytes and at most one placeholder, such as "57 01 {{u8}}" (in '
            f"quotes), got {_show(raw)}",
        )
    found = list(_PLACEHOLDER.finditer(raw))
    if len(found) > 1:
        raise ProfileError(path, f"at most one placeholder, got {len(found)}: {raw!r}")
    placeholder = None
    before, after = raw, ""
    if found:
        match = found[0]
        placeholder = match.group(1).strip()
        if placeholder not in PLACEHOLDERS:
            names = " ".join(f"{{{name}}}" for name in PLACEHOLDERS)
            raise ProfileError(path, f"unknown placeholder {match.group(0)}; known: {names}")
        before, after = raw[: match.start()], raw[match.end() :]
    parts: list[bytes] = []
    for text in (before, after):
        try:
            parts.append(bytes.fromhex("".join(text.split())))
        except ValueError:
            raise ProfileError(
                path,
                "expected hex bytes (spaces ignored) and at most one placeholder such as "
                f"{{u8}}, got {raw!r}",
            ) from None
    prefix, suffix = parts
    if placeholder is None and not prefix:
        raise ProfileError(path, "an empty payload writes nothing")
    return prefix, placeholder, suffix


def _values(path: str, raw: object) -> tuple[tuple[JsonKey, bytes], ...]:
    if not isinstance(raw, dict) or not raw:
        raise ProfileError(path, f"expected a mapping of command value to hex, got {_show(raw)}")
    result: list[tuple[JsonKey, bytes]] = []
    for key, data in raw.items():
        if not isinstance(key, bool | int | str):
            raise ProfileError(path, f"values must be true, false, numbers or strings: {key!r}")
        result.append((key, _hex(f"{path}.{_key_name(key)}", data)))
    return tuple(result)


def _command(path: str, key: str, raw: object) -> GattCommandSpec:
    spec = _mapping(path, raw, COMMAND_KEYS)
    for required in ("char", "payload"):
        if required not in spec:
            raise ProfileError(f"{path}.{required}", "required")
    char = _uuid(f"{path}.char", spec["char"])
    prefix, placeholder, suffix = _payload(f"{path}.payload", spec["payload"])

    values: tuple[tuple[JsonKey, bytes], ...] = ()
    if "values" in spec:
        if placeholder != "raw":
            raise ProfileError(f"{path}.values", "only for a payload with the {raw} placeholder")
        values = _values(f"{path}.values", spec["values"])
    elif placeholder == "raw":
        raise ProfileError(f"{path}.values", "required by the {raw} placeholder of the payload")

    scale, low, high = _numeric_bounds(path, spec, placeholder)
    response = spec.get("response", True)
    if not isinstance(response, bool):
        raise ProfileError(f"{path}.response", f"expected true or false, got {_show(response)}")
    notify, read, expect, timeout = _confirmation(path, spec)
    return GattCommandSpec(
        key=key,
        char=char,
        prefix=prefix,
        placeholder=placeholder,
        suffix=suffix,
        values=values,
        scale=scale,
        min=low,
        max=high,
        response=response,
        confirm_notify=notify,
        confirm_read=read,
        expect=expect,
        timeout=timeout,
    )


def _numeric_bounds(
    path: str, spec: dict[str, object], placeholder: str | None
) -> tuple[float, float | None, float | None]:
    """``scale``, ``min`` and ``max`` of a command, checked against its placeholder."""
    numeric = placeholder in NUMERIC_PLACEHOLDERS
    for numeric_key in ("scale", "min", "max"):
        if numeric_key in spec and not numeric:
            raise ProfileError(
                f"{path}.{numeric_key}",
                "only for a payload with a numeric placeholder such as {u8}",
            )
    scale = _number(f"{path}.scale", spec["scale"]) if "scale" in spec else 1.0
    if scale == 0:
        raise ProfileError(f"{path}.scale", "expected a number other than 0, got 0")
    low = _number(f"{path}.min", spec["min"]) if "min" in spec else None
    high = _number(f"{path}.max", spec["max"]) if "max" in spec else None
    if low is not None and high is not None and low > high:
        raise ProfileError(f"{path}.max", f"expected a number >= min ({low:g}), got {high:g}")
    if numeric and placeholder != "f32le":
        assert placeholder is not None
        lowest, highest = _int_range(placeholder)
        for bound_key, bound in (("min", low), ("max", high)):
            if bound is not None and not lowest <= bound * scale <= highest:
                raise ProfileError(
                    f"{path}.{bound_key}",
                    f"{bound:g} * scale {scale:g} does not fit {{{placeholder}}} "
                    f"({lowest}-{highest})",
                )
    return scale, low, high


def _confirmation(
    path: str, spec: dict[str, object]
) -> tuple[str | None, str | None, bytes | None, float]:
    """The ``confirm`` of a command: (notify, read, expect, timeout)."""
    notify = read = None
    expect = None
    timeout = 5.0
    if "confirm" in spec:
        cpath = f"{path}.confirm"
        confirm = _mapping(cpath, spec["confirm"], CONFIRM_KEYS)
        if ("notify" in confirm) == ("read" in confirm):
            raise ProfileError(cpath, "expected exactly one of notify, read (a UUID)")
        if "notify" in confirm:
            notify = _uuid(f"{cpath}.notify", confirm["notify"])
        else:
            read = _uuid(f"{cpath}.read", confirm["read"])
        if "expect" in confirm:
            expect = _hex(f"{cpath}.expect", confirm["expect"], allow_empty=False)
        if "timeout" in confirm:
            timeout = _number(f"{cpath}.timeout", confirm["timeout"])
            if not 0 < timeout <= MAX_TIMEOUT:
                raise ProfileError(
                    f"{cpath}.timeout",
                    f"expected seconds > 0 and <= {MAX_TIMEOUT:g}, got {timeout:g}",
                )
    return notify, read, expect, timeout


def profile_from_config(raw: object) -> ConfiguredProfile:
    """Build a profile from its config data (``{"commands": {...}}``); raises ProfileError."""
    profile = _mapping("", raw, ("commands",))
    commands = profile.get("commands")
    if not isinstance(commands, dict) or not commands:
        raise ProfileError(
            "commands",
            f"expected a mapping of command keys, at least one, got {_show(commands)}",
        )
    specs: list[GattCommandSpec] = []
    for key, spec in commands.items():
        if not isinstance(key, str) or not key:
            hint = ""
            if isinstance(key, bool):
                hint = " (quote it: YAML reads on/off/yes/no as true/false)"
            raise ProfileError("commands", f"command keys must be strings, got {_show(key)}{hint}")
        specs.append(_command(f"commands.{key}", key, spec))
    return ConfiguredProfile(tuple(specs))
