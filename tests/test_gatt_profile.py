"""Generic GATT profiles from config: building, payload encoding, confirmations, errors."""

from __future__ import annotations

import struct
from collections.abc import Mapping

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from devices.ble.gatt_ops import CommandError, GattProfile, GattStep
from devices.ble.gatt_profile import (
    ConfiguredProfile,
    GattCommandSpec,
    ProfileError,
    normalize_uuid,
    profile_from_config,
)

FFF1 = "0000fff1-0000-1000-8000-00805f9b34fb"
FFF2 = "0000fff2-0000-1000-8000-00805f9b34fb"
FULL = "cba20002-224d-11e6-9fb8-0002a5d5c51b"


def load(text: str) -> ConfiguredProfile:
    return profile_from_config(yaml.safe_load(text))


def one_command(spec: str) -> ConfiguredProfile:
    return load(f"commands:\n  set: {spec}\n")


def step(profile: ConfiguredProfile, command: Mapping[str, object]) -> GattStep:
    (only,) = profile.plan(command)
    return only


VALVE = load(
    f"""
    commands:
      open:
        char: fff1
        payload: "57 01 {{raw}}"
        values: {{true: "01", false: "00"}}
        confirm: {{notify: FFF2, expect: "13 01", timeout: 2}}
      level:
        char: {FULL}
        payload: "57 02 {{u8}}"
        min: 0
        max: 100
        response: false
      ring:
        char: fff1
        payload: "99"
        confirm: {{read: fff1}}
    """.replace("\n    ", "\n")
)


def test_a_profile_is_a_gatt_profile() -> None:
    profile: GattProfile = VALVE
    assert profile.notify_chars == (FFF2,)
    assert VALVE.keys == ("open", "level", "ring")
    assert VALVE.state(b"\x13\x01") is None


def test_raw_placeholder_and_notify_confirmation() -> None:
    opened = step(VALVE, {"open": True})
    assert (opened.char, opened.data, opened.response) == (FFF1, bytes.fromhex("570101"), True)
    assert opened.confirm is not None
    assert (opened.confirm.notify, opened.confirm.read, opened.confirm.timeout) == (FFF2, None, 2)
    assert opened.confirm.accept(b"\x13\x01\x00")
    assert not opened.confirm.accept(b"\x13\x02")
    assert not opened.confirm.accept(b"")
    assert step(VALVE, {"open": False}).data == bytes.fromhex("570100")


def test_numeric_placeholder_without_confirmation() -> None:
    level = step(VALVE, {"level": 42})
    assert (level.char, level.data, level.response, level.confirm) == (
        FULL,
        bytes.fromhex("57022a"),
        False,
        None,
    )


def test_read_back_confirmation_defaults_to_the_written_bytes() -> None:
    ring = step(VALVE, {"ring": True})
    assert ring.data == b"\x99" and ring.confirm is not None
    assert (ring.confirm.read, ring.confirm.notify) == (FFF1, None)
    assert ring.confirm.accept(b"\x99")
    assert not ring.confirm.accept(b"\x99\x00")


def test_notify_confirmation_without_expect_accepts_any_notification() -> None:
    profile = one_command('{char: fff1, payload: "01", confirm: {notify: fff2}}')
    confirm = step(profile, {"set": True}).confirm
    assert confirm is not None and confirm.accept(b"") and confirm.accept(b"\xff")
    assert confirm.timeout == 5.0


def test_several_keys_run_in_the_declared_order() -> None:
    steps = VALVE.plan({"ring": True, "level": 1, "open": True})
    assert [s.data[:2] for s in steps] == [b"\x57\x01", b"\x57\x02", b"\x99"]


@pytest.mark.parametrize(
    ("placeholder", "value", "scale", "written"),
    [
        ("u8", 255, 1, "ff"),
        ("i8", -1, 1, "ff"),
        ("u16le", 0x1234, 1, "3412"),
        ("u16be", 0x1234, 1, "1234"),
        ("i16le", -2, 1, "feff"),
        ("i16be", -2, 1, "fffe"),
        ("u32le", 0x01020304, 1, "04030201"),
        ("u32be", 0x01020304, 1, "01020304"),
        ("i32le", -1, 1, "ffffffff"),
        ("f32le", 1.5, 1, "0000c03f"),
        ("u16le", 21.5, 100, "6608"),  # 2150: a setpoint in centidegrees
        ("u8", 0.7, 10, "07"),  # 0.7 * 10 is 7.000000000000001 in binary floating point
        ("u8", True, 10, "01"),  # booleans are 1/0, not scaled
        ("i16be", False, 1, "0000"),
    ],
)
def test_placeholders_encode(placeholder: str, value: object, scale: float, written: str) -> None:
    profile = one_command(f'{{char: fff1, payload: "aa {{{placeholder}}} bb", scale: {scale}}}')
    assert step(profile, {"set": value}).data == bytes.fromhex(f"aa{written}bb")


@given(st.integers(-(2**31), 2**31 - 1))
def test_i32le_round_trips(value: int) -> None:
    profile = one_command('{char: fff1, payload: "{i32le}"}')
    assert struct.unpack("<i", step(profile, {"set": value}).data) == (value,)


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=2**1000),
        st.floats(),
        st.text(max_size=5),
    )
)
def test_encoding_never_fails_other_than_with_a_command_error(value: object) -> None:
    for placeholder in ("u8", "i16be", "f32le"):
        profile = one_command(f'{{char: fff1, payload: "{{{placeholder}}}", scale: 3}}')
        try:
            profile.plan({"set": value})
        except CommandError as exc:
            assert str(exc).startswith("set: ")


@given(
    st.sampled_from(["u8", "i8", "u16be", "i16le", "u32le", "i32le", "f32le"]),
    st.sampled_from([1, 2, 3, 10, 0.5, 0.1, -4]),
    st.one_of(
        st.booleans(),
        st.integers(-(2**33), 2**33),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.floats(-1e6, 1e6).map(lambda x: round(x, 1)),
    ),
)
def test_what_the_schema_accepts_the_device_can_be_sent(
    placeholder: str, scale: float, value: object
) -> None:
    """The broker refuses commands with the profile's schema alone: anything it lets through
    must encode, or a command would wait for the device only to fail there."""
    profile = one_command(f'{{char: fff1, payload: "{{{placeholder}}}", scale: {scale}}}')
    if profile.schema.problem({"set": value}) is None:
        profile.plan({"set": value})  # no CommandError
    else:
        with pytest.raises(CommandError):
            profile.plan({"set": value})


def test_profile_schema_is_what_the_config_declares() -> None:
    assert VALVE.schema.data == {
        "type": "object",
        "properties": {
            "open": {"enum": [True, False]},
            "level": {"type": ["boolean", "integer"], "minimum": 0, "maximum": 100},
            "ring": {"enum": [True]},
        },
        "additionalProperties": False,
        "minProperties": 1,
    }


@pytest.mark.parametrize(
    ("spec", "command", "words"),
    [
        ('{char: fff1, payload: "{u8}"}', {"set": 256}, "or a whole number 0-255, got 256"),
        ('{char: fff1, payload: "{u8}"}', {"set": -1}, "a whole number 0-255, got -1"),
        ('{char: fff1, payload: "{i8}"}', {"set": 128}, "a whole number -128 to 127, got 128"),
        ('{char: fff1, payload: "{u8}"}', {"set": 1.5}, "set: expected true or false or a whole"),
        ('{char: fff1, payload: "{u8}", scale: 2}', {"set": 1.25}, "steps of 0.5, got 1.25"),
        ('{char: fff1, payload: "{u8}"}', {"set": "7"}, 'a whole number 0-255, got "7"'),
        ('{char: fff1, payload: "{u8}"}', {"set": None}, "a whole number 0-255, got null"),
        ('{char: fff1, payload: "{u8}"}', {"set": float("inf")}, "0-255, got Infinity"),
        ('{char: fff1, payload: "{u8}", min: 5, max: 9}', {"set": 10}, "number 5-9, got 10"),
        ('{char: fff1, payload: "{u8}", min: 5}', {"set": 4}, "a whole number 5-255, got 4"),
        ('{char: fff1, payload: "{u8}", max: 9}', {"set": 10}, "a whole number 0-9, got 10"),
        ('{char: fff1, payload: "{f32le}"}', {"set": 1e300}, "e+38, got 1e+300"),
        ('{char: fff1, payload: "{u8}", scale: 10}', {"set": 1e308}, "steps of 0.1, got 1e+308"),
        ('{char: fff1, payload: "{u8}", scale: 0.5}', {"set": 10**400}, "0-510 in steps of 2"),
        (
            '{char: fff1, payload: "{raw}", values: {true: "01", "on": "02", 3: "03"}}',
            {"set": 1},  # not the same JSON value as true
            'set: expected one of true, "on", 3, got 1',
        ),
        (
            '{char: fff1, payload: "{raw}", values: {true: "01"}}',
            {"set": "true"},
            'got "true"',
        ),
        ('{char: fff1, payload: "01"}', {"set": 1}, "set: expected true, got 1"),
        ('{char: fff1, payload: "01"}', {}, "empty command; keys: set"),
        ('{char: fff1, payload: "01"}', {"other": True}, "other: unknown key; keys: set"),
    ],
)
def test_bad_commands(spec: str, command: Mapping[str, object], words: str) -> None:
    with pytest.raises(CommandError) as caught:
        one_command(spec).plan(command)
    assert words in str(caught.value)


def test_raw_value_lookup_keeps_json_types_apart() -> None:
    profile = one_command('{char: fff1, payload: "{raw}", values: {"1": "aa", true: "bb"}}')
    assert step(profile, {"set": "1"}).data == b"\xaa"
    assert step(profile, {"set": True}).data == b"\xbb"
    with pytest.raises(CommandError):
        profile.plan({"set": 1})


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ("null", "", "expected a mapping of keys, got null"),
        ("{comands: {}}", "comands", "unknown key 'comands'; valid keys here: commands"),
        ("{}", "commands", "at least one"),
        ("{commands: {}}", "commands", "at least one"),
        ("{commands: [a]}", "commands", "got a list"),
        ("{commands: {on: {char: fff1, payload: '01'}}}", "commands", "quote it"),
        ("{commands: {x: 1}}", "commands.x", "expected a mapping of keys, got 1"),
        ("{commands: {x: {payload: '01'}}}", "commands.x.char", "required"),
        ("{commands: {x: {char: fff1}}}", "commands.x.payload", "required"),
        ("{commands: {x: {char: fff1, payload: '01', colour: 1}}}", "commands.x.colour", "char"),
        ("{commands: {x: {char: fff, payload: '01'}}}", "commands.x.char", "16-bit (fff1)"),
        ("{commands: {x: {char: fff1g, payload: '01'}}}", "commands.x.char", 'got "fff1g"'),
        ("{commands: {x: {char: 1234, payload: '01'}}}", "commands.x.char", "in quotes"),
        ("{commands: {x: {char: fff1, payload: 5701}}}", "commands.x.payload", "in quotes"),
        ("{commands: {x: {char: fff1, payload: ''}}}", "commands.x.payload", "writes nothing"),
        ("{commands: {x: {char: fff1, payload: '5'}}}", "commands.x.payload", "hex bytes"),
        ("{commands: {x: {char: fff1, payload: '0g'}}}", "commands.x.payload", "hex bytes"),
        ("{commands: {x: {char: fff1, payload: '{u8}{u8}'}}}", "commands.x.payload", "at most"),
        ("{commands: {x: {char: fff1, payload: '{u9}'}}}", "commands.x.payload", "{u8} {i8}"),
        ("{commands: {x: {char: fff1, payload: '{u8'}}}", "commands.x.payload", "hex bytes"),
        ("{commands: {x: {char: fff1, payload: '{raw}'}}}", "commands.x.values", "required by"),
        (
            "{commands: {x: {char: fff1, payload: '{u8}', values: {a: '01'}}}}",
            "commands.x.values",
            "only for a payload with the {raw} placeholder",
        ),
        (
            "{commands: {x: {char: fff1, payload: '{raw}', values: {a: 1}}}}",
            "commands.x.values.a",
            "in quotes",
        ),
        (
            "{commands: {x: {char: fff1, payload: '{raw}', values: {true: zz}}}}",
            "commands.x.values.true",
            "hex bytes",
        ),
        (
            "{commands: {x: {char: fff1, payload: '{raw}', values: {}}}}",
            "commands.x.values",
            "expected a mapping of command value to hex",
        ),
        (
            "{commands: {x: {char: fff1, payload: '{raw}', values: {1.5: '01'}}}}",
            "commands.x.values",
            "true, false, numbers or strings",
        ),
        ("{commands: {x: {char: fff1, payload: '01', scale: 2}}}", "commands.x.scale", "numeric"),
        (
            "{commands: {x: {char: fff1, payload: '{raw}', values: {a: '01'}, min: 2}}}",
            "commands.x.min",
            "numeric",
        ),
        (
            "{commands: {x: {char: fff1, payload: '{u8}', scale: 0}}}",
            "commands.x.scale",
            "other than 0",
        ),
        ("{commands: {x: {char: fff1, payload: '{u8}', scale: a}}}", "commands.x.scale", "number"),
        ("{commands: {x: {char: fff1, payload: '{u8}', min: .nan}}}", "commands.x.min", "number"),
        (
            "{commands: {x: {char: fff1, payload: '{u8}', max: 1" + "0" * 400 + "}}}",
            "commands.x.max",
            "number",
        ),
        (
            "{commands: {x: {char: fff1, payload: '{u8}', min: 5, max: 4}}}",
            "commands.x.max",
            ">= min (5), got 4",
        ),
        (
            "{commands: {x: {char: fff1, payload: '{u8}', max: 30, scale: 10}}}",
            "commands.x.max",
            "30 * scale 10 does not fit {u8} (0-255)",
        ),
        (
            "{commands: {x: {char: fff1, payload: '{u16le}', min: -1}}}",
            "commands.x.min",
            "does not fit {u16le}",
        ),
        (
            "{commands: {x: {char: fff1, payload: '01', response: 1}}}",
            "commands.x.response",
            "true or false",
        ),
        (
            "{commands: {x: {char: fff1, payload: '01', confirm: {}}}}",
            "commands.x.confirm",
            "exactly one of notify, read",
        ),
        (
            "{commands: {x: {char: fff1, payload: '01', confirm: {notify: fff1, read: fff1}}}}",
            "commands.x.confirm",
            "exactly one of notify, read",
        ),
        (
            "{commands: {x: {char: fff1, payload: '01', confirm: {notify: x}}}}",
            "commands.x.confirm.notify",
            "characteristic UUID",
        ),
        (
            "{commands: {x: {char: fff1, payload: '01', confirm: {read: fff1, expect: ''}}}}",
            "commands.x.confirm.expect",
            "at least one byte",
        ),
        (
            "{commands: {x: {char: fff1, payload: '01', confirm: {read: fff1, timeout: 0}}}}",
            "commands.x.confirm.timeout",
            "seconds > 0",
        ),
        (
            "{commands: {x: {char: fff1, payload: '01', confirm: {read: fff1, wait: 1}}}}",
            "commands.x.confirm.wait",
            "valid keys here: notify, read, expect, timeout",
        ),
    ],
)
def test_bad_profiles_name_the_key_inside_the_profile(text: str, path: str, words: str) -> None:
    with pytest.raises(ProfileError) as caught:
        profile_from_config(yaml.safe_load(text))
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.path, words in error.detail) == (path, True), str(error)
    assert str(error) == (f"{path}: {error.detail}" if path else error.detail)


def test_profile_invariants_hold_when_built_directly() -> None:
    with pytest.raises(ProfileError, match="at least one command"):
        ConfiguredProfile(())
    spec = GattCommandSpec(key="a", char=FFF1, prefix=b"\x01")
    with pytest.raises(ProfileError, match="unique"):
        ConfiguredProfile((spec, spec))


@pytest.mark.parametrize(
    ("text", "uuid"),
    [
        ("fff1", FFF1),
        ("FFF1", FFF1),
        ("0000fff1", FFF1),
        (FULL.upper(), FULL),
        ("fff", None),
        ("0000fff1-0000-1000-8000-00805f9b34f", None),
        ("{fff1}", None),
    ],
)
def test_normalize_uuid(text: str, uuid: str | None) -> None:
    assert normalize_uuid(text) == uuid
