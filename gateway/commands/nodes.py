"""A compiled command schema: the tree of checks a command goes through, and the words
that say what a value may be (gateway/commands/schema.py compiles it)."""

from __future__ import annotations

import json
import math
import re

_GOT_WIDTH = 40  # characters of an offending value quoted in a message

# Home Assistant, the TUI and the drivers read multipleOf steps such as 0.1 that binary floats
# cannot hold exactly: 0.3 / 0.1 is 2.9999999999999996.
_STEP_TOLERANCE = 1e-9

TYPES = ("boolean", "null", "string", "integer", "number", "array", "object")


# --- values -----------------------------------------------------------------------------------


def is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def has_type(value: object, name: str) -> bool:
    if name == "number":
        return is_number(value)
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


def same(a: object, b: object) -> bool:
    """JSON equality of two scalars: 1 == 1.0, but true is not 1."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def is_multiple(value: float, step: float) -> bool:
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
        text = kind_of(value)
    return text if len(text) <= _GOT_WIDTH else text[: _GOT_WIDTH - 1] + "…"


def number_text(value: float) -> str:
    """4.5 -> "4.5", 30.0 -> "30", 0.1 -> "0.1": as a person writes it."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def kind_of(value: object) -> str:
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


class Node:
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
        self.properties: dict[str, Node] = {}
        self.patterns: tuple[tuple[re.Pattern[str], Node], ...] = ()
        self.additional = True
        self.min_properties = 0
        self.items: Node | None = None
        self.min_items = 0
        self.max_items: int | None = None
        self.any_of: tuple[Node, ...] = ()
        self.exclusive: tuple[tuple[str, ...], ...] = ()

    # --- validation

    def problem(self, value: object, path: str) -> str | None:
        """Why ``value`` (at ``path``, "" for the command itself) is not allowed; None if it is."""
        if self.any_of:
            return self._any_of_problem(value, path)
        if isinstance(value, float) and not math.isfinite(value):
            return self._expected(value, path)
        if self.types is not None and not any(has_type(value, t) for t in self.types):
            return self._expected(value, path)
        if self.enum is not None and not any(same(value, e) for e in self.enum):
            return self._expected(value, path)
        if is_number(value) and not self._number_ok(value):  # type: ignore[arg-type]
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
        return self.step is None or is_multiple(value, self.step)

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
            return any(has_type(value, t) for t in self.types)
        if self.enum is not None:
            return any(kind_of(value) == kind_of(e) for e in self.enum)
        return True

    def _object_problem(self, value: dict[object, object], path: str) -> str | None:
        if len(value) < self.min_properties:
            what = "command" if not path else "object"
            if not value:
                return f"{_at(path)}empty {what}; keys: {self.key_list()}"
            return f"{_at(path)}at least {self.min_properties} keys; keys: {self.key_list()}"
        schemas: list[tuple[str, Node]] = []
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

    def node_of(self, key: str) -> Node | None:
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
        return " or ".join(self._describe_type(t) for t in TYPES if t in self.types)

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
