"""A device's command schema: a small JSON-Schema-like language and its one validator.

Each device kind declares the command object it accepts once (devices/ble/eq3.py,
devices/ble/gatt_profile.py, devices/lan/shelly.py, devices/lan/wled.py). The same
declaration refuses a bad command in the broker before it is queued (its device session sends
it in its CONNECT, gateway/broker/command_check.py), in the driver before the device is
touched, in the terminal UI's send dialog, and gives Home Assistant discovery its ranges,
steps and options. Standard library only: every layer may import it.

Keywords, with JSON Schema's meaning unless said otherwise:

    type            "object" "array" "string" "number" "integer" "boolean" "null", or a list
    enum            allowed values: strings, numbers, true, false, null (true is not 1)
    minimum maximum multipleOf                          numbers
    properties patternProperties additionalProperties   objects (additionalProperties: a
    minProperties                                       boolean only)
    items minItems maxItems                             arrays
    anyOf           valid if any of the schemas is
    exclusive       ours: a list of key groups; a command may set at most one key of each
    description     for people; ignored

NaN and the infinities are never valid: JSON has none, although Python's parser reads them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.commands.nodes import TYPES, Node, is_number, kind_of, show

# A command bigger than this is refused unread: a device command is a handful of keys, and the
# broker parses every command in its event loop.
MAX_COMMAND_BYTES = 65536
# Limits on a schema itself: it comes from trusted code, but also out of the store.
MAX_SCHEMA_CHARS = 32768
_MAX_DEPTH = 8
_MAX_MEMBERS = 256  # keys, patterns, enum values, anyOf alternatives, exclusive groups
_KEYWORDS = frozenset(
    {
        "type", "enum", "minimum", "maximum", "multipleOf", "properties", "patternProperties",
        "additionalProperties", "minProperties", "items", "minItems", "maxItems", "anyOf",
        "exclusive", "description",
    }
)  # fmt: skip


class SchemaError(ValueError):
    """A schema that cannot be used; the message starts with where in the schema."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a command payload was refused.

    ``reason`` is ``payload_format`` (not a JSON object: MQTT reason code 0x99) or
    ``invalid`` (an object the schema does not allow: 0x83); ``command`` is the parsed
    object when there was one.
    """

    reason: str
    detail: str
    command: object = None


# --- compiling --------------------------------------------------------------------------------


def _where(path: str) -> str:
    return path or "(schema)"


def _number(path: str, raw: object) -> float:
    if not is_number(raw):
        raise SchemaError(f"{_where(path)}: expected a number, got {show(raw)}")
    return raw  # type: ignore[return-value]


def _count(path: str, raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise SchemaError(f"{_where(path)}: expected a whole number >= 0, got {show(raw)}")
    return raw


def _members(path: str, raw: object, kind: type) -> list[object] | dict[object, object]:
    if not isinstance(raw, kind):
        expected = "a list" if kind is list else "an object"
        raise SchemaError(f"{_where(path)}: expected {expected}, got {show(raw)}")
    assert isinstance(raw, list | dict)
    if len(raw) > _MAX_MEMBERS:
        raise SchemaError(f"{_where(path)}: at most {_MAX_MEMBERS} members")
    return raw


# A schema object as json.loads made it (what isinstance(raw, dict) narrows an object to).
_Raw = dict[Any, Any]


def _compile(raw: object, path: str, depth: int) -> Node:
    if depth > _MAX_DEPTH:
        raise SchemaError(f"{_where(path)}: nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(raw, dict):
        raise SchemaError(f"{_where(path)}: a schema is an object, got {show(raw)}")
    unknown = sorted(str(k) for k in raw if k not in _KEYWORDS)
    if unknown:
        raise SchemaError(f"{_where(path)}: unknown keyword {unknown[0]!r}")
    node = Node()
    at = f"{path}." if path else ""
    # One family of keywords after the other, in this order: the first problem found is the
    # one reported.
    _compile_values(node, raw, at)
    _compile_object(node, raw, at, depth)
    _compile_array(node, raw, at, depth)
    _compile_combined(node, raw, at, depth)
    return node


def _compile_values(node: Node, raw: _Raw, at: str) -> None:
    """type, enum, and the number keywords."""
    if "type" in raw:
        types = raw["type"] if isinstance(raw["type"], list) else [raw["type"]]
        if not types or any(t not in TYPES for t in types):
            raise SchemaError(f"{at}type: expected one or more of {', '.join(TYPES)}")
        node.types = tuple(types)
    if "enum" in raw:
        values = _members(f"{at}enum", raw["enum"], list)
        for value in values:
            if not (value is None or isinstance(value, bool | str) or is_number(value)):
                raise SchemaError(f"{at}enum: only strings, numbers, true, false and null")
        if not values:
            raise SchemaError(f"{at}enum: at least one value")
        node.enum = tuple(values)
    if "minimum" in raw:
        node.minimum = _number(f"{at}minimum", raw["minimum"])
    if "maximum" in raw:
        node.maximum = _number(f"{at}maximum", raw["maximum"])
    if "multipleOf" in raw:
        node.step = _number(f"{at}multipleOf", raw["multipleOf"])
        if node.step <= 0:
            raise SchemaError(f"{at}multipleOf: expected a number > 0, got {show(node.step)}")


def _compile_object(node: Node, raw: _Raw, at: str, depth: int) -> None:
    if "properties" in raw:
        props = _members(f"{at}properties", raw["properties"], dict)
        assert isinstance(props, dict)
        node.properties = {
            str(key): _compile(sub, f"{at}properties.{key}", depth + 1)
            for key, sub in props.items()
        }
    if "patternProperties" in raw:
        patterns = _members(f"{at}patternProperties", raw["patternProperties"], dict)
        assert isinstance(patterns, dict)
        compiled = []
        for text, sub in patterns.items():
            try:
                pattern = re.compile(str(text))
            except re.error as exc:
                raise SchemaError(f"{at}patternProperties: {text!r}: {exc}") from None
            compiled.append((pattern, _compile(sub, f"{at}patternProperties.{text}", depth + 1)))
        node.patterns = tuple(compiled)
    if "additionalProperties" in raw:
        if not isinstance(raw["additionalProperties"], bool):
            raise SchemaError(f"{at}additionalProperties: expected true or false")
        node.additional = raw["additionalProperties"]
    if "minProperties" in raw:
        node.min_properties = _count(f"{at}minProperties", raw["minProperties"])


def _compile_array(node: Node, raw: _Raw, at: str, depth: int) -> None:
    if "items" in raw:
        node.items = _compile(raw["items"], f"{at}items", depth + 1)
    if "minItems" in raw:
        node.min_items = _count(f"{at}minItems", raw["minItems"])
    if "maxItems" in raw:
        node.max_items = _count(f"{at}maxItems", raw["maxItems"])


def _compile_combined(node: Node, raw: _Raw, at: str, depth: int) -> None:
    """anyOf, and our `exclusive` key groups."""
    if "anyOf" in raw:
        alternatives = _members(f"{at}anyOf", raw["anyOf"], list)
        if not alternatives:
            raise SchemaError(f"{at}anyOf: at least one schema")
        node.any_of = tuple(
            _compile(sub, f"{at}anyOf[{i}]", depth + 1) for i, sub in enumerate(alternatives)
        )
    if "exclusive" in raw:
        groups = _members(f"{at}exclusive", raw["exclusive"], list)
        for group in groups:
            if not isinstance(group, list) or not all(isinstance(k, str) for k in group):
                raise SchemaError(f"{at}exclusive: expected lists of key names")
        node.exclusive = tuple(tuple(group) for group in groups)  # type: ignore[arg-type]


class CommandSchema:
    """A compiled command schema. Equal schemas have equal `text`."""

    __slots__ = ("_root", "text")

    def __init__(self, text: str, root: Node) -> None:
        self.text = text  # compact JSON: what a device session sends in its CONNECT
        self._root = root

    @classmethod
    def from_data(cls, data: Mapping[str, object]) -> CommandSchema:
        """Compile a schema written as Python data; raises SchemaError."""
        try:
            text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SchemaError(f"(schema): not JSON data: {exc}") from None
        return cls.from_json(text)

    @classmethod
    def from_json(cls, text: str) -> CommandSchema:
        """Compile a schema's JSON text; raises SchemaError."""
        if len(text) > MAX_SCHEMA_CHARS:
            raise SchemaError(f"(schema): longer than {MAX_SCHEMA_CHARS} characters")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise SchemaError(f"(schema): not JSON: {exc}") from None
        root = _compile(data, "", 0)
        if root.types != ("object",):
            raise SchemaError('(schema): a command schema has "type": "object"')
        return cls(json.dumps(data, separators=(",", ":"), ensure_ascii=False), root)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CommandSchema) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"CommandSchema({self.text})"

    @property
    def data(self) -> dict[str, object]:
        """The schema as JSON data (a fresh copy)."""
        value = json.loads(self.text)
        assert isinstance(value, dict)
        return value

    @property
    def keys(self) -> tuple[str, ...]:
        """The command keys it names (pattern keys not included)."""
        return tuple(self._root.properties)

    def key(self, name: str) -> dict[str, object] | None:
        """The schema of one command key, as JSON data (for Home Assistant discovery)."""
        properties = self.data.get("properties")
        value = properties.get(name) if isinstance(properties, dict) else None
        return value if isinstance(value, dict) else None

    def problem(self, command: object) -> str | None:
        """Why ``command`` is not allowed, naming the key and what it may be; None if it is."""
        if not isinstance(command, dict):
            return f"a command is a JSON object, got {kind_of(command)}"
        return self._root.problem(command, "")

    def check_payload(self, payload: bytes) -> Rejection | None:
        """A command as it arrives over MQTT: why it is refused, or None."""
        if len(payload) > MAX_COMMAND_BYTES:
            return Rejection(
                "invalid", f"a command is at most {MAX_COMMAND_BYTES} bytes, got {len(payload)}"
            )
        try:
            command = json.loads(payload)
        except RecursionError:
            return Rejection("payload_format", "not JSON: nested too deeply")
        except ValueError as exc:  # also UnicodeDecodeError
            return Rejection("payload_format", f"not JSON: {exc}")
        if not isinstance(command, dict):
            kind = kind_of(command)
            return Rejection("payload_format", f"a command is a JSON object, got {kind}")
        problem = self._root.problem(command, "")
        return None if problem is None else Rejection("invalid", problem, command)
