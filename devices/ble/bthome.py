"""BTHome v2 advertisement parser (https://bthome.io/format/, https://bthome.io/encryption/).

Pure: the service data of UUID 0xFCD2 in, a `BTHomeReading` out, typed errors for everything
else. No Bluetooth stack is involved; the scanner hands over bytes and the device's address.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from devices.ble.bthome_objects import (
    BUTTON_EVENTS,
    BY_ID,
    COMMAND_OPCODES,
    DIMMER_EVENTS,
    VARIABLE,
    Fmt,
    Kind,
    ObjectSpec,
)

# cryptography (its Rust bindings and libcrypto: ~6 MB of RSS) is imported at the first
# encrypted advertisement: most sensors send in clear, and a gateway without any pays nothing.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

SERVICE_UUID = 0xFCD2
_UUID_LE = SERVICE_UUID.to_bytes(2, "little")

_FLAG_ENCRYPTED = 0x01
# Bit 1 is "reserved" in the published format, but Home Assistant's parser and devices in the
# field use it to say "the 6-byte MAC (reversed) follows the device info byte". Supporting it
# costs nothing and keeps such devices readable.
_FLAG_MAC_INCLUDED = 0x02
_FLAG_TRIGGER_BASED = 0x04
_VERSION_SHIFT = 5
_SUPPORTED_VERSION = 2

_COUNTER_LEN = 4
_MIC_LEN = 4

Value = float | int | bool | str


class BTHomeError(ValueError):
    """An advertisement that cannot be (fully) trusted or decoded.

    `partial` holds what was decoded before the problem, where the spec wants a receiver to keep
    it (an unknown object id or truncated object after valid ones).
    """

    def __init__(self, message: str, *, partial: BTHomeReading | None = None) -> None:
        super().__init__(message)
        self.partial = partial


class UnsupportedVersion(BTHomeError):
    def __init__(self, version: int) -> None:
        super().__init__(f"BTHome version {version} is not supported (only 2)")
        self.version = version


class Truncated(BTHomeError):
    pass


class UnknownObject(BTHomeError):
    """An object id the table does not know; its size is unknown, so parsing stops there."""

    def __init__(self, object_id: int, offset: int, *, partial: BTHomeReading) -> None:
        super().__init__(
            f"unknown BTHome object id 0x{object_id:02x} at offset {offset}", partial=partial
        )
        self.object_id = object_id
        self.offset = offset


class DecryptionFailed(BTHomeError):
    pass


class BindKeyRequired(DecryptionFailed):
    """An encrypted advertisement for a device without a configured bind key."""


class ReplayedCounter(BTHomeError):
    def __init__(self, counter: int, last_counter: int) -> None:
        super().__init__(f"encryption counter {counter} is not above the last one ({last_counter})")
        self.counter = counter
        self.last_counter = last_counter


class DowngradeRejected(BTHomeError):
    """An unencrypted advertisement from a device that is configured with a bind key."""


@dataclass(frozen=True, slots=True)
class Event:
    key: str  # "button", "button_2", "dimmer", "command", ...
    device: str  # "button" | "dimmer" | "command"
    event_type: str  # "press", "rotate_left", "on", "step_up", "opcode_0x1f", ...
    steps: int | None = None  # dimmer rotation and command step up/down
    args: bytes = b""  # command arguments (opcode- and manufacturer-specific)


@dataclass(frozen=True, slots=True)
class BTHomeReading:
    values: dict[str, Value] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    packet_id: int | None = None
    encrypted: bool = False
    counter: int | None = None
    trigger_based: bool = False
    # False when object ids were not in ascending order; the spec asks senders for the order but
    # the values are still decodable, so this is reported, not rejected.
    in_order: bool = True
    # The MAC from the payload when the device includes one (see _FLAG_MAC_INCLUDED).
    address: str | None = None


def parse_bthome(
    service_data: bytes,
    *,
    mac: bytes | str,
    bind_key: bytes | None = None,
    last_counter: int | None = None,
) -> BTHomeReading:
    """Decode the payload of service data 0xFCD2 (the bytes after the UUID).

    `mac` is the advertiser's address (6 bytes, or "AA:BB:CC:DD:EE:FF"); it is only used for the
    nonce of encrypted payloads. With `bind_key` set, only authenticated encrypted payloads whose
    counter is above `last_counter` are accepted.
    """
    data = bytes(service_data)
    if not data:
        raise Truncated("empty BTHome service data")
    info = data[0]
    version = info >> _VERSION_SHIFT
    if version != _SUPPORTED_VERSION:
        raise UnsupportedVersion(version)
    encrypted = bool(info & _FLAG_ENCRYPTED)
    trigger_based = bool(info & _FLAG_TRIGGER_BASED)
    pos = 1
    address: str | None = None
    if info & _FLAG_MAC_INCLUDED:
        if len(data) < 7:
            raise Truncated("device info announces a MAC address but the payload is shorter")
        address = ":".join(f"{b:02X}" for b in reversed(data[1:7]))
        pos = 7

    counter: int | None = None
    if encrypted:
        if bind_key is None:
            raise BindKeyRequired("encrypted BTHome advertisement but no bind key configured")
        body = data[pos:]
        if len(body) < _COUNTER_LEN + _MIC_LEN:
            raise Truncated("encrypted BTHome payload shorter than counter + MIC")
        ciphertext = body[: -_COUNTER_LEN - _MIC_LEN]
        counter_bytes = body[-_COUNTER_LEN - _MIC_LEN : -_MIC_LEN]
        mic = body[-_MIC_LEN:]
        nonce_mac = _mac_bytes(address) if address is not None else _mac_bytes(mac)
        nonce = nonce_mac + _UUID_LE + bytes((info,)) + counter_bytes
        from cryptography.exceptions import InvalidTag

        try:
            plain = _cipher(bytes(bind_key)).decrypt(nonce, ciphertext + mic, None)
        except InvalidTag:
            raise DecryptionFailed("BTHome MIC check failed (wrong bind key or tampered)") from None
        counter = int.from_bytes(counter_bytes, "little")
        # Checked after authentication: the counter is part of the nonce, so only a genuine,
        # previously seen packet can get here with an old counter.
        if last_counter is not None and counter <= last_counter:
            raise ReplayedCounter(counter, last_counter)
        objects, base = plain, 0
    else:
        if bind_key is not None:
            raise DowngradeRejected(
                "unencrypted BTHome advertisement from a device configured with a bind key"
            )
        objects, base = data, pos
    return _parse_objects(
        objects,
        base,
        encrypted=encrypted,
        counter=counter,
        trigger_based=trigger_based,
        address=address,
    )


def _parse_objects(
    data: bytes,
    pos: int,
    *,
    encrypted: bool,
    counter: int | None,
    trigger_based: bool,
    address: str | None,
) -> BTHomeReading:
    values: dict[str, Value] = {}
    units: dict[str, str] = {}
    events: list[Event] = []
    seen: dict[str, int] = {}
    packet_id: int | None = None
    in_order = True
    previous_id = -1
    end = len(data)

    def reading() -> BTHomeReading:
        return BTHomeReading(
            values, units, events, packet_id, encrypted, counter, trigger_based, in_order, address
        )

    while pos < end:
        object_id = data[pos]
        spec = BY_ID[object_id]
        if spec is None:
            raise UnknownObject(object_id, pos, partial=reading())
        if object_id < previous_id:
            in_order = False
        previous_id = object_id
        start = pos + 1
        size = spec.size
        if size == VARIABLE:
            if start >= end:
                raise Truncated(
                    f"object 0x{object_id:02x} lacks its length byte", partial=reading()
                )
            # Commands: the length byte counts the arguments after the opcode, in its low 5 bits.
            size = data[start] & 0x1F if spec.fmt is Fmt.COMMAND else data[start]
            start += 1
            if spec.fmt is Fmt.COMMAND:
                size += 1
        stop = start + size
        if stop > end:
            raise Truncated(
                f"object 0x{object_id:02x} needs {size} bytes, {end - start} left",
                partial=reading(),
            )
        raw = data[start:stop]
        pos = stop

        kind = spec.kind
        if kind is Kind.PACKET_ID:
            packet_id = raw[0]
            continue
        n = seen.get(spec.key, 0) + 1
        seen[spec.key] = n
        key = spec.key if n == 1 else f"{spec.key}_{n}"
        if kind is Kind.EVENT:
            event = _event(spec, key, raw)
            if event is not None:
                events.append(event)
            continue
        values[key] = _value(spec, raw)
        if spec.unit is not None:
            units[key] = spec.unit
    return reading()


def _value(spec: ObjectSpec, raw: bytes) -> Value:
    fmt = spec.fmt
    if fmt is Fmt.UINT or fmt is Fmt.SINT:
        number = int.from_bytes(raw, "little", signed=fmt is Fmt.SINT)
        if spec.kind is Kind.BINARY:
            return number != 0
        if spec.factor == 1:
            return number
        return round(number * spec.factor, spec.ndigits)
    if fmt is Fmt.TEXT:
        # A garbled byte should not cost the other values of the advertisement.
        return raw.decode("utf-8", errors="replace")
    if fmt is Fmt.RAW:
        return raw.hex()
    if fmt is Fmt.TIMESTAMP:
        seconds = int.from_bytes(raw, "little")
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    if fmt is Fmt.VERSION:
        return ".".join(str(b) for b in reversed(raw))
    if fmt is Fmt.ENUM:
        index = raw[0]
        return spec.options[index] if index < len(spec.options) else str(index)
    raise AssertionError(f"no decoder for {fmt}")  # pragma: no cover - table/decoder mismatch


def _event(spec: ObjectSpec, key: str, raw: bytes) -> Event | None:
    fmt = spec.fmt
    code = raw[0]
    if fmt is Fmt.BUTTON:
        name = BUTTON_EVENTS.get(code)
        # "None" and ids the spec does not define: no event, but the slot still counts, so the
        # next button object is button_2 as the spec's two-button example requires.
        return None if name is None else Event(key, "button", name)
    if fmt is Fmt.DIMMER:
        name = DIMMER_EVENTS.get(code)
        return None if name is None else Event(key, "dimmer", name, steps=raw[1])
    # Command: opcode then arguments; step up/down carry the number of steps in one byte.
    args = raw[1:]
    name = COMMAND_OPCODES.get(code, f"opcode_0x{code:02x}")
    steps = args[0] if name in ("step_up", "step_down") and len(args) == 1 else None
    return Event(key, "command", name, steps=steps, args=args)


def _mac_bytes(mac: bytes | str) -> bytes:
    if isinstance(mac, str):
        digits = mac.replace(":", "").replace("-", "")
        try:
            mac = bytes.fromhex(digits)
        except ValueError:
            raise ValueError(f"not a MAC address: {mac!r}") from None
    if len(mac) != 6:
        raise ValueError(f"a MAC address has 6 bytes, got {len(mac)}")
    return bytes(mac)


@functools.lru_cache(maxsize=256)
def _cipher(bind_key: bytes) -> AESCCM:
    if len(bind_key) != 16:
        # A configuration error, not bad radio data: deliberately not a BTHomeError.
        raise ValueError(f"a BTHome bind key has 16 bytes, got {len(bind_key)}")
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    return AESCCM(bind_key, tag_length=_MIC_LEN)
