"""Wire primitives (MQTT 3.1.1 §1.5, MQTT 5.0 §1.5) and MQTT 5 properties (MQTT 5.0 §2.2.2).

Readers take ``(buf, pos, end)`` and return ``(value, new_pos)``; ``end`` is the end of the
packet being decoded, not of the buffer, because the buffer usually holds the packets that
follow. Overrunning ``end`` is a Malformed Packet. Writers raise ``ValueError`` for values that
cannot be represented: that is a programming error on our side, never the peer's.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.mqtt.errors import MalformedPacket, ProtocolError
from gateway.mqtt.packets import NO_PROPERTIES, PacketType, Properties

MAX_VBI: Final = 268_435_455

# Pseudo packet type for the Will Properties of a CONNECT (MQTT 5.0 §3.1.3.2): they have
# their own set of allowed identifiers.
WILL: Final = 0

# --------------------------------------------------------------------------- primitives


def read_vbi(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Variable Byte Integer (MQTT 5.0 §1.5.5): at most 4 bytes, minimally encoded."""
    value = 0
    shift = 0
    for i in range(4):
        if pos >= end:
            raise MalformedPacket("truncated variable byte integer")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            # A trailing zero group means the sender padded the integer, which the spec
            # forbids (MQTT-1.5.5-1); accepting it would let two encodings mean one value.
            if b == 0 and i:
                raise MalformedPacket("variable byte integer not minimally encoded")
            return value, pos
        shift += 7
    raise MalformedPacket("variable byte integer longer than 4 bytes")


_SMALL_VBI: Final = tuple(bytes((i,)) for i in range(128))


def vbi(n: int) -> bytes:
    if n < 128:
        if n < 0:
            raise ValueError(f"negative variable byte integer: {n}")
        return _SMALL_VBI[n]
    if n < 16384:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n > MAX_VBI:
        raise ValueError(f"variable byte integer too large: {n}")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def vbi_size(n: int) -> int:
    if n < 128:
        return 1
    if n < 16384:
        return 2
    if n < 2_097_152:
        return 3
    return 4


def read_u16(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos + 2 > end:
        raise MalformedPacket("truncated two byte integer")
    return (buf[pos] << 8) | buf[pos + 1], pos + 2


def read_str(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    """UTF-8 Encoded String (MQTT 5.0 §1.5.4, MQTT 3.1.1 §1.5.3)."""
    if pos + 2 > end:
        raise MalformedPacket("truncated string length")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("string runs past the end of the packet")
    try:
        # CPython's strict UTF-8 codec already rejects overlong forms, encoded surrogates
        # (U+D800..U+DFFF) and code points above U+10FFFF, which is what MQTT-1.5.4-1 asks.
        s = buf[pos + 2 : stop].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("string is not well-formed UTF-8") from None
    if "\x00" in s:
        raise MalformedPacket("string contains U+0000")
    return s, stop


def read_bin(buf: bytes, pos: int, end: int) -> tuple[bytes, int]:
    """Binary Data (MQTT 5.0 §1.5.6): two byte length then that many bytes."""
    if pos + 2 > end:
        raise MalformedPacket("truncated binary data length")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("binary data runs past the end of the packet")
    return bytes(buf[pos + 2 : stop]), stop


def u16(n: int) -> bytes:
    if not 0 <= n <= 0xFFFF:
        raise ValueError(f"not a two byte integer: {n}")
    return n.to_bytes(2, "big")


def write_str(s: str) -> bytes:
    if "\x00" in s:
        raise ValueError("MQTT strings must not contain U+0000")
    b = s.encode("utf-8")  # lone surrogates raise UnicodeEncodeError, a ValueError
    if len(b) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return len(b).to_bytes(2, "big") + b


def write_bin(b: bytes) -> bytes:
    if len(b) > 0xFFFF:
        raise ValueError("binary data longer than 65535 bytes")
    return len(b).to_bytes(2, "big") + bytes(b)


# --------------------------------------------------------------------------- properties

_BYTE, _U16, _U32, _VBI, _STR, _BIN, _PAIR = range(7)

_T = PacketType
_ALL_WITH_USER = frozenset(
    {
        _T.CONNECT,
        _T.CONNACK,
        _T.PUBLISH,
        WILL,
        _T.PUBACK,
        _T.PUBREC,
        _T.PUBREL,
        _T.PUBCOMP,
        _T.SUBSCRIBE,
        _T.SUBACK,
        _T.UNSUBSCRIBE,
        _T.UNSUBACK,
        _T.DISCONNECT,
        _T.AUTH,
    }
)
_PUB_WILL = frozenset({_T.PUBLISH, WILL})
_ACKS_WITH_REASON_STRING = frozenset(
    {
        _T.CONNACK,
        _T.PUBACK,
        _T.PUBREC,
        _T.PUBREL,
        _T.PUBCOMP,
        _T.SUBACK,
        _T.UNSUBACK,
        _T.DISCONNECT,
        _T.AUTH,
    }
)

USER_PROPERTY: Final = 0x26
SUBSCRIPTION_IDENTIFIER: Final = 0x0B

# MQTT 5.0 §2.2.2.2, Table 2-4: identifier -> (Properties field, data type, packet types).
_TABLE: Final[dict[int, tuple[str, int, frozenset[int]]]] = {
    0x01: ("payload_format_indicator", _BYTE, _PUB_WILL),
    0x02: ("message_expiry_interval", _U32, _PUB_WILL),
    0x03: ("content_type", _STR, _PUB_WILL),
    0x08: ("response_topic", _STR, _PUB_WILL),
    0x09: ("correlation_data", _BIN, _PUB_WILL),
    0x0B: ("subscription_identifiers", _VBI, frozenset({_T.PUBLISH, _T.SUBSCRIBE})),
    0x11: (
        "session_expiry_interval",
        _U32,
        frozenset({_T.CONNECT, _T.CONNACK, _T.DISCONNECT}),
    ),
    0x12: ("assigned_client_identifier", _STR, frozenset({_T.CONNACK})),
    0x13: ("server_keep_alive", _U16, frozenset({_T.CONNACK})),
    0x15: ("authentication_method", _STR, frozenset({_T.CONNECT, _T.CONNACK, _T.AUTH})),
    0x16: ("authentication_data", _BIN, frozenset({_T.CONNECT, _T.CONNACK, _T.AUTH})),
    0x17: ("request_problem_information", _BYTE, frozenset({_T.CONNECT})),
    0x18: ("will_delay_interval", _U32, frozenset({WILL})),
    0x19: ("request_response_information", _BYTE, frozenset({_T.CONNECT})),
    0x1A: ("response_information", _STR, frozenset({_T.CONNACK})),
    0x1C: ("server_reference", _STR, frozenset({_T.CONNACK, _T.DISCONNECT})),
    0x1F: ("reason_string", _STR, _ACKS_WITH_REASON_STRING),
    0x21: ("receive_maximum", _U16, frozenset({_T.CONNECT, _T.CONNACK})),
    0x22: ("topic_alias_maximum", _U16, frozenset({_T.CONNECT, _T.CONNACK})),
    0x23: ("topic_alias", _U16, frozenset({_T.PUBLISH})),
    0x24: ("maximum_qos", _BYTE, frozenset({_T.CONNACK})),
    0x25: ("retain_available", _BYTE, frozenset({_T.CONNACK})),
    0x26: ("user_properties", _PAIR, _ALL_WITH_USER),
    0x27: ("maximum_packet_size", _U32, frozenset({_T.CONNECT, _T.CONNACK})),
    0x28: ("wildcard_subscription_available", _BYTE, frozenset({_T.CONNACK})),
    0x29: ("subscription_identifier_available", _BYTE, frozenset({_T.CONNACK})),
    0x2A: ("shared_subscription_available", _BYTE, frozenset({_T.CONNACK})),
}

# Properties whose only legal values are 0 and 1; anything else is a Protocol Error
# (e.g. MQTT 5.0 §3.1.2.11.6, §3.2.2.3.4).
_BOOLEAN_BYTES: Final = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
# Properties for which 0 is a Protocol Error (MQTT 5.0 §3.1.2.11.3, §3.1.2.11.4, §3.3.2.3.8).
_NON_ZERO: Final = frozenset({0x21, 0x27, 0x0B})

_ENCODE_ORDER: Final = tuple(
    (name, pid, kind, allowed) for pid, (name, kind, allowed) in sorted(_TABLE.items())
)


# Decoded property blocks by (packet type, raw bytes). A client tends to send the same
# properties again and again (an expiry interval, a content type), and building a 27-field
# frozen Properties costs more than decoding the bytes; the result is immutable, so sharing it
# is safe, and identical bytes always validate the same way. Bounded by clearing when full.
_CACHE: dict[tuple[int, bytes], Properties] = {}
_CACHE_MAX_ENTRIES: Final = 512
_CACHE_MAX_BYTES: Final = 128


def decode_properties(buf: bytes, pos: int, end: int, ptype: int) -> tuple[Properties, int]:
    """Property Length then properties; returns the values and the position after them."""
    if pos < end and buf[pos] == 0:
        return NO_PROPERTIES, pos + 1
    length, pos = read_vbi(buf, pos, end)
    stop = pos + length
    if stop > end:
        raise MalformedPacket("properties run past the end of the packet")
    if length > _CACHE_MAX_BYTES:
        return _decode_properties(buf, pos, stop, ptype), stop
    key = (ptype, buf[pos:stop])
    props = _CACHE.get(key)
    if props is None:
        props = _decode_properties(buf, pos, stop, ptype)
        if len(_CACHE) >= _CACHE_MAX_ENTRIES:
            _CACHE.clear()
        _CACHE[key] = props
    return props, stop


def _decode_properties(buf: bytes, pos: int, stop: int, ptype: int) -> Properties:
    values: dict[str, Any] = {}
    users: list[tuple[str, str]] = []
    sub_ids: list[int] = []
    value: Any
    while pos < stop:
        pid = buf[pos]
        pos += 1
        entry = _TABLE.get(pid)
        if entry is None:
            # Every defined identifier is below 0x80, so a multi-byte identifier is unknown too.
            raise MalformedPacket(f"unknown property identifier 0x{pid:02x}")
        name, kind, allowed = entry
        if ptype not in allowed:
            # MQTT 5.0 §2.2.2.2: an identifier not valid for the packet type is malformed.
            raise MalformedPacket(f"property {name} not allowed in this packet")
        if kind == _BYTE:
            if pos >= stop:
                raise MalformedPacket("truncated byte property")
            value = buf[pos]
            pos += 1
        elif kind == _U16:
            value, pos = read_u16(buf, pos, stop)
        elif kind == _U32:
            if pos + 4 > stop:
                raise MalformedPacket("truncated four byte integer")
            value = int.from_bytes(buf[pos : pos + 4], "big")
            pos += 4
        elif kind == _VBI:
            value, pos = read_vbi(buf, pos, stop)
        elif kind == _STR:
            value, pos = read_str(buf, pos, stop)
        elif kind == _BIN:
            value, pos = read_bin(buf, pos, stop)
        else:
            key, pos = read_str(buf, pos, stop)
            val, pos = read_str(buf, pos, stop)
            users.append((key, val))
            continue
        if pid in _BOOLEAN_BYTES and value > 1:
            raise ProtocolError(f"property {name} must be 0 or 1, got {value}")
        if pid in _NON_ZERO and value == 0:
            raise ProtocolError(f"property {name} must not be 0")
        if pid == SUBSCRIPTION_IDENTIFIER:
            # A PUBLISH to a client carries one per matching subscription (§3.3.4);
            # anywhere else a second one is a duplicate.
            if sub_ids and ptype != PacketType.PUBLISH:
                raise ProtocolError("more than one subscription identifier")
            sub_ids.append(value)
            continue
        if name in values:
            raise ProtocolError(f"property {name} included more than once")
        values[name] = value
    if users:
        values["user_properties"] = tuple(users)
    if sub_ids:
        values["subscription_identifiers"] = tuple(sub_ids)
    if "authentication_data" in values and "authentication_method" not in values:
        # MQTT 5.0 §3.1.2.11.10, §3.2.2.3.18, §3.15.2.2.3.
        raise ProtocolError("authentication data without authentication method")
    return Properties(**values)


def _check_int(name: str, value: int, top: int) -> None:
    if not 0 <= value <= top:
        raise ValueError(f"property {name} out of range: {value}")


def properties_body(props: Properties, ptype: int) -> bytes:
    """The encoded properties without their length prefix."""
    parts: list[bytes] = []
    append = parts.append
    for name, pid, kind, allowed in _ENCODE_ORDER:
        value = getattr(props, name)
        if value is None or value == ():
            continue
        if ptype not in allowed:
            raise ValueError(f"property {name} is not allowed in packet type {ptype}")
        if kind == _BYTE:
            _check_int(name, value, 0xFF)
            append(bytes((pid, value)))
        elif kind == _U16:
            _check_int(name, value, 0xFFFF)
            append(bytes((pid,)) + value.to_bytes(2, "big"))
        elif kind == _U32:
            _check_int(name, value, 0xFFFF_FFFF)
            append(bytes((pid,)) + value.to_bytes(4, "big"))
        elif kind == _VBI:
            if ptype != PacketType.PUBLISH and len(value) > 1:
                raise ValueError("only a PUBLISH may carry several subscription identifiers")
            for sid in value:
                if not 1 <= sid <= MAX_VBI:
                    raise ValueError(f"subscription identifier out of range: {sid}")
                append(bytes((pid,)) + vbi(sid))
        elif kind == _STR:
            append(bytes((pid,)) + write_str(value))
        elif kind == _BIN:
            append(bytes((pid,)) + write_bin(value))
        else:
            for key, val in value:
                append(bytes((pid,)) + write_str(key) + write_str(val))
    return b"".join(parts)


def encode_properties(props: Properties, ptype: int) -> bytes:
    """Property Length followed by the properties (MQTT 5.0 §2.2.2.1)."""
    if props is NO_PROPERTIES:
        return b"\x00"
    body = properties_body(props, ptype)
    return vbi(len(body)) + body
