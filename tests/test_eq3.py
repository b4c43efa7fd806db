"""eQ-3 radiator thermostat: command plans, status parsing and the simulated thermostat.

Vectors (request bytes and the notifications that answered them) are the captures published
in Heckie75/eQ-3-radiator-thermostat, eq-3-radiator-thermostat-api.md; each test says which.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.ble.eq3 import (
    NOTIFY_CHAR,
    WRITE_CHAR,
    Eq3Profile,
    Eq3Status,
    apply_command,
    encode_status,
    parse_status,
)
from devices.ble.gatt_ops import CommandError, GattProfile, GattStep

PROFILE = Eq3Profile()


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def one(command: Mapping[str, object]) -> GattStep:
    (step,) = PROFILE.plan(command)
    return step


def test_is_a_gatt_profile() -> None:
    profile: GattProfile = PROFILE
    assert profile.notify_chars == (NOTIFY_CHAR,)


# --- writes, from the doc's "Request" lines --------------------------------------------------


@pytest.mark.parametrize(
    ("command", "written"),
    [
        ({"target_temp": 22.5}, "412d"),  # "Set target temperature"
        ({"target_temp": 30}, "413c"),  # "Set thermostat on"
        ({"target_temp": 4.5}, "4109"),  # "Set thermostat off"
        ({"mode": "auto"}, "4000"),  # "Set auto mode"
        ({"mode": "manual"}, "4040"),  # "Set manual mode"
        ({"preset": "comfort"}, "43"),  # "Switch to comfort temperature"
        ({"preset": "eco"}, "44"),  # "Switch to eco temperature"
        ({"boost": True}, "45ff"),  # "Activate boost mode"
        ({"boost": False}, "4500"),  # "Stop boost mode"
        ({"locked": True}, "8001"),  # "Lock thermostat"
        ({"locked": False}, "8000"),  # "Unlock thermostat"
    ],
)
def test_single_key_commands_write_the_documented_bytes(
    command: dict[str, object], written: str
) -> None:
    step = one(command)
    assert (step.char, step.data, step.response) == (WRITE_CHAR, h(written), True)
    assert step.confirm is not None
    assert step.confirm.notify == NOTIFY_CHAR and step.confirm.read is None


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        # Each pair is a request of the doc and the notification it printed for it.
        ({"target_temp": 22.5}, "02 01 00 00 04 2d"),
        ({"target_temp": 30.0}, "02 01 00 37 04 3c"),
        ({"target_temp": 4.5}, "02 01 00 37 04 09"),
        ({"mode": "auto"}, "02 01 00 00 04 2a"),
        ({"mode": "manual"}, "02 01 01 00 04 2a"),
        ({"preset": "comfort"}, "02 01 00 00 04 2c"),
        ({"preset": "eco"}, "02 01 00 26 04 24"),
        ({"boost": True}, "02 01 05 50 04 2c"),
        ({"boost": False}, "02 01 01 50 04 2c"),
    ],
)
def test_the_documented_answer_confirms_the_write(command: dict[str, object], answer: str) -> None:
    step = one(command)
    assert step.confirm is not None and step.confirm.accept(h(answer))


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        ({"target_temp": 22.5}, "02 01 00 00 04 2a"),  # still 21.0
        ({"mode": "auto"}, "02 01 01 00 04 2a"),  # still manual
        ({"mode": "manual"}, "02 01 00 00 04 2a"),  # still auto
        ({"mode": "manual"}, "02 01 03 00 04 2a"),  # manual, but vacation still on
        ({"boost": True}, "02 01 01 50 04 2c"),
        ({"boost": False}, "02 01 05 50 04 2c"),
        ({"locked": True}, "02 01 00 00 04 2a"),
        ({"locked": False}, "02 01 20 00 04 2a"),
        ({"preset": "eco"}, "02 02 06"),  # the answer to a schedule write, not a status
        ({"target_temp": 21}, "21 02 27 24 29 84 27 90 00 00 00 00 00 00 00 00"),  # a schedule
    ],
)
def test_an_answer_that_does_not_show_the_change_does_not_confirm(
    command: dict[str, object], answer: str
) -> None:
    step = one(command)
    assert step.confirm is not None and not step.confirm.accept(h(answer))


def test_several_keys_run_in_the_documented_order() -> None:
    steps = PROFILE.plan({"target_temp": 21, "locked": True, "boost": False, "mode": "manual"})
    assert [s.data for s in steps] == [h("4040"), h("412a"), h("4500"), h("8001")]
    # The setpoint is written after the mode, so the thermostat ends on 21.
    status = Eq3Status(target_temp=17.0)
    for step in steps:
        status = apply_command(status, step.data)
        assert step.confirm is not None and step.confirm.accept(encode_status(status))
    assert (status.target_temp, status.manual, status.locked) == (21.0, True, True)


def test_confirmation_timeout_is_the_profiles() -> None:
    step = Eq3Profile(timeout=1.5).plan({"boost": True})[0]
    assert step.confirm is not None and step.confirm.timeout == 1.5


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ({}, "empty command; keys: mode, preset, target_temp, boost, locked"),
        ({"temperature": 21}, "temperature: unknown key; keys: mode, preset"),
        ({"target_temp": 4.0}, "target_temp: expected a number 4.5-30 in steps of 0.5"),
        ({"target_temp": 30.5}, "target_temp: expected a number 4.5-30"),
        ({"target_temp": 21.25}, "in steps of 0.5, got 21.25"),
        ({"target_temp": "21"}, "target_temp: expected a number"),
        ({"target_temp": True}, "target_temp: expected a number"),
        ({"target_temp": float("nan")}, "target_temp: expected a number"),
        ({"target_temp": None}, "target_temp: expected a number"),
        ({"target_temp": 10**400}, "target_temp: expected a number"),
        ({"mode": "vacation"}, 'mode: expected one of auto, manual, got "vacation"'),
        ({"mode": 1}, "mode: expected one of auto, manual"),
        ({"preset": "night"}, "preset: expected one of comfort, eco"),
        ({"boost": 1}, "boost: expected true or false, got 1"),
        ({"boost": "on"}, "boost: expected true or false"),
        ({"locked": None}, "locked: expected true or false"),
        ({"preset": "eco", "target_temp": 20}, "preset: give only one of preset, target_temp"),
        ({"boost": True, "colour": "red"}, "colour: unknown key"),
    ],
)
def test_bad_commands_name_the_key_and_what_is_allowed(
    command: dict[str, object], words: str
) -> None:
    with pytest.raises(CommandError) as caught:
        PROFILE.plan(command)
    assert words in str(caught.value)


# --- status notifications ----------------------------------------------------------------------


def test_state_of_the_documented_auto_status() -> None:
    # "Example 1 - auto mode": 02 01 00 00 04 2a -> 21.0 degrees, valve 0 %, auto.
    assert PROFILE.state(h("02010000042a")) == {
        "target_temp": 21.0,
        "mode": "auto",
        "valve": 0,
        "boost": False,
        "window_open": False,
        "locked": False,
        "low_battery": False,
    }


def test_state_of_the_documented_vacation_status() -> None:
    # "Example 2 - active vacation mode": ten bytes, the last four about the vacation's end.
    state = PROFILE.state(h("02 01 02 00 04 26 1c 11 03 02"))
    assert state is not None
    assert (state["mode"], state["target_temp"]) == ("vacation", 19.0)


def test_state_of_boost_and_every_flag() -> None:
    state = PROFILE.state(h("02 01 05 50 04 2c"))  # "Activate boost mode"
    assert state is not None
    assert (state["mode"], state["boost"], state["valve"], state["target_temp"]) == (
        "manual",
        True,
        80,
        22.0,
    )
    state = PROFILE.state(bytes((0x02, 0x01, 0xB0, 100, 0x04, 0x3C)))
    assert state is not None
    assert state["window_open"] and state["locked"] and state["low_battery"]
    assert (state["valve"], state["target_temp"], state["mode"]) == (100, 30.0, "auto")


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "02",
        "02 01 00 00 04",  # one byte short
        "02 02 06",  # answer to a schedule write
        "21 02 27 24 29 84 27 90 00 00 00 00 00 00 00 00",  # a day's schedule
        "01 01 00 00 04 2a",
        "02 00 00 00 04 2a",
        "02 01 00 65 04 2a",  # valve 101 %
        "02 01 00 00 04 08",  # 4.0 degrees: below the thermostat's range
        "02 01 00 00 04 3d",  # 30.5 degrees
        "02 01 00 00 04 ff",
    ],
)
def test_junk_is_no_state(junk: str) -> None:
    assert PROFILE.state(h(junk)) is None
    assert parse_status(h(junk)) is None


@given(
    st.dictionaries(
        st.sampled_from(["mode", "preset", "target_temp", "boost", "locked", "x"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=8),
            st.sampled_from(["auto", "manual", "comfort", "eco"]),
        ),
    )
)
def test_plan_fails_only_with_a_command_error(command: dict[str, object]) -> None:
    try:
        steps = PROFILE.plan(command)
    except CommandError:
        return
    assert len(steps) == len(command)


@given(st.binary(max_size=32))
def test_state_never_raises(data: bytes) -> None:
    state = PROFILE.state(data)
    if state is not None:
        assert data[:2] == b"\x02\x01"
        assert 0 <= state["valve"] <= 100  # type: ignore[operator]


@given(st.binary(min_size=6, max_size=6).map(lambda b: b"\x02\x01" + b[2:]))
def test_confirmations_never_raise(data: bytes) -> None:
    for command in ({"target_temp": 21}, {"mode": "auto"}, {"preset": "eco"}, {"locked": True}):
        step = one(command)
        assert step.confirm is not None
        assert isinstance(step.confirm.accept(data), bool)


# --- the thermostat's side ---------------------------------------------------------------------


def test_encode_status_matches_the_documented_frames() -> None:
    assert encode_status(Eq3Status(target_temp=21.0)) == h("02 01 00 00 04 2a")
    assert encode_status(Eq3Status(target_temp=22.0, manual=True, boost=True, valve=80)) == h(
        "02 01 05 50 04 2c"
    )


@given(
    target=st.integers(9, 60).map(lambda n: n / 2),
    manual=st.booleans(),
    boost=st.booleans(),
    window=st.booleans(),
    locked=st.booleans(),
    battery=st.booleans(),
    valve=st.integers(0, 100),
)
def test_status_round_trip(
    target: float,
    manual: bool,
    boost: bool,
    window: bool,
    locked: bool,
    battery: bool,
    valve: int,
) -> None:
    status = Eq3Status(target, manual, False, boost, window, locked, battery, valve)
    assert PROFILE.state(encode_status(status)) == {
        "target_temp": target,
        "mode": "manual" if manual else "auto",
        "valve": valve,
        "boost": boost,
        "window_open": window,
        "locked": locked,
        "low_battery": battery,
    }


@given(
    command=st.fixed_dictionaries(
        {},
        optional={
            "mode": st.sampled_from(["auto", "manual"]),
            "target_temp": st.integers(9, 60).map(lambda n: n / 2),
            "boost": st.booleans(),
            "locked": st.booleans(),
        },
    ).filter(bool),
    start=st.builds(
        Eq3Status,
        target_temp=st.integers(9, 60).map(lambda n: n / 2),
        manual=st.booleans(),
        vacation=st.booleans(),
        boost=st.booleans(),
        locked=st.booleans(),
    ),
)
def test_every_planned_step_is_confirmed_by_the_simulated_thermostat(
    command: dict[str, object], start: Eq3Status
) -> None:
    status = start
    for step in PROFILE.plan(command):
        status = apply_command(status, step.data)
        assert step.confirm is not None and step.confirm.accept(encode_status(status))
    state = PROFILE.state(encode_status(status))
    assert state is not None
    for key, value in command.items():
        assert state[key] == value


def test_simulated_thermostat_presets_and_requests() -> None:
    status = Eq3Status(target_temp=20.0, vacation=True)
    assert apply_command(status, h("03")) == status
    assert apply_command(status, h("03 11 02 08 15 1f 05")) == status  # request + set clock
    configured = apply_command(status, h("11 2b 23"))  # "Configure comfort and eco": 21.5/17.5
    assert (configured.comfort_temp, configured.eco_temp) == (21.5, 17.5)
    assert apply_command(configured, h("43")).target_temp == 21.5
    assert apply_command(configured, h("44")).target_temp == 17.5
    # Setting a mode ends vacation mode.
    assert not apply_command(status, h("4000")).vacation


@pytest.mark.parametrize(
    "write", ["", "41", "4108", "413d", "4041", "8002", "f0", "43 00", "11 2b"]
)
def test_simulated_thermostat_refuses_what_it_does_not_understand(write: str) -> None:
    with pytest.raises(ValueError):
        apply_command(Eq3Status(), h(write))


def test_refresh_asks_for_the_status_and_sets_the_clock() -> None:
    when = datetime.datetime(2026, 11, 22, 7, 52, 31)
    (step,) = Eq3Profile(clock=lambda: when).refresh()
    # 03 YY MM DD hh mm ss: the status request that also sets the thermostat's clock.
    assert (step.char, step.data) == (WRITE_CHAR, bytes.fromhex("03 1a 0b 16 07 34 1f"))
    assert step.confirm is not None and step.confirm.notify == NOTIFY_CHAR
    assert step.confirm.accept(encode_status(Eq3Status(target_temp=19.0)))
    assert not step.confirm.accept(b"\x01\x02")
    assert apply_command(Eq3Status(target_temp=19.0), step.data) == Eq3Status(target_temp=19.0)
