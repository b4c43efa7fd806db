"""eQ-3 / eqiva Bluetooth Smart radiator thermostat (CC-RT-BLE, CC-RT-M-BLE): commands and status.

Byte formats from the protocol description of Heckie75/eQ-3-radiator-thermostat,
``eq-3-radiator-thermostat-api.md`` (facts only; the wording and code here are our own):

- every command is written to characteristic 3fa4585a-... (handle 0x0411) of service
  3e135142-...; the thermostat answers each one with a notification on d0e8434d-...
  (handle 0x0421);
- the status notification is ``02 01 <flags> <valve %> <??> <target*2>`` followed by four
  vacation bytes while vacation mode is on (newer firmware may append more; ignored here);
- flags: 0x01 manual, 0x02 vacation, 0x04 boost, 0x08 daylight saving, 0x10 window open,
  0x20 locked, 0x80 low battery;
- commands: ``41 <t*2>`` target temperature, ``40 00`` auto / ``40 40`` manual mode,
  ``43`` comfort / ``44`` eco temperature, ``45 ff`` / ``45 00`` boost on / off,
  ``80 01`` / ``80 00`` lock / unlock, ``03`` status request, ``11 <comfort*2> <eco*2>``
  configure the comfort and eco temperatures.

The module is pure (no bleak, no asyncio): `Eq3Profile` turns a JSON command into
`GattStep`s, and `apply_command` / `encode_status` are the thermostat's side of the same
protocol, used by tests and the demo's simulated thermostat.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from devices.ble.gatt_ops import CommandError, Confirmation, GattStep
from gateway.commands.schema import CommandSchema

SERVICE_UUID = "3e135142-654f-9090-134a-a6ff5bb77046"
WRITE_CHAR = "3fa4585a-ce4a-3bad-db4b-b8df8179ea09"
NOTIFY_CHAR = "d0e8434d-cd29-0996-af41-6c90f4e0eb2a"

MIN_TEMP = 4.5  # the thermostat's "off"
MAX_TEMP = 30.0  # the thermostat's "on"

# Command opcodes (first byte written).
OP_STATUS_REQUEST = 0x03
OP_CONFIGURE_PRESETS = 0x11
OP_MODE = 0x40
OP_TARGET = 0x41
OP_COMFORT = 0x43
OP_ECO = 0x44
OP_BOOST = 0x45
OP_LOCK = 0x80

# Status flags (third byte of the status notification).
FLAG_MANUAL = 0x01
FLAG_VACATION = 0x02
FLAG_BOOST = 0x04
FLAG_DST = 0x08
FLAG_WINDOW_OPEN = 0x10
FLAG_LOCKED = 0x20
FLAG_LOW_BATTERY = 0x80

_STATUS_HEAD = b"\x02\x01"
_STATUS_LEN = 6
_MODE_AUTO = 0x00
_MODE_MANUAL = 0x40

# The order a multi-key command is carried out in. The mode goes first because switching to
# auto makes the thermostat follow its schedule, which would undo a setpoint written before
# it; boost and lock last, as they do not touch the setpoint.
COMMAND_ORDER: tuple[str, ...] = ("mode", "preset", "target_temp", "boost", "locked")
MODES = ("auto", "manual")
PRESETS = ("comfort", "eco")
TEMP_STEP = 0.5  # the setpoint byte is the temperature times two

# Everything an eQ-3 command may be, in one place: checked by the broker before the command
# is queued, by `Eq3Profile.plan` before a write, and read by Home Assistant discovery.
COMMAND_SCHEMA = CommandSchema.from_data(
    {
        "type": "object",
        "properties": {
            "mode": {"enum": list(MODES)},
            "preset": {"enum": list(PRESETS)},
            "target_temp": {
                "type": "number",
                "minimum": MIN_TEMP,
                "maximum": MAX_TEMP,
                "multipleOf": TEMP_STEP,
            },
            "boost": {"type": "boolean"},
            "locked": {"type": "boolean"},
        },
        "additionalProperties": False,
        "minProperties": 1,
        # Both set the target temperature.
        "exclusive": [["preset", "target_temp"]],
    }
)


def _temp_byte(value: float) -> int:
    return round(value * 2)


@dataclass(frozen=True, slots=True)
class StatusFrame:
    """The fields of a status notification (``02 01 ...``)."""

    flags: int
    valve: int
    target_temp: float


def parse_status(notification: bytes) -> StatusFrame | None:
    """The status carried by ``notification``, or None if it is not a plausible status frame.

    A frame whose valve or setpoint is outside what the thermostat can report is refused
    rather than passed on as a reading.
    """
    if len(notification) < _STATUS_LEN or notification[:2] != _STATUS_HEAD:
        return None
    flags, valve, target = notification[2], notification[3], notification[5]
    if valve > 100 or not _temp_byte(MIN_TEMP) <= target <= _temp_byte(MAX_TEMP):
        return None
    return StatusFrame(flags, valve, target / 2)


def _mode_name(flags: int) -> str:
    if flags & FLAG_VACATION:
        return "vacation"
    return "manual" if flags & FLAG_MANUAL else "auto"


def _accept_status(check: Callable[[StatusFrame], bool]) -> Callable[[bytes], bool]:
    def accept(notification: bytes) -> bool:
        frame = parse_status(notification)
        return frame is not None and check(frame)

    return accept


def _flag_is(flag: int, on: bool) -> Callable[[StatusFrame], bool]:
    return lambda frame: bool(frame.flags & flag) == on


def _mode_is(manual: bool) -> Callable[[StatusFrame], bool]:
    # Setting a mode also ends vacation mode, so both bits are checked.
    want = FLAG_MANUAL if manual else 0
    return lambda frame: frame.flags & (FLAG_MANUAL | FLAG_VACATION) == want


def _target_is(raw: int) -> Callable[[StatusFrame], bool]:
    return lambda frame: _temp_byte(frame.target_temp) == raw


def _any_status(frame: StatusFrame) -> bool:
    return True


class Eq3Profile:
    """The command set of an eQ-3 thermostat (implements `gatt_ops.GattProfile`).

    Command keys: ``target_temp`` (4.5-30.0 in steps of 0.5), ``mode`` (auto | manual),
    ``preset`` (comfort | eco: the temperatures programmed on the thermostat), ``boost`` and
    ``locked`` (true | false). Several keys run as one write each, in `COMMAND_ORDER`; each
    write is confirmed by the status notification showing the field it set (a preset, whose
    temperature only the thermostat knows, by any status notification).
    """

    def __init__(
        self, timeout: float = 5.0, clock: Callable[[], datetime.datetime] = datetime.datetime.now
    ) -> None:
        self.timeout = timeout
        self.clock = clock  # local time: the thermostat runs its week programme on it

    def refresh(self) -> list[GattStep]:
        """Ask for the status and set the thermostat's clock on the way (``03 YY MM DD hh mm
        ss``, as the vendor app does on every connection)."""
        now = self.clock()
        data = bytes(
            (OP_STATUS_REQUEST, now.year % 100, now.month, now.day, now.hour, now.minute,
             now.second)
        )  # fmt: skip
        confirm = Confirmation(
            _accept_status(_any_status), notify=NOTIFY_CHAR, timeout=self.timeout
        )
        return [GattStep(WRITE_CHAR, data, response=True, confirm=confirm)]

    @property
    def notify_chars(self) -> tuple[str, ...]:
        return (NOTIFY_CHAR,)

    @property
    def schema(self) -> CommandSchema:
        return COMMAND_SCHEMA

    def plan(self, command: Mapping[str, object]) -> list[GattStep]:
        problem = COMMAND_SCHEMA.problem(dict(command))
        if problem is not None:
            raise CommandError(problem)
        return [self._step(key, command[key]) for key in COMMAND_ORDER if key in command]

    def _step(self, key: str, value: object) -> GattStep:
        data: bytes
        check: Callable[[StatusFrame], bool]
        # The value passed COMMAND_SCHEMA: it is one the key allows.
        if key == "mode":
            manual = value == "manual"
            data = bytes((OP_MODE, _MODE_MANUAL if manual else _MODE_AUTO))
            check = _mode_is(manual)
        elif key == "preset":
            data = bytes((OP_COMFORT if value == "comfort" else OP_ECO,))
            check = _any_status
        elif key == "target_temp":
            assert isinstance(value, int | float)
            raw = _temp_byte(value)
            data = bytes((OP_TARGET, raw))
            check = _target_is(raw)
        elif key == "boost":
            on = value is True
            data = bytes((OP_BOOST, 0xFF if on else 0x00))
            check = _flag_is(FLAG_BOOST, on)
        else:
            on = value is True
            data = bytes((OP_LOCK, 0x01 if on else 0x00))
            check = _flag_is(FLAG_LOCKED, on)
        confirm = Confirmation(_accept_status(check), notify=NOTIFY_CHAR, timeout=self.timeout)
        return GattStep(WRITE_CHAR, data, response=True, confirm=confirm)

    def state(self, notification: bytes) -> dict[str, object] | None:
        frame = parse_status(notification)
        if frame is None:
            return None
        return {
            "target_temp": frame.target_temp,
            "mode": _mode_name(frame.flags),
            "valve": frame.valve,
            "boost": bool(frame.flags & FLAG_BOOST),
            "window_open": bool(frame.flags & FLAG_WINDOW_OPEN),
            "locked": bool(frame.flags & FLAG_LOCKED),
            "low_battery": bool(frame.flags & FLAG_LOW_BATTERY),
        }


# ---------------------------------------------------------------------- the thermostat's side


@dataclass(frozen=True, slots=True)
class Eq3Status:
    """What a (simulated) thermostat reports. Vacation details are not simulated."""

    target_temp: float = 20.0
    manual: bool = False
    vacation: bool = False
    boost: bool = False
    window_open: bool = False
    locked: bool = False
    low_battery: bool = False
    valve: int = 0
    comfort_temp: float = 21.0
    eco_temp: float = 17.0


def encode_status(status: Eq3Status) -> bytes:
    """The status notification the thermostat sends for ``status``."""
    flags = 0
    for on, flag in (
        (status.manual, FLAG_MANUAL),
        (status.vacation, FLAG_VACATION),
        (status.boost, FLAG_BOOST),
        (status.window_open, FLAG_WINDOW_OPEN),
        (status.locked, FLAG_LOCKED),
        (status.low_battery, FLAG_LOW_BATTERY),
    ):
        if on:
            flags |= flag
    # The fifth byte is always 04 in the published captures; its meaning is not documented.
    return bytes((0x02, 0x01, flags, status.valve, 0x04, _temp_byte(status.target_temp)))


def _temp_from_byte(raw: int) -> float:
    value = raw / 2
    if not MIN_TEMP <= value <= MAX_TEMP:
        raise ValueError(f"temperature byte {raw:#04x} is outside {MIN_TEMP:g}-{MAX_TEMP:g}")
    return value


def apply_command(status: Eq3Status, data: bytes) -> Eq3Status:
    """The thermostat's status after it carried out the write ``data``.

    Raises ValueError for a write the thermostat would not understand (a simulator answers
    it with a GATT error).
    """
    if not data:
        raise ValueError("empty write")
    op, args = data[0], data[1:]
    if op == OP_STATUS_REQUEST:  # a bare request, or one that also sets the clock
        return status
    if op == OP_TARGET and len(args) == 1:
        return replace(status, target_temp=_temp_from_byte(args[0]))
    if op == OP_MODE and len(args) == 1 and args[0] in (_MODE_AUTO, _MODE_MANUAL):
        return replace(status, manual=args[0] == _MODE_MANUAL, vacation=False)
    if op == OP_COMFORT and not args:
        return replace(status, target_temp=status.comfort_temp)
    if op == OP_ECO and not args:
        return replace(status, target_temp=status.eco_temp)
    if op == OP_BOOST and len(args) == 1:
        return replace(status, boost=args[0] != 0)
    if op == OP_LOCK and len(args) == 1 and args[0] in (0, 1):
        return replace(status, locked=args[0] == 1)
    if op == OP_CONFIGURE_PRESETS and len(args) == 2:
        return replace(
            status, comfort_temp=_temp_from_byte(args[0]), eco_temp=_temp_from_byte(args[1])
        )
    raise ValueError(f"the thermostat does not understand {data.hex(' ')}")
