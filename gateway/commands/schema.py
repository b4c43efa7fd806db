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
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

# A command bigger than this is refused unread: a device command is a handful of keys, and the
# broker parses every command in its event loop.
MAX_COMMAND_BYTES = 65536
# Limits on a schema itself: it comes from trusted code, but also out of the store.
MAX_SCHEMA_CHARS = 32768
_MAX_DEPTH = 8
_MAX_MEMBERS = 256  # keys, patterns, enum values, anyOf alternatives, exclusive groups
_GOT_WIDTH = 40  # characters of an offending value quoted in a message

# Home Assistant, the TUI and the drivers read multipleOf steps such as 0.1 that binary floats
# cannot hold exactly: 0.3 / 0.1 is 2.9999999999999996.
_STEP_TOLERANCE = 1e-9

_TYPES = ("boolean", "null", "string", "integer", "number", "array", "object")
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


# --- values -----------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _has_type(value: object, name: str) -> bool:
    if name == "number":
        return _is_number(value)
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    return isinstance(value, dict)


def _same(a: object, b: object) -> bool:
    """JSON equality of two scalars: 1 == 1.0, but true is not 1."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _is_multiple(value: float, step: float) -> bool:
    try:
        quotient = value / step
    except OverflowError:  # an integer too large for a float
        return False
    if not math.isfinite(quotient):
        return False
    return abs(quotient - round(quotient)) <= _STEP_TOLERANCE * max(1.0, abs(quotient))


def show(value: object) -> str:
    """A value as JSON text, cut short: for messages."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):  # not JSON data, or an integer of thousands of digits
        text = _kind_of(value)
    return text if len(text) <= _GOT_WIDTH else text[: _GOT_WIDTH - 1] + "…"


def number_text(value: float) -> str:
    """4.5 -> "4.5", 30.0 -> "30", 0.1 -> "0.1": as a person writes it."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


# --- compiled schema --------------------------------------------------------------------------


class _Node:
    """One compiled (sub)schema."""

    __slots__ = (
        "additional",
        "any_of",
        "enum",
        "exclusive",
        "items",
        "max_items",
        "maximum",
        "min_items",
        "min_properties",
        "minimum",
        "patterns",
        "properties",
        "step",
        "types",
    )

    def __init__(self) -> None:
        self.types: tuple[str, ...] | None = None
        self.enum: tuple[object, ...] | None = None
        self.minimum: float | None = None
        self.maximum: float | None = None
        self.step: float | None = None
        self.properties: dict[str, _Node] = {}
        self.patterns: tuple[tuple[re.Pattern[str], _Node], ...] = ()
        self.additional = True
        self.min_properties = 0
        self.items: _Node | None = None
        self.min_items = 0
        self.max_items: int | None = None
        self.any_of: tuple[_Node, ...] = ()
        self.exclusive: tuple[tuple[str, ...], ...] = ()

    # --- validation

    def problem(self, value: object, path: str) -> str | None:
        """Why ``value`` (at ``path``, "" for the command itself) is not allowed; None if it is."""
        if self.any_of:
            return self._any_of_problem(value, path)
        if isinstance(value, float) and not math.isfinite(value):
            return self._expected(value, path)
        if self.types is not None and not any(_has_type(value, t) for t in self.types):
            return self._expected(value, path)
        if self.enum is not None and not any(_same(value, e) for e in self.enum):
            return self._expected(value, path)
        if _is_number(value) and not self._number_ok(value):  # type: ignore[arg-type]
            return self._expected(value, path)
        if isinstance(value, dict):
            return self._object_problem(value, path)
        if isinstance(value, list):
            return self._array_problem(value, path)
        return None

    def _number_ok(self, value: float) -> bool:
        if self.minimum is not None and value < self.minimum:
            return False
        if self.maximum is not None and value > self.maximum:
            return False
        return self.step is None or _is_multiple(value, self.step)

    def _expected(self, value: object, path: str) -> str:
        return f"{_at(path)}expected {self.describe()}, got {show(value)}"

    def _any_of_problem(self, value: object, path: str) -> str | None:
        problems = []
        for alternative in self.any_of:
            problem = alternative.problem(value, path)
            if problem is None:
                return None
            if alternative.could_be(value):
                problems.append(problem)
        # Where one alternative is of the value's kind, its own complaint says most.
        return problems[0] if len(problems) == 1 else self._expected(value, path)

    def could_be(self, value: object) -> bool:
        """Is ``value`` of a kind this schema allows (whatever its contents)?"""
        if self.any_of:
            return any(a.could_be(value) for a in self.any_of)
        if self.types is not None:
            return any(_has_type(value, t) for t in self.types)
        if self.enum is not None:
            return any(_kind_of(value) == _kind_of(e) for e in self.enum)
        return True

    def _object_problem(self, value: dict[object, object], path: str) -> str | None:
        if len(value) < self.min_properties:
            what = "command" if not path else "object"
            if not value:
                return f"{_at(path)}empty {what}; keys: {self.key_list()}"
            return f"{_at(path)}at least {self.min_properties} keys; keys: {self.key_list()}"
        schemas: list[tuple[str, _Node]] = []
        for key in value:
            if not isinstance(key, str):  # never from JSON; a caller's own dict may
                return f"{_at(path)}keys are strings, got {show(key)}"
            node = self.node_of(key)
            if node is None:
                if not self.additional:
                    return f"{_join(path, key)}: unknown key; keys: {self.key_list()}"
                continue
            schemas.append((key, node))
        for group in self.exclusive:
            present = [key for key in group if key in value]
            if len(present) > 1:
                return f"{_join(path, present[0])}: give only one of {', '.join(group)}"
        for key, node in schemas:
            problem = node.problem(value[key], _join(path, key))
            if problem is not None:
                return problem
        return None

    def node_of(self, key: str) -> _Node | None:
        node = self.properties.get(key)
        if node is not None:
            return node
        for pattern, pattern_node in self.patterns:
            if pattern.search(key):
                return pattern_node
        return None

    def key_list(self) -> str:
        names = [*self.properties, *(_pattern_name(p) for p, _ in self.patterns)]
        return ", ".join(names) if names else "none"

    def _array_problem(self, value: list[object], path: str) -> str | None:
        if len(value) < self.min_items or (
            self.max_items is not None and len(value) > self.max_items
        ):
            return self._expected(value, path)
        if self.items is not None:
            for i, item in enumerate(value):
                problem = self.items.problem(item, f"{path}[{i}]")
                if problem is not None:
                    return problem
        return None

    # --- descriptions for people

    def describe(self) -> str:
        if self.any_of:
            return " or ".join(a.describe() for a in self.any_of)
        if self.enum is not None:
            if len(self.enum) == 1:
                return show(self.enum[0])
            if all(isinstance(e, str) for e in self.enum):
                return "one of " + ", ".join(str(e) for e in self.enum)
            return "one of " + ", ".join(show(e) for e in self.enum)
        if self.types is None:
            return "an object" if self.properties or self.patterns else "any value"
        return " or ".join(self._describe_type(t) for t in _TYPES if t in self.types)

    def _describe_type(self, name: str) -> str:
        if name == "boolean":
            return "true or false"
        if name == "null":
            return "null"
        if name == "string":
            return "a string"
        if name in ("number", "integer"):
            whole = name == "integer" or self.step == 1
            return ("a whole number" if whole else "a number") + self._range()
        if name == "array":
            return self._describe_list()
        return "an object"

    def _range(self) -> str:
        low, high, step = self.minimum, self.maximum, self.step
        text = ""
        if low is not None and high is not None:
            dash = "-" if low >= 0 else " to "  # "-10--5" would be hard to read
            text = f" {number_text(low)}{dash}{number_text(high)}"
        elif low is not None:
            text = f" >= {number_text(low)}"
        elif high is not None:
            text = f" <= {number_text(high)}"
        if step is not None and step != 1:
            text += f" in steps of {number_text(step)}"
        return text

    def _describe_list(self) -> str:
        low, high = self.min_items, self.max_items
        if high is None:
            count = f"{low} or more " if low else ""
        elif low == high:
            count = f"{low} "
        else:
            count = f"{low} to {high} "
        each = "" if self.items is None else f", each {self.items.describe()}"
        return f"a list of {count}items{each}"


def _at(path: str) -> str:
    return f"{path}: " if path else ""


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_:-]{1,40}")


def _join(path: str, key: str) -> str:
    # A key from a command goes into logs and reason strings: anything unusual is quoted.
    name = key if _PLAIN_KEY.fullmatch(key) else show(key)
    return f"{path}.{name}" if path else name


def _pattern_name(pattern: re.Pattern[str]) -> str:
    return pattern.pattern.removeprefix("^").removesuffix("$")


# --- compiling --------------------------------------------------------------------------------


def _where(path: str) -> str:
    return path or "(schema)"


def _number(path: str, raw: object) -> float:
    if not _is_number(raw):
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


def _compile(raw: object, path: str, depth: int) -> _Node:
    if depth > _MAX_DEPTH:
        raise SchemaError(f"{_where(path)}: nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(raw, dict):
        raise SchemaError(f"{_where(path)}: a schema is an object, got {show(raw)}")
    unknown = sorted(str(k) for k in raw if k not in _KEYWORDS)
    if unknown:
        raise SchemaError(f"{_where(path)}: unknown keyword {unknown[0]!r}")
    node = _Node()
    at = f"{path}." if path else ""
    if "type" in raw:
        types = raw["type"] if isinstance(raw["type"], list) else [raw["type"]]
        if not types or any(t not in _TYPES for t in types):
            raise SchemaError(f"{at}type: expected one or more of {', '.join(_TYPES)}")
        node.types = tuple(types)
    if "enum" in raw:
        values = _members(f"{at}enum", raw["enum"], list)
        for value in values:
            if not (value is None or isinstance(value, bool | str) or _is_number(value)):
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
    if "items" in raw:
        node.items = _compile(raw["items"], f"{at}items", depth + 1)
    if "minItems" in raw:
        node.min_items = _count(f"{at}minItems", raw["minItems"])
    if "maxItems" in raw:
        node.max_items = _count(f"{at}maxItems", raw["maxItems"])
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
    return node


class CommandSchema:
    """A compiled command schema. Equal schemas have equal `text`."""

    __slots__ = ("_root", "text")

    def __init__(self, text: str, root: _Node) -> None:
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
            return f"a command is a JSON object, got {_kind_of(command)}"
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
            kind = _kind_of(command)
            return Rejection("payload_format", f"a command is a JSON object, got {kind}")
        problem = self._root.problem(command, "")
        return None if problem is None else Rejection("invalid", problem, command)
