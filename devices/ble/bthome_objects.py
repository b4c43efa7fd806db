"""The BTHome v2 object table (https://bthome.io/format/), as data.

Each object id maps to an `ObjectSpec`: how many bytes follow the id, how to decode them, and how
the value is presented (key, unit, Home Assistant device_class/state_class). The parser in
`bthome.py` is table-driven, so a new object id from a later spec revision is one line here.

Units are written as Home Assistant expects them (e.g. "µg/m³", "m³", "lx") where the spec uses
ASCII spellings ("ug/m3", "m3"), so discovery can pass them through unchanged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    SENSOR = "sensor"
    BINARY = "binary_sensor"
    EVENT = "event"
    PACKET_ID = "packet_id"
    DEVICE_INFO = "device_info"


class Fmt(enum.Enum):
    UINT = "uint"
    SINT = "sint"
    TEXT = "text"  # length-prefixed UTF-8
    RAW = "raw"  # length-prefixed bytes, reported as hex
    TIMESTAMP = "timestamp"  # uint32 seconds since the epoch, reported as ISO 8601 UTC
    VERSION = "version"  # firmware version bytes, most significant last
    ENUM = "enum"  # uint8 mapped through `ObjectSpec.options`
    BUTTON = "button"  # 1 byte: event id
    DIMMER = "dimmer"  # 2 bytes: event id, steps
    COMMAND = "command"  # variable: length byte (low 5 bits), opcode, arguments


VARIABLE = -1


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    object_id: int
    key: str
    name: str
    kind: Kind
    fmt: Fmt
    size: int  # bytes after the object id; VARIABLE when a length byte follows
    factor: float = 1
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    options: tuple[str, ...] = ()

    @property
    def ndigits(self) -> int:
        """Decimals that the factor can produce, to undo binary floating-point noise."""
        text = f"{self.factor:.10f}".rstrip("0")
        return len(text.split(".")[1]) if "." in text else 0


MEASUREMENT = "measurement"
TOTAL_INCREASING = "total_increasing"
TOTAL = "total"


def _s(
    object_id: int,
    key: str,
    name: str,
    fmt: Fmt,
    size: int,
    factor: float = 1,
    unit: str | None = None,
    device_class: str | None = None,
    state_class: str | None = MEASUREMENT,
) -> ObjectSpec:
    return ObjectSpec(
        object_id, key, name, Kind.SENSOR, fmt, size, factor, unit, device_class, state_class
    )


def _b(object_id: int, key: str, name: str, device_class: str | None) -> ObjectSpec:
    # The spec: binary sensor data is always one uint8, 1 for on and 0 for off.
    return ObjectSpec(object_id, key, name, Kind.BINARY, Fmt.UINT, 1, device_class=device_class)


U, S = Fmt.UINT, Fmt.SINT
PCT = "%"
CELSIUS = "°C"
UG_M3 = "µg/m³"

OBJECTS: tuple[ObjectSpec, ...] = (
    ObjectSpec(0x00, "packet_id", "Packet id", Kind.PACKET_ID, U, 1),
    _s(0x01, "battery", "Battery", U, 1, 1, PCT, "battery"),
    _s(0x02, "temperature", "Temperature", S, 2, 0.01, CELSIUS, "temperature"),
    _s(0x03, "humidity", "Humidity", U, 2, 0.01, PCT, "humidity"),
    _s(0x04, "pressure", "Pressure", U, 3, 0.01, "hPa", "pressure"),
    _s(0x05, "illuminance", "Illuminance", U, 3, 0.01, "lx", "illuminance"),
    _s(0x06, "mass_kg", "Mass", U, 2, 0.01, "kg", "weight"),
    _s(0x07, "mass_lb", "Mass", U, 2, 0.01, "lb", "weight"),
    _s(0x08, "dew_point", "Dew point", S, 2, 0.01, CELSIUS, "temperature"),
    _s(0x09, "count", "Count", U, 1),
    _s(0x0A, "energy", "Energy", U, 3, 0.001, "kWh", "energy", TOTAL_INCREASING),
    _s(0x0B, "power", "Power", U, 3, 0.01, "W", "power"),
    _s(0x0C, "voltage", "Voltage", U, 2, 0.001, "V", "voltage"),
    _s(0x0D, "pm25", "PM2.5", U, 2, 1, UG_M3, "pm25"),
    _s(0x0E, "pm10", "PM10", U, 2, 1, UG_M3, "pm10"),
    _b(0x0F, "generic_boolean", "Generic boolean", None),
    _b(0x10, "power_on", "Power", "power"),
    _b(0x11, "opening", "Opening", "opening"),
    _s(0x12, "co2", "CO2", U, 2, 1, "ppm", "carbon_dioxide"),
    _s(0x13, "tvoc", "TVOC", U, 2, 1, UG_M3, "volatile_organic_compounds"),
    _s(0x14, "moisture", "Moisture", U, 2, 0.01, PCT, "moisture"),
    _b(0x15, "battery_low", "Battery low", "battery"),
    _b(0x16, "battery_charging", "Battery charging", "battery_charging"),
    _b(0x17, "carbon_monoxide", "Carbon monoxide", "carbon_monoxide"),
    _b(0x18, "cold", "Cold", "cold"),
    _b(0x19, "connectivity", "Connectivity", "connectivity"),
    _b(0x1A, "door", "Door", "door"),
    _b(0x1B, "garage_door", "Garage door", "garage_door"),
    _b(0x1C, "gas_detected", "Gas", "gas"),
    _b(0x1D, "heat", "Heat", "heat"),
    _b(0x1E, "light", "Light", "light"),
    _b(0x1F, "lock", "Lock", "lock"),  # True = unlocked, as Home Assistant's lock class
    _b(0x20, "moisture_detected", "Moisture", "moisture"),
    _b(0x21, "motion", "Motion", "motion"),
    _b(0x22, "moving", "Moving", "moving"),
    _b(0x23, "occupancy", "Occupancy", "occupancy"),
    _b(0x24, "plug", "Plug", "plug"),
    _b(0x25, "presence", "Presence", "presence"),
    _b(0x26, "problem", "Problem", "problem"),
    _b(0x27, "running", "Running", "running"),
    _b(0x28, "safety", "Safety", "safety"),
    _b(0x29, "smoke", "Smoke", "smoke"),
    _b(0x2A, "sound", "Sound", "sound"),
    _b(0x2B, "tamper", "Tamper", "tamper"),
    _b(0x2C, "vibration", "Vibration", "vibration"),
    _b(0x2D, "window", "Window", "window"),
    _s(0x2E, "humidity", "Humidity", U, 1, 1, PCT, "humidity"),
    _s(0x2F, "moisture", "Moisture", U, 1, 1, PCT, "moisture"),
    ObjectSpec(0x3A, "button", "Button", Kind.EVENT, Fmt.BUTTON, 1),
    ObjectSpec(0x3B, "command", "Command", Kind.EVENT, Fmt.COMMAND, VARIABLE),
    ObjectSpec(0x3C, "dimmer", "Dimmer", Kind.EVENT, Fmt.DIMMER, 2),
    _s(0x3D, "count", "Count", U, 2),
    _s(0x3E, "count", "Count", U, 4),
    _s(0x3F, "rotation", "Rotation", S, 2, 0.1, "°"),
    _s(0x40, "distance_mm", "Distance", U, 2, 1, "mm", "distance"),
    _s(0x41, "distance_m", "Distance", U, 2, 0.1, "m", "distance"),
    _s(0x42, "duration", "Duration", U, 3, 0.001, "s", "duration"),
    _s(0x43, "current", "Current", U, 2, 0.001, "A", "current"),
    _s(0x44, "speed", "Speed", U, 2, 0.01, "m/s", "speed"),
    _s(0x45, "temperature", "Temperature", S, 2, 0.1, CELSIUS, "temperature"),
    _s(0x46, "uv_index", "UV index", U, 1, 0.1),
    _s(0x47, "volume", "Volume", U, 2, 0.1, "L", "volume"),
    _s(0x48, "volume_ml", "Volume", U, 2, 1, "mL", "volume"),
    _s(0x49, "volume_flow_rate", "Volume flow rate", U, 2, 0.001, "m³/h", "volume_flow_rate"),
    _s(0x4A, "voltage", "Voltage", U, 2, 0.1, "V", "voltage"),
    _s(0x4B, "gas", "Gas", U, 3, 0.001, "m³", "gas", TOTAL_INCREASING),
    _s(0x4C, "gas", "Gas", U, 4, 0.001, "m³", "gas", TOTAL_INCREASING),
    _s(0x4D, "energy", "Energy", U, 4, 0.001, "kWh", "energy", TOTAL_INCREASING),
    _s(0x4E, "volume", "Volume", U, 4, 0.001, "L", "volume"),
    _s(0x4F, "water", "Water", U, 4, 0.001, "L", "water", TOTAL_INCREASING),
    _s(0x50, "timestamp", "Timestamp", Fmt.TIMESTAMP, 4, 1, None, "timestamp", None),
    _s(0x51, "acceleration", "Acceleration", U, 2, 0.001, "m/s²"),
    _s(0x52, "gyroscope", "Gyroscope", U, 2, 0.001, "°/s"),
    _s(0x53, "text", "Text", Fmt.TEXT, VARIABLE, 1, None, None, None),
    _s(0x54, "raw", "Raw", Fmt.RAW, VARIABLE, 1, None, None, None),
    _s(0x55, "volume_storage", "Volume storage", U, 4, 0.001, "L", "volume_storage"),
    _s(0x56, "conductivity", "Conductivity", U, 2, 1, "µS/cm", "conductivity"),
    _s(0x57, "temperature", "Temperature", S, 1, 1, CELSIUS, "temperature"),
    _s(0x58, "temperature", "Temperature", S, 1, 0.35, CELSIUS, "temperature"),
    _s(0x59, "count", "Count", S, 1),
    _s(0x5A, "count", "Count", S, 2),
    _s(0x5B, "count", "Count", S, 4),
    _s(0x5C, "power", "Power", S, 4, 0.01, "W", "power"),
    _s(0x5D, "current", "Current", S, 2, 0.001, "A", "current"),
    _s(0x5E, "direction", "Direction", U, 2, 0.01, "°"),
    _s(0x5F, "precipitation", "Precipitation", U, 2, 0.1, "mm", "precipitation"),
    _s(0x60, "channel", "Channel", U, 1, 1, None, None, None),
    _s(0x61, "rotational_speed", "Rotational speed", U, 2, 1, "rpm"),
    _s(0x62, "speed", "Speed", S, 4, 0.000001, "m/s", "speed"),
    _s(0x63, "acceleration", "Acceleration", S, 4, 0.000001, "m/s²"),
    ObjectSpec(
        0x64,
        "light_level",
        "Light level",
        Kind.SENSOR,
        Fmt.ENUM,
        1,
        device_class="enum",
        options=("dark", "twilight", "bright"),
    ),
    _s(0x65, "settings_revision", "Settings revision", U, 1, 1, None, None, None),
    ObjectSpec(0xF0, "device_type_id", "Device type id", Kind.DEVICE_INFO, U, 2),
    ObjectSpec(0xF1, "firmware_version", "Firmware version", Kind.DEVICE_INFO, Fmt.VERSION, 4),
    ObjectSpec(0xF2, "firmware_version", "Firmware version", Kind.DEVICE_INFO, Fmt.VERSION, 3),
)

# Indexed by object id for the parser's hot loop; None marks an id the spec does not define.
BY_ID: tuple[ObjectSpec | None, ...] = tuple(
    {spec.object_id: spec for spec in OBJECTS}.get(i) for i in range(256)
)

# Every key a reading can carry (without the `_2`, `_3` suffix of repeated objects). Specs that
# share a key share unit, device class and state class, so any of them describes the key.
BY_KEY: dict[str, ObjectSpec] = {}
for _spec in OBJECTS:
    BY_KEY.setdefault(_spec.key, _spec)
del _spec

BUTTON_EVENTS: dict[int, str] = {
    0x01: "press",
    0x02: "double_press",
    0x03: "triple_press",
    0x04: "long_press",
    0x05: "long_double_press",
    0x06: "long_triple_press",
    0x80: "hold_press",
}
DIMMER_EVENTS: dict[int, str] = {0x01: "rotate_left", 0x02: "rotate_right"}
COMMAND_OPCODES: dict[int, str] = {
    0x00: "off",
    0x01: "on",
    0x02: "toggle",
    0x03: "step_up",
    0x04: "step_down",
}


def spec_for_key(key: str) -> ObjectSpec | None:
    """The object spec behind a reading key, also for suffixed keys such as `temperature_2`."""
    spec = BY_KEY.get(key)
    if spec is None:
        base, sep, index = key.rpartition("_")
        if sep and index.isdigit():
            spec = BY_KEY.get(base)
    return spec
