"""BTHome v2 parser against the public format (https://bthome.io/format/, /encryption/).

Vectors are the spec's own examples where it gives one; the others are built here from the rules
the spec states (and say so).
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.ble.bthome import (
    BindKeyRequired,
    BTHomeError,
    BTHomeReading,
    DecryptionFailed,
    DowngradeRejected,
    Event,
    ReplayedCounter,
    Truncated,
    UnknownObject,
    UnsupportedVersion,
    parse_bthome,
)
from devices.ble.bthome_objects import BY_ID, OBJECTS, Kind, spec_for_key

MAC = "A4:C1:38:8D:18:B2"
PLAIN = b"\x40"  # device info: version 2, not encrypted, regular updates


def parse(hex_objects: str, info: bytes = PLAIN) -> BTHomeReading:
    return parse_bthome(info + bytes.fromhex(hex_objects), mac=MAC)


# --- "BTHome Data format" walk-through: D2FC 40 02C409 03BF13 --------------------------------


def test_spec_walkthrough_example() -> None:
    reading = parse_bthome(bytes.fromhex("4002C40903BF13"), mac=MAC)
    assert reading.values == {"temperature": 25.0, "humidity": 50.55}
    assert reading.units == {"temperature": "°C", "humidity": "%"}
    assert reading.events == []
    assert reading.packet_id is None
    assert not reading.encrypted and reading.counter is None
    assert not reading.trigger_based
    assert reading.in_order


# --- "Sensor data" table: the Example and Result columns, one row each --------------------------

SENSOR_ROWS = [
    ("518756", "acceleration", 22.151, "m/s²"),
    ("630057D0FF", "acceleration", -3.123456, "m/s²"),
    ("0161", "battery", 97, "%"),
    ("6001", "channel", 1, None),
    ("12E204", "co2", 1250, "ppm"),
    ("56E803", "conductivity", 1000, "µS/cm"),
    ("0960", "count", 96, None),
    ("3D0960", "count", 24585, None),
    ("3E2A2C0960", "count", 1611213866, None),
    ("59EA", "count", -22, None),
    ("5AEAEA", "count", -5398, None),
    ("5BEA0234EA", "count", -365690134, None),
    ("434E34", "current", 13.39, "A"),
    ("5D02EA", "current", -5.63, "A"),
    ("08CA06", "dew_point", 17.38, "°C"),
    ("5E9F8C", "direction", 359.99, "°"),
    ("400C00", "distance_mm", 12, "mm"),
    ("414E00", "distance_m", 7.8, "m"),
    ("424E3400", "duration", 13.39, "s"),
    ("4d12138a14", "energy", 344593.17, "kWh"),
    ("0A138A14", "energy", 1346.067, "kWh"),
    ("4B138A14", "gas", 1346.067, "m³"),
    ("4C41018A01", "gas", 25821.505, "m³"),
    ("528756", "gyroscope", 22.151, "°/s"),
    ("03BF13", "humidity", 50.55, "%"),
    ("2E23", "humidity", 35, "%"),
    ("05138A14", "illuminance", 13460.67, "lx"),
    ("6402", "light_level", "bright", None),
    ("065E1F", "mass_kg", 80.3, "kg"),
    ("073E1D", "mass_lb", 74.86, "lb"),
    ("14020C", "moisture", 30.74, "%"),
    ("2F23", "moisture", 35, "%"),
    ("0D120C", "pm25", 3090, "µg/m³"),
    ("0E021C", "pm10", 7170, "µg/m³"),
    ("0B021B00", "power", 69.14, "W"),
    ("5C02FBFFFF", "power", -12.78, "W"),
    ("5FA00F", "precipitation", 400.0, "mm"),
    ("04138A01", "pressure", 1008.83, "hPa"),
    ("540C48656C6C6F20576F726C6421", "raw", "48656c6c6f20576f726c6421", None),
    ("3F020C", "rotation", 307.4, "°"),
    ("61AC0D", "rotational_speed", 3500, "rpm"),
    ("6503", "settings_revision", 3, None),
    ("444E34", "speed", 133.9, "m/s"),
    ("624099DFFF", "speed", -2.123456, "m/s"),
    ("57EA", "temperature", -22, "°C"),
    ("58EA", "temperature", -7.7, "°C"),
    ("451101", "temperature", 27.3, "°C"),
    ("02CA09", "temperature", 25.06, "°C"),
    ("530C48656C6C6F20576F726C6421", "text", "Hello World!", None),
    # "Timestamp": 0x5D396164 = 1684093277 s = 2023-05-14 19:41:17 UTC
    ("505d396164", "timestamp", "2023-05-14T19:41:17+00:00", None),
    ("133301", "tvoc", 307, "µg/m³"),
    ("0C020C", "voltage", 3.074, "V"),
    ("4A020C", "voltage", 307.4, "V"),
    ("4E87562A01", "volume", 19551.879, "L"),
    ("478756", "volume", 2215.1, "L"),
    ("48DC87", "volume_ml", 34780, "mL"),
    ("5587562A01", "volume_storage", 19551.879, "L"),
    ("49DC87", "volume_flow_rate", 34.78, "m³/h"),
    ("4632", "uv_index", 5.0, None),
    ("4F87562A01", "water", 19551.879, "L"),
]


@pytest.mark.parametrize(
    ("hex_object", "key", "expected", "unit"),
    SENSOR_ROWS,
    ids=[f"0x{row[0][:2].lower()}-{row[1]}" for row in SENSOR_ROWS],
)
def test_sensor_table_examples(
    hex_object: str, key: str, expected: object, unit: str | None
) -> None:
    reading = parse(hex_object)
    assert reading.values == {key: expected}
    assert type(reading.values[key]) is type(expected)
    assert reading.units == ({key: unit} if unit else {})


def test_every_documented_sensor_object_has_a_table_row() -> None:
    tested = {int(row[0][:2], 16) for row in SENSOR_ROWS}
    sensors = {spec.object_id for spec in OBJECTS if spec.kind is Kind.SENSOR}
    assert sensors == tested


# --- "Binary Sensor data" table: Example column, and the opposite value ------------------------

BINARY_ROWS = [
    ("1501", "battery_low", True),
    ("1601", "battery_charging", True),
    ("1700", "carbon_monoxide", False),
    ("1801", "cold", True),
    ("1900", "connectivity", False),
    ("1A00", "door", False),
    ("1B01", "garage_door", True),
    ("1C01", "gas_detected", True),
    ("0F01", "generic_boolean", True),
    ("1D00", "heat", False),
    ("1E01", "light", True),
    ("1F01", "lock", True),
    ("2001", "moisture_detected", True),
    ("2100", "motion", False),
    ("2201", "moving", True),
    ("2301", "occupancy", True),
    ("1100", "opening", False),
    ("2400", "plug", False),
    ("1001", "power_on", True),
    ("2500", "presence", False),
    ("2601", "problem", True),
    ("2701", "running", True),
    ("2800", "safety", False),
    ("2901", "smoke", True),
    ("2A00", "sound", False),
    ("2B00", "tamper", False),
    ("2C01", "vibration", True),
    ("2D01", "window", True),
]


@pytest.mark.parametrize(
    ("hex_object", "key", "expected"), BINARY_ROWS, ids=[r[1] for r in BINARY_ROWS]
)
def test_binary_table_examples(hex_object: str, key: str, expected: bool) -> None:
    assert parse(hex_object).values == {key: expected}
    flipped = hex_object[:2] + ("00" if expected else "01")
    assert parse(flipped).values == {key: not expected}
    assert parse(hex_object).units == {}


def test_every_documented_binary_object_has_a_table_row() -> None:
    tested = {int(row[0][:2], 16) for row in BINARY_ROWS}
    assert {spec.object_id for spec in OBJECTS if spec.kind is Kind.BINARY} == tested


# --- "Device information" table -----------------------------------------------------------------


def test_device_information_examples() -> None:
    assert parse("F00100").values == {"device_type_id": 1}
    assert parse("F100010204").values == {"firmware_version": "4.2.1.0"}
    assert parse("F2000106").values == {"firmware_version": "6.1.0"}


# --- "Events" table ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_object", "event_type"),
    [
        ("3A01", "press"),
        ("3A02", "double_press"),
        ("3A03", "triple_press"),
        ("3A04", "long_press"),
        ("3A05", "long_double_press"),
        ("3A06", "long_triple_press"),
        ("3A80", "hold_press"),
    ],
)
def test_button_events(hex_object: str, event_type: str) -> None:
    reading = parse(hex_object)
    assert reading.events == [Event("button", "button", event_type)]
    assert reading.values == {}


def test_dimmer_events() -> None:
    # Events table: 3C0103 = rotate left 3 steps, 3C020A = rotate right 10 steps, 3C0000 = none.
    assert parse("3C0103").events == [Event("dimmer", "dimmer", "rotate_left", steps=3)]
    assert parse("3C020A").events == [Event("dimmer", "dimmer", "rotate_right", steps=10)]
    assert parse("3C0000").events == []


def test_command_events() -> None:
    # "Commands": 3B0000 off, 3B0001 on, 3B0002 toggle, 3B010305 step up 5, 3B010405 step down 5.
    assert parse("3B0000").events == [Event("command", "command", "off")]
    assert parse("3B0001").events == [Event("command", "command", "on")]
    assert parse("3B0002").events == [Event("command", "command", "toggle")]
    assert parse("3B010305").events == [
        Event("command", "command", "step_up", steps=5, args=b"\x05")
    ]
    assert parse("3B010405").events == [
        Event("command", "command", "step_down", steps=5, args=b"\x05")
    ]
    # Built here: a manufacturer opcode with two argument bytes, followed by another object.
    reading = parse("3B021F0A0B3C0102")
    assert reading.events == [
        Event("command", "command", "opcode_0x1f", args=b"\x0a\x0b"),
        Event("dimmer", "dimmer", "rotate_left", steps=2),
    ]


def test_multiple_buttons_with_none_placeholder() -> None:
    # "Multiple events of the same type": 3A00 3A01 = nothing for button 1, press on button 2.
    assert parse("3A003A01").events == [Event("button_2", "button", "press")]
    assert parse("3A043A01").events == [
        Event("button", "button", "long_press"),
        Event("button_2", "button", "press"),
    ]


def test_undefined_button_event_is_ignored_but_payload_continues() -> None:
    # Built here: 0xFE is no button event id; its size is known, so the next object still counts.
    reading = parse("3AFE3A01")
    assert reading.events == [Event("button_2", "button", "press")]


# --- "Multiple measurements of the same type" ---------------------------------------------------


def test_multiple_measurements_of_same_type() -> None:
    # Built from the rule: same type again gets _2, _3 in payload order.
    reading = parse("02CA09" + "02C409" + "03BF13" + "451101")
    assert reading.values == {
        "temperature": 25.06,
        "temperature_2": 25.0,
        "humidity": 50.55,
        "temperature_3": 27.3,
    }
    assert reading.units["temperature_3"] == "°C"
    assert reading.in_order  # repeating an id keeps the order ascending


def test_order_is_reported_not_enforced() -> None:
    # The spec asks for ascending object ids; a receiver can still decode out-of-order payloads.
    reading = parse("03BF1302CA09")
    assert reading.values == {"humidity": 50.55, "temperature": 25.06}
    assert not reading.in_order
    assert parse("02CA0903BF13").in_order


# --- "Packet id" --------------------------------------------------------------------------------


def test_packet_id() -> None:
    # Packet id table: 0009 -> 9, not a value of the device.
    reading = parse("0009" + "0161" + "02CA09")
    assert reading.packet_id == 9
    assert reading.values == {"battery": 97, "temperature": 25.06}


# --- Device info byte ---------------------------------------------------------------------------


def test_trigger_based_flag() -> None:
    # "bit 2: Trigger based device flag": 0x44 = version 2, trigger based.
    reading = parse("3A01", info=b"\x44")
    assert reading.trigger_based
    assert reading.events == [Event("button", "button", "press")]


@pytest.mark.parametrize("info", [0x20, 0x60, 0xE0, 0x00, 0x21])
def test_other_versions_are_rejected(info: int) -> None:
    with pytest.raises(UnsupportedVersion) as caught:
        parse_bthome(bytes([info]) + bytes.fromhex("02CA09"), mac=MAC)
    assert caught.value.version == info >> 5


def test_mac_included_flag() -> None:
    # Bit 1 (reserved in the format page) as used in the field: reversed MAC after the info byte.
    reading = parse_bthome(bytes.fromhex("42B2188D38C1A404138A01"), mac=MAC)
    assert reading.address == "A4:C1:38:8D:18:B2"
    assert reading.values == {"pressure": 1008.83}


# --- Malformed payloads -------------------------------------------------------------------------


def test_empty_payload() -> None:
    with pytest.raises(Truncated):
        parse_bthome(b"", mac=MAC)


def test_only_device_info_is_an_empty_reading() -> None:
    assert parse("") == BTHomeReading()


@pytest.mark.parametrize(
    "hex_objects", ["02CA", "0161" + "04138A", "53", "530C4865", "3B01", "3C01"]
)
def test_truncated_object(hex_objects: str) -> None:
    with pytest.raises(Truncated):
        parse(hex_objects)


def test_truncated_keeps_earlier_values() -> None:
    with pytest.raises(Truncated) as caught:
        parse("0161" + "02CA")
    assert caught.value.partial is not None
    assert caught.value.partial.values == {"battery": 97}


def test_unknown_object_stops_parsing_and_keeps_earlier_values() -> None:
    # "A BTHome receiver will stop parsing object ids as soon as it finds an object id that
    # isn't supported."
    with pytest.raises(UnknownObject) as caught:
        parse("015D" + "FE5D09" + "03B718")
    error = caught.value
    assert error.object_id == 0xFE
    assert error.offset == 3  # after the info byte and the battery object
    assert error.partial is not None
    assert error.partial.values == {"battery": 93}
    assert isinstance(error, BTHomeError) and isinstance(error, ValueError)


def test_invalid_utf8_text_does_not_fail_the_advertisement() -> None:
    assert parse("530187" + "6001").values == {"text": "\ufffd", "channel": 1}


# --- Encryption ---------------------------------------------------------------------------------

# bthome.io/encryption worked example.
SPEC_KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
SPEC_MAC = "54:48:E6:8F:80:A5"
SPEC_SERVICE_DATA = bytes.fromhex("d2fc41e445f3c9962b332211006c7c4519")


def test_spec_encrypted_example() -> None:
    assert SPEC_SERVICE_DATA[:2] == b"\xd2\xfc"  # the UUID is not part of what we are given
    reading = parse_bthome(SPEC_SERVICE_DATA[2:], mac=SPEC_MAC, bind_key=SPEC_KEY)
    assert reading.values == {"temperature": 25.06, "humidity": 50.55}
    assert reading.encrypted
    assert reading.counter == 1122867


def test_mac_may_be_given_as_bytes() -> None:
    mac = bytes.fromhex(SPEC_MAC.replace(":", ""))
    reading = parse_bthome(SPEC_SERVICE_DATA[2:], mac=mac, bind_key=SPEC_KEY)
    assert reading.counter == 1122867


def encrypt(plaintext: bytes, *, key: bytes, mac: bytes, counter: int, info: int = 0x41) -> bytes:
    """Build an encrypted payload the way the encryption page describes, independently of the
    parser: nonce = MAC + UUID (little-endian) + device info + counter; 4-byte MIC appended."""
    counter_bytes = counter.to_bytes(4, "little")
    nonce = mac + b"\xd2\xfc" + bytes([info]) + counter_bytes
    sealed = AESCCM(key, tag_length=4).encrypt(nonce, plaintext, None)
    return bytes([info]) + sealed[:-4] + counter_bytes + sealed[-4:]


KEY = bytes(range(16))
DEVICE = bytes.fromhex("A4C1388D18B2")


def test_encrypted_round_trip_with_packet_id_and_event() -> None:
    plain = bytes.fromhex("0007" + "0164" + "2101" + "3A02")
    payload = encrypt(plain, key=KEY, mac=DEVICE, counter=7, info=0x45)
    reading = parse_bthome(payload, mac=MAC, bind_key=KEY, last_counter=6)
    assert reading == BTHomeReading(
        values={"battery": 100, "motion": True},
        units={"battery": "%"},
        events=[Event("button", "button", "double_press")],
        packet_id=7,
        encrypted=True,
        counter=7,
        trigger_based=True,
    )


def test_encrypted_with_mac_in_payload_uses_that_mac_for_the_nonce() -> None:
    info = 0x43
    counter = 5
    plain = bytes.fromhex("02CA09")
    nonce = DEVICE + b"\xd2\xfc" + bytes([info]) + counter.to_bytes(4, "little")
    sealed = AESCCM(KEY, tag_length=4).encrypt(nonce, plain, None)
    payload = (
        bytes([info]) + DEVICE[::-1] + sealed[:-4] + counter.to_bytes(4, "little") + sealed[-4:]
    )
    reading = parse_bthome(payload, mac="00:00:00:00:00:01", bind_key=KEY)
    assert reading.values == {"temperature": 25.06}
    assert reading.address == MAC


def test_wrong_key() -> None:
    with pytest.raises(DecryptionFailed):
        parse_bthome(SPEC_SERVICE_DATA[2:], mac=SPEC_MAC, bind_key=bytes(16))


def test_wrong_mac_fails_authentication() -> None:
    with pytest.raises(DecryptionFailed):
        parse_bthome(SPEC_SERVICE_DATA[2:], mac="54:48:E6:8F:80:A6", bind_key=SPEC_KEY)


@pytest.mark.parametrize("index", [1, 6, 8, 12])
def test_tampered_byte_fails_authentication(index: int) -> None:
    # Ciphertext, counter and MIC bytes are all covered by the check.
    payload = bytearray(SPEC_SERVICE_DATA[2:])
    payload[index] ^= 0x01
    with pytest.raises(DecryptionFailed):
        parse_bthome(bytes(payload), mac=SPEC_MAC, bind_key=SPEC_KEY)


def test_encrypted_without_key() -> None:
    with pytest.raises(BindKeyRequired) as caught:
        parse_bthome(SPEC_SERVICE_DATA[2:], mac=SPEC_MAC)
    assert isinstance(caught.value, DecryptionFailed)


def test_encrypted_too_short() -> None:
    with pytest.raises(Truncated):
        parse_bthome(bytes.fromhex("41BA0DB07AEEF600")[:8], mac=SPEC_MAC, bind_key=SPEC_KEY)
    with pytest.raises(Truncated):
        parse_bthome(bytes.fromhex("41" + "00" * 7), mac=SPEC_MAC, bind_key=SPEC_KEY)


def test_empty_encrypted_body_is_valid() -> None:
    payload = encrypt(b"", key=KEY, mac=DEVICE, counter=1)
    assert len(payload) == 9
    assert parse_bthome(payload, mac=DEVICE, bind_key=KEY).values == {}


@pytest.mark.parametrize("last_counter", [1122867, 1122868, 2**32 - 1])
def test_replayed_or_old_counter(last_counter: int) -> None:
    with pytest.raises(ReplayedCounter) as caught:
        parse_bthome(
            SPEC_SERVICE_DATA[2:], mac=SPEC_MAC, bind_key=SPEC_KEY, last_counter=last_counter
        )
    assert caught.value.counter == 1122867


def test_newer_counter_is_accepted() -> None:
    reading = parse_bthome(
        SPEC_SERVICE_DATA[2:], mac=SPEC_MAC, bind_key=SPEC_KEY, last_counter=1122866
    )
    assert reading.counter == 1122867


def test_forged_old_counter_is_a_decryption_failure_not_a_replay() -> None:
    payload = bytearray(SPEC_SERVICE_DATA[2:])
    payload[-8:-4] = (1).to_bytes(4, "little")
    with pytest.raises(DecryptionFailed):
        parse_bthome(bytes(payload), mac=SPEC_MAC, bind_key=SPEC_KEY, last_counter=100)


def test_downgrade_rejected() -> None:
    # A device with a bind key must not be spoofable by a plain advertisement with its address.
    with pytest.raises(DowngradeRejected):
        parse_bthome(bytes.fromhex("4004138A01"), mac=SPEC_MAC, bind_key=SPEC_KEY)


def test_bad_configuration_is_not_a_bthome_error() -> None:
    with pytest.raises(ValueError) as caught:
        parse_bthome(SPEC_SERVICE_DATA[2:], mac=SPEC_MAC, bind_key=b"short")
    assert not isinstance(caught.value, BTHomeError)
    with pytest.raises(ValueError) as caught:
        parse_bthome(SPEC_SERVICE_DATA[2:], mac="not-a-mac", bind_key=SPEC_KEY)
    assert not isinstance(caught.value, BTHomeError)


# --- Object table for Home Assistant ------------------------------------------------------------


def test_table_metadata_for_home_assistant() -> None:
    temperature = spec_for_key("temperature_2")
    assert temperature is not None
    assert (temperature.device_class, temperature.unit, temperature.state_class) == (
        "temperature",
        "°C",
        "measurement",
    )
    energy = spec_for_key("energy")
    assert energy is not None and energy.state_class == "total_increasing"
    door = spec_for_key("door")
    assert door is not None and door.kind is Kind.BINARY and door.device_class == "door"
    assert spec_for_key("nonsense") is None
    # Objects that share a key must agree on how the key is presented.
    for spec in OBJECTS:
        first = spec_for_key(spec.key)
        assert first is not None
        assert (first.unit, first.device_class, first.state_class, first.kind) == (
            spec.unit,
            spec.device_class,
            spec.state_class,
            spec.kind,
        ), spec
    assert BY_ID[0x02] is not None and BY_ID[0xFF] is None


# --- Robustness ---------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40))
def test_random_bytes_only_raise_bthome_errors(data: bytes) -> None:
    try:
        parse_bthome(data, mac=MAC)
    except BTHomeError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=30))
def test_random_plain_objects_only_raise_bthome_errors(objects: bytes) -> None:
    # Random bytes after a valid info byte reach the object decoder far more often.
    try:
        reading = parse_bthome(PLAIN + objects, mac=MAC)
    except BTHomeError:
        return
    assert set(reading.units) <= set(reading.values)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=30), st.integers(0, 2**32 - 1))
def test_random_encrypted_payloads_only_raise_bthome_errors(body: bytes, counter: int) -> None:
    try:
        parse_bthome(b"\x41" + body, mac=MAC, bind_key=KEY, last_counter=counter)
    except BTHomeError:
        pass
    # And genuinely encrypted random plaintexts decrypt, then decode or fail typed.
    payload = encrypt(body, key=KEY, mac=DEVICE, counter=counter)
    try:
        reading = parse_bthome(payload, mac=DEVICE, bind_key=KEY)
    except BTHomeError:
        return
    assert reading.counter == counter
