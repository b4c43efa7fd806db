"""The command schema language (gateway/commands/schema.py): what it accepts, what it refuses
and how it says so, and that no payload can make it fail other than with a refusal."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.commands.schema import MAX_COMMAND_BYTES, CommandSchema, Rejection, SchemaError

THERMOSTAT = CommandSchema.from_data(
    {
        "type": "object",
        "properties": {
            "target_temp": {"type": "number", "minimum": 4.5, "maximum": 30, "multipleOf": 0.5},
            "mode": {"enum": ["auto", "manual"]},
            "boost": {"type": "boolean"},
            "level": {"type": "integer", "minimum": -10, "maximum": -5},
            "preset": {"enum": ["comfort", "eco"]},
        },
        "additionalProperties": False,
        "minProperties": 1,
        "exclusive": [["preset", "target_temp"]],
    }
)

LIGHTS = CommandSchema.from_data(
    {
        "type": "object",
        "properties": {
            "color": {
                "type": "array",
                "minItems": 3,
                "maxItems": 4,
                "items": {"type": "integer", "minimum": 0, "maximum": 255},
            },
            "dim": {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.1},
        },
        "patternProperties": {
            "^cover:[0-9]+$": {
                "anyOf": [
                    {"enum": ["open", "close"]},
                    {
                        "type": "object",
                        "properties": {"position": {"type": "integer", "maximum": 100}},
                        "additionalProperties": False,
                        "minProperties": 1,
                    },
                ]
            }
        },
        "additionalProperties": False,
    }
)


@pytest.mark.parametrize(
    "command",
    [
        {"target_temp": 21.5},
        {"target_temp": 4.5},
        {"target_temp": 30},
        {"target_temp": 21.0, "mode": "manual", "boost": False},
        {"level": -7},
        {"level": -7.0},  # JSON Schema: an integer may be written with a fraction of 0
        {"preset": "eco", "boost": True},
    ],
)
def test_allowed_commands(command: dict[str, object]) -> None:
    assert THERMOSTAT.problem(command) is None


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ({}, "empty command; keys: target_temp, mode, boost, level, preset"),
        ({"fan": 1}, "fan: unknown key; keys: target_temp, mode, boost, level, preset"),
        ({"boost": True, "fan": 1}, "fan: unknown key"),
        ({"target_temp": 99}, "target_temp: expected a number 4.5-30 in steps of 0.5, got 99"),
        ({"target_temp": 4}, "got 4"),
        ({"target_temp": 21.25}, "in steps of 0.5, got 21.25"),
        ({"target_temp": "21"}, 'target_temp: expected a number 4.5-30 in steps of 0.5, got "21"'),
        ({"target_temp": True}, "got true"),  # true is not 1
        ({"target_temp": None}, "got null"),
        ({"target_temp": float("nan")}, "got NaN"),
        ({"target_temp": float("inf")}, "got Infinity"),
        ({"target_temp": 10**400}, "target_temp: expected a number"),
        ({"target_temp": [21]}, "got [21]"),
        ({"mode": "heat"}, 'mode: expected one of auto, manual, got "heat"'),
        ({"mode": 1}, "mode: expected one of auto, manual, got 1"),
        ({"boost": 1}, "boost: expected true or false, got 1"),
        ({"boost": "true"}, 'boost: expected true or false, got "true"'),
        ({"level": -7.5}, "level: expected a whole number -10 to -5, got -7.5"),
        ({"level": 0}, "got 0"),
        ({"preset": "eco", "target_temp": 20}, "preset: give only one of preset, target_temp"),
    ],
)
def test_refused_commands_name_the_key_and_what_it_may_be(
    command: dict[str, object], words: str
) -> None:
    problem = THERMOSTAT.problem(command)
    assert problem is not None and words in problem


@pytest.mark.parametrize("command", [[], "x", 3, None, True])
def test_a_command_is_an_object(command: object) -> None:
    problem = THERMOSTAT.problem(command)
    assert problem is not None and problem.startswith("a command is a JSON object")


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ({"color": [1, 2, 3]}, None),
        ({"color": [1, 2, 3, 4]}, None),
        ({"color": [1, 2]}, "color: expected a list of 3 to 4 items, each a whole number 0-255"),
        ({"color": [1, 2, 3, 4, 5]}, "got [1, 2, 3, 4, 5]"),
        ({"color": [1, 256, 3]}, "color[1]: expected a whole number 0-255, got 256"),
        ({"color": "red"}, 'got "red"'),
        ({"dim": 0.3}, None),  # 0.3 / 0.1 is 2.9999999999999996 in binary floating point
        ({"dim": 0.35}, "dim: expected a number 0-1 in steps of 0.1, got 0.35"),
        ({"cover:0": "open"}, None),
        ({"cover:12": {"position": 40}}, None),
        ({"cover:0": "up"}, 'cover:0: expected one of open, close, got "up"'),
        ({"cover:0": {"position": 140}}, "cover:0.position: expected a whole number <= 100"),
        ({"cover:0": {}}, "cover:0: empty object; keys: position"),
        ({"cover:0": 3}, "cover:0: expected one of open, close or an object, got 3"),
        ({"cover:x": "open"}, "cover:x: unknown key; keys: color, dim, cover:[0-9]+"),
        ({}, None),  # no minProperties here
    ],
)
def test_lists_patterns_and_alternatives(command: dict[str, object], words: str | None) -> None:
    problem = LIGHTS.problem(command)
    if words is None:
        assert problem is None
    else:
        assert problem is not None and words in problem, problem


def test_odd_keys_are_quoted_in_messages() -> None:
    problem = THERMOSTAT.problem({"fan\nspeed": 1})
    assert problem is not None and problem.startswith('"fan\\nspeed": unknown key')
    assert "\n" not in problem


# --- payloads as they arrive over MQTT ---------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason", "words"),
    [
        (b"", "payload_format", "not JSON"),
        (b"21.5", "payload_format", "a command is a JSON object, got a number"),
        (b'"on"', "payload_format", "got a string"),
        (b"[1, 2]", "payload_format", "got a list"),
        (b"null", "payload_format", "got null"),
        (b'{"target_temp": 21.5', "payload_format", "not JSON"),
        (b"\xff\xfe\x00", "payload_format", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid", f"at most {MAX_COMMAND_BYTES} bytes"),
        (b"[" * 30_000 + b"]" * 30_000, "payload_format", "not JSON"),  # nested too deeply
        (b'{"target_temp": 99}', "invalid", "target_temp: expected a number 4.5-30"),
        (b'{"target_temp": NaN}', "invalid", "got NaN"),
        (b"{}", "invalid", "empty command"),
    ],
)
def test_payload_refusals(payload: bytes, reason: str, words: str) -> None:
    rejection = THERMOSTAT.check_payload(payload)
    assert rejection is not None
    assert rejection.reason == reason
    assert words in rejection.detail


def test_a_valid_payload_passes_and_a_refusal_keeps_the_command() -> None:
    assert THERMOSTAT.check_payload(b'{"target_temp": 21.5}') is None
    assert THERMOSTAT.check_payload(b'{"target_temp": 99}') == Rejection(
        "invalid",
        "target_temp: expected a number 4.5-30 in steps of 0.5, got 99",
        {"target_temp": 99},
    )


def test_a_large_command_is_refused_at_its_first_bad_key() -> None:
    keys = {f"k{i}": i for i in range(4000)}
    payload = json.dumps(keys).encode()
    assert len(payload) < MAX_COMMAND_BYTES
    rejection = THERMOSTAT.check_payload(payload)
    assert rejection is not None and rejection.detail.startswith("k0: unknown key")
    # The message quotes a bounded part of what it got.
    assert len(THERMOSTAT.problem({"boost": list(range(10_000))}) or "") < 120


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["open", "close", "auto", "cover:0", "target_temp"]),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(
            st.sampled_from(["target_temp", "mode", "color", "cover:0", "dim", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@given(json_values)
def test_any_value_is_accepted_or_refused_never_an_exception(value: object) -> None:
    for schema in (THERMOSTAT, LIGHTS):
        problem = schema.problem(value)
        assert problem is None or isinstance(problem, str)


@given(st.binary(max_size=200))
def test_any_payload_is_accepted_or_refused_never_an_exception(payload: bytes) -> None:
    rejection = THERMOSTAT.check_payload(payload)
    assert rejection is None or rejection.reason in ("payload_format", "invalid")


# --- the schema itself -------------------------------------------------------------------------


def test_a_schema_travels_as_compact_json_and_compares_by_it() -> None:
    again = CommandSchema.from_json(THERMOSTAT.text)
    assert again == THERMOSTAT and hash(again) == hash(THERMOSTAT)
    assert again.text == THERMOSTAT.text and " " not in THERMOSTAT.text
    assert again.keys == ("target_temp", "mode", "boost", "level", "preset")
    assert again.key("target_temp") == {
        "type": "number",
        "minimum": 4.5,
        "maximum": 30,
        "multipleOf": 0.5,
    }
    assert again.key("nothing") is None
    assert again != LIGHTS


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "array"}, '"type": "object"'),
        ({"properties": {}}, '"type": "object"'),
        ({"type": "object", "propertys": {}}, "unknown keyword 'propertys'"),
        ({"type": "object", "properties": {"a": {"type": "float"}}}, "properties.a.type"),
        ({"type": "object", "properties": {"a": {"enum": []}}}, "properties.a.enum"),
        ({"type": "object", "properties": {"a": {"enum": [[1]]}}}, "only strings, numbers"),
        ({"type": "object", "properties": {"a": {"minimum": "1"}}}, "properties.a.minimum"),
        ({"type": "object", "properties": {"a": {"multipleOf": 0}}}, "multipleOf: expected"),
        ({"type": "object", "patternProperties": {"(": {}}}, "patternProperties: '('"),
        ({"type": "object", "additionalProperties": {}}, "additionalProperties"),
        ({"type": "object", "minProperties": -1}, "minProperties"),
        ({"type": "object", "exclusive": ["a"]}, "exclusive"),
        ({"type": "object", "anyOf": []}, "anyOf: at least one"),
    ],
)
def test_bad_schemas_are_refused_saying_where(schema: dict[str, object], words: str) -> None:
    with pytest.raises(SchemaError) as caught:
        CommandSchema.from_data(schema)
    assert words in str(caught.value)


def test_deep_and_huge_schemas_are_refused() -> None:
    nested: dict[str, object] = {"type": "object"}
    for _ in range(20):
        nested = {"type": "object", "properties": {"a": nested}}
    with pytest.raises(SchemaError, match="nested deeper"):
        CommandSchema.from_data(nested)
    with pytest.raises(SchemaError, match="longer than"):
        CommandSchema.from_json('{"type":"object","description":"' + "x" * 40000 + '"}')
    with pytest.raises(SchemaError, match="not JSON"):
        CommandSchema.from_json("{")
