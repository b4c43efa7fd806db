"""Sans-I/O MQTT codec for MQTT 3.1 (MQIsdp), 3.1.1 and 5.0.

Bytes in, frozen packets out (:mod:`gateway.mqtt.packets`), and back. Decoding is strict:
every violation the specs let a receiver detect raises an :class:`MQTTError` subclass carrying
the reason code to report. A short buffer is never an error: :class:`StreamDecoder` keeps it
and waits for more. Encoding raises ``ValueError`` for packets that cannot be put on the wire
for the given protocol level (a programming error); fields that the level has no room for
(3.1.1 properties, ack reason codes) are simply left out.

Spec references: "3.1.1 §x" is the OASIS MQTT 3.1.1 standard, "5.0 §x" the OASIS MQTT 5.0 one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from gateway.mqtt.errors import (
    MalformedPacket,
    MQTTError,
    PacketTooLarge,
    ProtocolError,
    UnsupportedProtocolVersion,
)
from gateway.mqtt.packets import (
    NO_PROPERTIES,
    PROTOCOL_V5,
    PROTOCOL_V31,
    PROTOCOL_VERSIONS,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    new_publish,
)
from gateway.mqtt.properties import (
    MAX_VBI,
    WILL,
    decode_properties,
    encode_properties,
    read_bin,
    read_str,
    read_u16,
    u16,
    vbi,
    vbi_size,
    write_bin,
    write_str,
)
from gateway.mqtt.reason_codes import (
    AUTH_REASONS,
    CONNACK_REASONS,
    DISCONNECT_REASONS,
    PUBACK_REASONS,
    PUBREL_REASONS,
    SUBACK_REASONS,
    SUBACK_V311_REASONS,
    UNSUBACK_REASONS,
    ReasonCode,
    connack_code_for_v311,
)
from gateway.mqtt.topics import is_valid_topic_filter, is_valid_topic_name

__all__ = [
    "MAX_PACKET_SIZE",
    "StreamDecoder",
    "decode_packet",
    "encode",
    "encode_publish",
    "is_valid_topic_filter",
    "is_valid_topic_name",
    "publish_size",
]

# Largest packet the protocol can express: 1 type byte + 4 length bytes + 268,435,455.
MAX_PACKET_SIZE: Final = 268_435_460


def _check_topic_name(topic: str) -> None:
    if "+" in topic or "#" in topic:
        raise ProtocolError("wildcard in topic name", ReasonCode.TOPIC_NAME_INVALID)
    if "\x00" in topic:
        raise MalformedPacket("topic name contains U+0000")


# ------------------------------------------------------------------ decoding

_Decoder = Callable[[int, bytes, int, int, int], Packet]


def _extra(what: str) -> MalformedPacket:
    return MalformedPacket(f"unexpected bytes after the end of the {what}")


def _packet_id(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    pid, pos = read_u16(buf, pos, end)
    if not pid:
        # 3.1.1 §2.3.1 / 5.0 §2.2.1: packet identifiers are non-zero.
        raise ProtocolError("packet identifier 0")
    return pid, pos


def _d_connect(b0: int, buf: bytes, pos: int, end: int, v: int) -> Connect:
    # 3.1.1 §3.1, 5.0 §3.1. The level in the packet decides the layout, not ``v``.
    name, pos = read_str(buf, pos, end)
    if pos >= end:
        raise MalformedPacket("truncated CONNECT")
    level = buf[pos]
    pos += 1
    if name == "MQTT":
        supported = level in (4, 5)
    elif name == "MQIsdp":
        supported = level == 3
    else:
        # 3.1.1 §3.1.2.1: an unknown protocol name may simply be disconnected.
        raise ProtocolError(f"unknown protocol name {name!r}")
    if not supported:
        err = UnsupportedProtocolVersion(f"unsupported protocol level {level} for {name!r}")
        err.protocol_level = level
        raise err
    if pos + 3 > end:
        raise MalformedPacket("truncated CONNECT")
    flags = buf[pos]
    keep_alive = (buf[pos + 1] << 8) | buf[pos + 2]
    pos += 3
    if flags & 0x01:
        raise MalformedPacket("reserved CONNECT flag set")  # 3.1.1 §3.1.2.3, 5.0 §3.1.2.3
    will_flag = flags & 0x04
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    if will_qos == 3:
        raise MalformedPacket("will QoS 3")  # 5.0 §3.1.2.6
    if not will_flag and (will_qos or will_retain):
        raise MalformedPacket("will QoS/retain set without a will")  # 5.0 §3.1.2.6, §3.1.2.7
    has_password = flags & 0x40
    has_username = flags & 0x80
    if has_password and not has_username and level != 5:
        raise MalformedPacket("password without user name")  # 3.1.1 §3.1.2.9
    props = NO_PROPERTIES
    if level == 5:
        props, pos = decode_properties(buf, pos, end, PacketType.CONNECT)
    client_id, pos = read_str(buf, pos, end)
    will = None
    if will_flag:
        will_props = NO_PROPERTIES
        if level == 5:
            will_props, pos = decode_properties(buf, pos, end, WILL)
        will_topic, pos = read_str(buf, pos, end)
        if not will_topic:
            raise ProtocolError("empty will topic", ReasonCode.TOPIC_NAME_INVALID)
        _check_topic_name(will_topic)
        will_payload, pos = read_bin(buf, pos, end)
        will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
    username = None
    if has_username:
        username, pos = read_str(buf, pos, end)
    password = None
    if has_password:
        password, pos = read_bin(buf, pos, end)
    if pos != end:
        raise _extra("CONNECT")
    return Connect(
        client_id,
        level,
        name,
        bool(flags & 0x02),
        keep_alive,
        will,
        username,
        password,
        props,
    )


def _d_connack(b0: int, buf: bytes, pos: int, end: int, v: int) -> ConnAck:
    # 3.1.1 §3.2, 5.0 §3.2.
    if pos + 2 > end:
        raise MalformedPacket("truncated CONNACK")
    flags = buf[pos]
    rc = buf[pos + 1]
    if flags & 0xFE:
        raise MalformedPacket("reserved CONNACK flag set")
    if rc and flags:
        # 3.1.1 §3.2.2.2 (MQTT-3.2.2-4), 5.0 §3.2.2.1.1 (MQTT-3.2.2-6).
        raise ProtocolError("session present with a refused connection")
    props = NO_PROPERTIES
    if v == PROTOCOL_V5 and end - pos == 2 and 1 <= rc <= 5:
        # A 3.1.1-only server refuses our 5.0 CONNECT in its own format (3.1.1 §3.1.2.2,
        # MQTT-3.1.2-2: return code 1, no properties); let the client see that refusal and
        # fall back, instead of a decoding error.
        return ConnAck(False, rc)
    if v == PROTOCOL_V5:
        if rc not in CONNACK_REASONS:
            raise ProtocolError(f"invalid CONNACK reason code 0x{rc:02x}")
        props, pos = decode_properties(buf, pos + 2, end, PacketType.CONNACK)
        if pos != end:
            raise _extra("CONNACK")
    else:
        if end - pos != 2:
            raise _extra("CONNACK")
        if rc > 5:
            raise ProtocolError(f"invalid CONNACK return code {rc}")
    return ConnAck(bool(flags), rc, props)


def _d_publish(b0: int, buf: bytes, pos: int, end: int, v: int) -> Publish:
    # 3.1.1 §3.3, 5.0 §3.3. Hot path: no helper calls when there are no properties.
    if pos + 2 > end:
        raise MalformedPacket("truncated PUBLISH")
    stop = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("topic runs past the end of the PUBLISH")
    try:
        topic = buf[pos + 2 : stop].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("topic is not well-formed UTF-8") from None
    if "+" in topic or "#" in topic or "\x00" in topic:
        _check_topic_name(topic)
    pos = stop
    qos = (b0 >> 1) & 3
    if qos:
        if pos + 2 > end:
            raise MalformedPacket("truncated PUBLISH packet identifier")
        pid: int | None = (buf[pos] << 8) | buf[pos + 1]
        if not pid:
            raise ProtocolError("packet identifier 0")
        pos += 2
    else:
        pid = None
    if v == PROTOCOL_V5:
        if pos < end and buf[pos] == 0:
            props = NO_PROPERTIES
            pos += 1
        else:
            props, pos = decode_properties(buf, pos, end, PacketType.PUBLISH)
        if not topic and props.topic_alias is None:
            # 5.0 §3.3.2.1: an empty topic needs a topic alias.
            raise ProtocolError("empty topic name without a topic alias")
    else:
        props = NO_PROPERTIES
        if not topic:
            raise ProtocolError("empty topic name")  # 3.1.1 §4.7.3
    return new_publish(topic, buf[pos:end], qos, bool(b0 & 1), bool(b0 & 8), pid, props)


_AckClass = type[PubAck] | type[PubRec] | type[PubRel] | type[PubComp]


def _ack_decoder(cls: _AckClass, ptype: PacketType, valid: frozenset[int]) -> _Decoder:
    # 3.1.1 §3.4-§3.7, 5.0 §3.4-§3.7 (same layout for the four).
    def decode(b0: int, buf: bytes, pos: int, end: int, v: int) -> Packet:
        size = end - pos
        if size == 2 or (size > 2 and v == PROTOCOL_V5):
            pid = (buf[pos] << 8) | buf[pos + 1]
            if not pid:
                raise ProtocolError("packet identifier 0")
            if size == 2:
                return cls(pid)  # 5.0 §3.4.2.1: no reason code means 0x00
            rc = buf[pos + 2]
            if rc not in valid:
                raise ProtocolError(f"invalid {ptype.name} reason code 0x{rc:02x}")
            if size == 3:
                return cls(pid, rc)
            props, pos = decode_properties(buf, pos + 3, end, ptype)
            if pos != end:
                raise _extra(ptype.name)
            return cls(pid, rc, props)
        if size < 2:
            raise MalformedPacket(f"truncated {ptype.name}")
        raise _extra(ptype.name)

    return decode


def _d_subscribe(b0: int, buf: bytes, pos: int, end: int, v: int) -> Subscribe:
    # 3.1.1 §3.8, 5.0 §3.8.
    pid, pos = _packet_id(buf, pos, end)
    props = NO_PROPERTIES
    v5 = v == PROTOCOL_V5
    if v5:
        props, pos = decode_properties(buf, pos, end, PacketType.SUBSCRIBE)
    subs: list[Subscription] = []
    while pos < end:
        topic_filter, pos = read_str(buf, pos, end)
        if pos >= end:
            raise MalformedPacket("subscription options missing")
        opts = buf[pos]
        pos += 1
        qos = opts & 3
        if qos == 3:
            raise MalformedPacket("subscription QoS 3")
        if v5:
            if opts & 0xC0:
                raise MalformedPacket("reserved subscription option bits set")  # §3.8.3.1
            retain_handling = (opts >> 4) & 3
            if retain_handling == 3:
                raise ProtocolError("retain handling 3")  # §3.8.3.1
            no_local = bool(opts & 4)
        else:
            if opts & 0xFC:
                raise MalformedPacket("reserved requested-QoS bits set")  # 3.1.1 §3.8.3.1
            retain_handling = 0
            no_local = False
        if not is_valid_topic_filter(topic_filter):
            raise ProtocolError(
                f"invalid topic filter {topic_filter!r}", ReasonCode.TOPIC_FILTER_INVALID
            )
        if no_local and topic_filter.startswith("$share/"):
            raise ProtocolError("no local on a shared subscription")  # 5.0 §3.8.3.1
        subs.append(Subscription(topic_filter, qos, no_local, bool(opts & 8), retain_handling))
    if not subs:
        raise ProtocolError("SUBSCRIBE without topic filters")  # 3.1.1 §3.8.3, 5.0 §3.8.3
    return Subscribe(pid, tuple(subs), props)


def _d_suback(b0: int, buf: bytes, pos: int, end: int, v: int) -> SubAck:
    # 3.1.1 §3.9, 5.0 §3.9.
    pid, pos = _packet_id(buf, pos, end)
    props = NO_PROPERTIES
    valid = SUBACK_V311_REASONS
    if v == PROTOCOL_V5:
        props, pos = decode_properties(buf, pos, end, PacketType.SUBACK)
        valid = SUBACK_REASONS
    codes = tuple(buf[pos:end])
    if not codes:
        raise ProtocolError("SUBACK without reason codes")
    for rc in codes:
        if rc not in valid:
            raise ProtocolError(f"invalid SUBACK reason code 0x{rc:02x}")
    return SubAck(pid, codes, props)


def _d_unsubscribe(b0: int, buf: bytes, pos: int, end: int, v: int) -> Unsubscribe:
    # 3.1.1 §3.10, 5.0 §3.10.
    pid, pos = _packet_id(buf, pos, end)
    props = NO_PROPERTIES
    if v == PROTOCOL_V5:
        props, pos = decode_properties(buf, pos, end, PacketType.UNSUBSCRIBE)
    filters: list[str] = []
    while pos < end:
        topic_filter, pos = read_str(buf, pos, end)
        if not is_valid_topic_filter(topic_filter):
            raise ProtocolError(
                f"invalid topic filter {topic_filter!r}", ReasonCode.TOPIC_FILTER_INVALID
            )
        filters.append(topic_filter)
    if not filters:
        raise ProtocolError("UNSUBSCRIBE without topic filters")  # 3.1.1 §3.10.3
    return Unsubscribe(pid, tuple(filters), props)


def _d_unsuback(b0: int, buf: bytes, pos: int, end: int, v: int) -> UnsubAck:
    # 3.1.1 §3.11 (packet identifier only), 5.0 §3.11.
    pid, pos = _packet_id(buf, pos, end)
    if v != PROTOCOL_V5:
        if pos != end:
            raise _extra("UNSUBACK")
        return UnsubAck(pid)
    props, pos = decode_properties(buf, pos, end, PacketType.UNSUBACK)
    codes = tuple(buf[pos:end])
    if not codes:
        raise ProtocolError("UNSUBACK without reason codes")
    for rc in codes:
        if rc not in UNSUBACK_REASONS:
            raise ProtocolError(f"invalid UNSUBACK reason code 0x{rc:02x}")
    return UnsubAck(pid, codes, props)


_PINGREQ: Final = PingReq()
_PINGRESP: Final = PingResp()


def _d_pingreq(b0: int, buf: bytes, pos: int, end: int, v: int) -> PingReq:
    if pos != end:
        raise _extra("PINGREQ")  # 3.1.1 §3.12, 5.0 §3.12
    return _PINGREQ


def _d_pingresp(b0: int, buf: bytes, pos: int, end: int, v: int) -> PingResp:
    if pos != end:
        raise _extra("PINGRESP")  # 3.1.1 §3.13, 5.0 §3.13
    return _PINGRESP


def _reason_and_props(
    buf: bytes, pos: int, end: int, ptype: PacketType, valid: frozenset[int]
) -> tuple[int, Properties]:
    # DISCONNECT and AUTH (5.0 §3.14.2, §3.15.2): length 0 means reason 0x00, length 1 means
    # a reason code without properties.
    if pos == end:
        return 0, NO_PROPERTIES
    rc = buf[pos]
    if rc not in valid:
        raise ProtocolError(f"invalid {ptype.name} reason code 0x{rc:02x}")
    if pos + 1 == end:
        return rc, NO_PROPERTIES
    props, pos = decode_properties(buf, pos + 1, end, ptype)
    if pos != end:
        raise _extra(ptype.name)
    return rc, props


def _d_disconnect(b0: int, buf: bytes, pos: int, end: int, v: int) -> Disconnect:
    if v != PROTOCOL_V5:
        if pos != end:
            raise _extra("DISCONNECT")  # 3.1.1 §3.14
        return Disconnect()
    rc, props = _reason_and_props(buf, pos, end, PacketType.DISCONNECT, DISCONNECT_REASONS)
    return Disconnect(rc, props)


def _d_auth(b0: int, buf: bytes, pos: int, end: int, v: int) -> Auth:
    rc, props = _reason_and_props(buf, pos, end, PacketType.AUTH, AUTH_REASONS)
    return Auth(rc, props)


def _d_second_connect(b0: int, buf: bytes, pos: int, end: int, v: int) -> Packet:
    # 3.1.1 §3.1 (MQTT-3.1.0-2), 5.0 §3.1: a second CONNECT is a protocol violation.
    raise ProtocolError("second CONNECT on the connection")


def _table(v: int | None, connect: _Decoder) -> tuple[_Decoder | None, ...]:
    """Decoder for each possible first byte; None where type or flags are invalid."""
    table: list[_Decoder | None] = [None] * 256
    table[0x10] = connect
    if v is None:
        return tuple(table)
    fixed: dict[int, _Decoder] = {
        0x20: _d_connack,
        0x40: _ack_decoder(PubAck, PacketType.PUBACK, PUBACK_REASONS),
        0x50: _ack_decoder(PubRec, PacketType.PUBREC, PUBACK_REASONS),
        0x62: _ack_decoder(PubRel, PacketType.PUBREL, PUBREL_REASONS),
        0x70: _ack_decoder(PubComp, PacketType.PUBCOMP, PUBREL_REASONS),
        0x82: _d_subscribe,
        0x90: _d_suback,
        0xA2: _d_unsubscribe,
        0xB0: _d_unsuback,
        0xC0: _d_pingreq,
        0xD0: _d_pingresp,
        0xE0: _d_disconnect,
    }
    if v == PROTOCOL_V5:
        fixed[0xF0] = _d_auth  # reserved type in 3.1.1
    for b0, dec in fixed.items():
        table[b0] = dec
    for flags in range(16):
        qos = (flags >> 1) & 3
        # 3.1.1 §3.3.1.2 / 5.0 §3.3.1.2: QoS 3 is malformed; MQTT-3.3.1-2: no DUP on QoS 0.
        if qos != 3 and not (qos == 0 and flags & 8):
            table[0x30 | flags] = _d_publish
    return tuple(table)


# Tables for a decoder told its version up front (CONNECT accepted) and for one that learned
# it from a CONNECT (a second CONNECT is refused); index None is "no CONNECT seen yet".
_FIXED_TABLES: Final = {v: _table(v, _d_connect) for v in (3, 4, 5)}
_LEARNED_TABLES: Final = {v: _table(v, _d_second_connect) for v in (3, 4, 5)}
_PRE_CONNECT_TABLE: Final = _table(None, _d_connect)


def _bad_first_byte(b0: int, v: int | None) -> MQTTError:
    ptype = b0 >> 4
    if v is None and ptype != PacketType.CONNECT:
        return ProtocolError(f"expected CONNECT, got packet type {ptype}")
    if ptype == 0 or (ptype == PacketType.AUTH and v != PROTOCOL_V5):
        return MalformedPacket(f"reserved packet type {ptype}")
    if ptype == PacketType.PUBLISH:
        return MalformedPacket("PUBLISH with QoS 3 or with DUP on QoS 0")
    return MalformedPacket(f"invalid fixed header flags 0x{b0 & 15:x} for packet type {ptype}")


def _peek_connect_level(buf: bytes, start: int, stop: int) -> int | None:
    """The protocol level byte of a CONNECT body, if the body reaches it."""
    if start + 2 > stop:
        return None
    at = start + 2 + ((buf[start] << 8) | buf[start + 1])
    return buf[at] if at < stop else None


def _remaining_length(buf: bytes, pos: int, n: int) -> tuple[int, int]:
    """Remaining length at ``buf[pos]``; (-1, pos) when the buffer ends inside it."""
    value = 0
    shift = 0
    for i in range(4):
        if pos >= n:
            return -1, pos
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0 and i:
                raise MalformedPacket("remaining length not minimally encoded")  # MQTT-1.5.5-1
            return value, pos
        shift += 7
    raise MalformedPacket("remaining length longer than 4 bytes")  # 3.1.1 §2.2.3


def decode_packet(data: bytes, protocol_version: int) -> tuple[Packet, int] | None:
    """Decode one packet from the start of ``data``: (packet, bytes used), or None if short.

    A CONNECT is decoded in the layout of the level it carries, whatever ``protocol_version``.
    """
    if protocol_version not in PROTOCOL_VERSIONS:
        raise ValueError(f"unknown protocol version {protocol_version}")
    buf = bytes(data)
    n = len(buf)
    if not n:
        return None
    b0 = buf[0]
    dec = _FIXED_TABLES[protocol_version][b0]
    if dec is None:
        raise _bad_first_byte(b0, protocol_version)
    length, start = _remaining_length(buf, 1, n)
    if length < 0 or start + length > n:
        return None
    stop = start + length
    return dec(b0, buf, start, stop, protocol_version), stop


class StreamDecoder:
    """Incremental decoder for one connection's inbound byte stream.

    With ``protocol_version=None`` (a server) the first packet must be a CONNECT; its level
    becomes :attr:`protocol_version` and a second CONNECT is then a protocol error. After an
    error the decoder is dead: every later :meth:`feed` raises the same error again.
    """

    __slots__ = (
        "_chunks",
        "_error",
        "_have",
        "_need",
        "_rest",
        "_table",
        "max_packet_size",
        "protocol_version",
        "requested_protocol_level",
    )

    def __init__(
        self, max_packet_size: int = MAX_PACKET_SIZE, protocol_version: int | None = None
    ) -> None:
        if protocol_version is not None and protocol_version not in PROTOCOL_VERSIONS:
            raise ValueError(f"unknown protocol version {protocol_version}")
        if max_packet_size < 2:
            raise ValueError("max_packet_size below the smallest packet")
        self.max_packet_size = max_packet_size
        self.protocol_version: int | None = protocol_version
        # Level byte of the last CONNECT seen, set even when that CONNECT is then refused
        # (UnsupportedProtocolVersion, MalformedPacket, ...), so that the server can answer
        # in a format the client reads: 3.1.1 CONNACK 0x01 or a 5.0 CONNACK with a reason.
        self.requested_protocol_level: int | None = None
        self._table = (
            _PRE_CONNECT_TABLE if protocol_version is None else _FIXED_TABLES[protocol_version]
        )
        self._rest = b""  # unparsed bytes when the next packet's size is still unknown
        self._chunks: list[bytes] = []  # pieces of a packet whose size is known
        self._have = 0
        self._need = 0  # total size of that packet, 0 when none is pending
        self._error: MQTTError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a returned packet."""
        return len(self._rest) + self._have

    def feed(self, data: bytes) -> list[Packet]:
        """Append ``data``; return every packet now complete (maybe none)."""
        if self._error is not None:
            raise self._error
        if self._need:
            # A big packet arriving in pieces: join once when it is complete, not per piece.
            self._chunks.append(bytes(data))
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join(self._chunks)
            self._chunks = []
            self._have = self._need = 0
        elif self._rest:
            buf = self._rest + data
        else:
            buf = bytes(data)
        try:
            return self._parse(buf)
        except MQTTError as exc:
            self._error = exc
            self._rest = b""
            self._chunks = []
            self._have = self._need = 0
            raise

    def _parse(self, buf: bytes) -> list[Packet]:
        out: list[Packet] = []
        table = self._table
        v = self.protocol_version
        limit = self.max_packet_size
        n = len(buf)
        pos = 0
        while pos < n:
            b0 = buf[pos]
            dec = table[b0]
            if dec is None:
                raise _bad_first_byte(b0, v)
            if pos + 1 >= n:
                break
            b1 = buf[pos + 1]
            if b1 < 0x80:
                start = pos + 2
                stop = start + b1
            else:
                length, start = _remaining_length(buf, pos + 1, n)
                if length < 0:
                    break
                stop = start + length
            if stop - pos > limit:
                raise PacketTooLarge(f"packet of {stop - pos} bytes exceeds {limit}")
            if stop > n:
                self._need = stop - pos
                self._have = n - pos
                self._chunks = [buf[pos:]]
                self._rest = b""
                return out
            if b0 == 0x10:
                # Known before the rest is validated, so that a server can answer a bad
                # CONNECT with a CONNACK in the format the client reads (5.0 §4.13.1).
                self.requested_protocol_level = _peek_connect_level(buf, start, stop)
            if v is None:
                packet = dec(b0, buf, start, stop, 0)
                assert isinstance(packet, Connect)
                v = self.protocol_version = packet.protocol_version
                table = self._table = _LEARNED_TABLES[v]
            else:
                packet = dec(b0, buf, start, stop, v)
            out.append(packet)
            pos = stop
        self._rest = buf[pos:] if pos < n else b""
        return out


# ------------------------------------------------------------------ encoding


def _fixed(b0: int, body: bytes) -> bytes:
    n = len(body)
    if n < 128:
        return bytes((b0, n)) + body
    if n > MAX_VBI:
        raise ValueError("packet too large for MQTT")
    return bytes((b0,)) + vbi(n) + body


def _check_pid(pid: int | None) -> int:
    if pid is None or not 0 < pid <= 0xFFFF:
        raise ValueError(f"packet identifier must be 1..65535, got {pid}")
    return pid


def _check_version(v: int) -> None:
    if v not in PROTOCOL_VERSIONS:
        raise ValueError(f"unknown protocol version {v}")


def encode_publish(packet: Publish, protocol_version: int) -> bytes:
    """PUBLISH (3.1.1 §3.3, 5.0 §3.3); same bytes as :func:`encode`."""
    qos = packet.qos
    pid = packet.packet_id
    topic = packet.topic
    if qos:
        if qos != 1 and qos != 2:
            raise ValueError(f"invalid QoS {qos}")
        if pid is None or not 0 < pid <= 0xFFFF:
            raise ValueError(f"QoS {qos} PUBLISH needs a packet identifier 1..65535, got {pid}")
        pid_bytes = bytes((pid >> 8, pid & 0xFF))
    else:
        if pid is not None:
            raise ValueError("QoS 0 PUBLISH must not have a packet identifier")
        if packet.dup:
            raise ValueError("QoS 0 PUBLISH must not have DUP set")
        pid_bytes = b""
    if "+" in topic or "#" in topic or "\x00" in topic:
        raise ValueError(f"invalid topic name {topic!r}")
    topic_bytes = topic.encode("utf-8")
    if protocol_version == PROTOCOL_V5:
        props = packet.properties
        if props is NO_PROPERTIES:
            prop_bytes = b"\x00"
        else:
            prop_bytes = encode_properties(props, PacketType.PUBLISH)
        if not topic_bytes and props.topic_alias is None:
            raise ValueError("empty topic name without a topic alias")
    elif protocol_version == 4 or protocol_version == 3:
        prop_bytes = b""
        if not topic_bytes:
            raise ValueError("empty topic name")
    else:
        raise ValueError(f"unknown protocol version {protocol_version}")
    tlen = len(topic_bytes)
    if tlen > 0xFFFF:
        raise ValueError("topic name longer than 65535 bytes")
    payload = packet.payload
    rl = 2 + tlen + len(pid_bytes) + len(prop_bytes) + len(payload)
    b0 = 0x30 | (qos << 1)
    if packet.dup:
        b0 |= 8
    if packet.retain:
        b0 |= 1
    if rl < 128:
        head = bytes((b0, rl, tlen >> 8, tlen & 0xFF))
    else:
        if rl > MAX_VBI:
            raise ValueError("PUBLISH too large for MQTT")
        head = bytes((b0,)) + vbi(rl) + bytes((tlen >> 8, tlen & 0xFF))
    return b"".join((head, topic_bytes, pid_bytes, prop_bytes, payload))


def publish_size(packet: Publish, protocol_version: int) -> int:
    """``len(encode_publish(packet, protocol_version))`` without building the payload copy."""
    topic = packet.topic
    tlen = len(topic) if topic.isascii() else len(topic.encode("utf-8"))
    rl = 2 + tlen + len(packet.payload)
    if packet.qos:
        rl += 2
    if protocol_version == PROTOCOL_V5:
        props = packet.properties
        rl += 1 if props is NO_PROPERTIES else len(encode_properties(props, PacketType.PUBLISH))
    return 1 + vbi_size(rl) + rl


def _e_connect(p: Connect, v: int) -> bytes:
    if (p.protocol_version == PROTOCOL_V5) != (v == PROTOCOL_V5):
        raise ValueError(f"CONNECT of level {p.protocol_version} encoded as version {v}")
    if not 0 <= p.protocol_version <= 0xFF:
        raise ValueError(f"invalid protocol level {p.protocol_version}")
    flags = 0x02 if p.clean_start else 0
    payload = [write_str(p.client_id)]
    will = p.will
    if will is not None:
        if will.qos not in (0, 1, 2):
            raise ValueError(f"invalid will QoS {will.qos}")
        if not is_valid_topic_name(will.topic):
            raise ValueError(f"invalid will topic {will.topic!r}")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        if v == PROTOCOL_V5:
            payload.append(encode_properties(will.properties, WILL))
        payload.append(write_str(will.topic))
        payload.append(write_bin(will.payload))
    if p.username is not None:
        flags |= 0x80
        payload.append(write_str(p.username))
    if p.password is not None:
        if p.username is None and v != PROTOCOL_V5:
            raise ValueError("MQTT 3.1.1 forbids a password without a user name")
        flags |= 0x40
        payload.append(write_bin(p.password))
    head = write_str(p.protocol_name) + bytes((p.protocol_version, flags)) + u16(p.keep_alive)
    if v == PROTOCOL_V5:
        head += encode_properties(p.properties, PacketType.CONNECT)
    return _fixed(0x10, head + b"".join(payload))


def _e_connack(p: ConnAck, v: int) -> bytes:
    rc = p.reason_code
    if v == PROTOCOL_V5:
        if rc not in CONNACK_REASONS:
            raise ValueError(f"invalid CONNACK reason code 0x{rc:02x}")
        props = encode_properties(p.properties, PacketType.CONNACK)
    else:
        if rc >= 0x80:
            rc = connack_code_for_v311(rc)  # lets the broker speak 5.0 reason codes to all
        elif not 0 <= rc <= 5:
            raise ValueError(f"invalid 3.1.1 CONNACK return code {rc}")
        props = b""
    if rc and p.session_present:
        raise ValueError("session present with a refused connection")
    # MQTT 3.1 has no session present flag: its first byte is reserved, always 0.
    flags = 1 if p.session_present and v != PROTOCOL_V31 else 0
    return _fixed(0x20, bytes((flags, rc)) + props)


_AckPacket = PubAck | PubRec | PubRel | PubComp


def _ack_encoder(
    b0: int, ptype: PacketType, valid: frozenset[int]
) -> Callable[[_AckPacket, int], bytes]:
    def encode(p: _AckPacket, v: int) -> bytes:
        pid = _check_pid(p.packet_id)
        if v == PROTOCOL_V5:
            rc = p.reason_code
            if rc not in valid:
                raise ValueError(f"invalid {ptype.name} reason code 0x{rc:02x}")
            props = encode_properties(p.properties, ptype)
            if props == b"\x00":
                # 5.0 §3.4.2.1: the short forms, as other brokers send them.
                if rc == 0:
                    return bytes((b0, 2, pid >> 8, pid & 0xFF))
                return bytes((b0, 3, pid >> 8, pid & 0xFF, rc))
            return _fixed(b0, bytes((pid >> 8, pid & 0xFF, rc)) + props)
        return bytes((b0, 2, pid >> 8, pid & 0xFF))

    return encode


def _e_subscribe(p: Subscribe, v: int) -> bytes:
    pid = _check_pid(p.packet_id)
    if not p.subscriptions:
        raise ValueError("SUBSCRIBE needs at least one subscription")
    parts = [u16(pid)]
    v5 = v == PROTOCOL_V5
    if v5:
        parts.append(encode_properties(p.properties, PacketType.SUBSCRIBE))
    for sub in p.subscriptions:
        if not is_valid_topic_filter(sub.topic_filter):
            raise ValueError(f"invalid topic filter {sub.topic_filter!r}")
        if sub.qos not in (0, 1, 2) or sub.retain_handling not in (0, 1, 2):
            raise ValueError(f"invalid subscription options {sub}")
        opts = sub.qos
        if v5:
            opts |= sub.retain_handling << 4
            if sub.no_local:
                opts |= 4
            if sub.retain_as_published:
                opts |= 8
        parts.append(write_str(sub.topic_filter))
        parts.append(bytes((opts,)))
    return _fixed(0x82, b"".join(parts))


def _e_suback(p: SubAck, v: int) -> bytes:
    pid = _check_pid(p.packet_id)
    if not p.reason_codes:
        raise ValueError("SUBACK needs at least one reason code")
    if v == PROTOCOL_V5:
        for rc in p.reason_codes:
            if rc not in SUBACK_REASONS:
                raise ValueError(f"invalid SUBACK reason code 0x{rc:02x}")
        codes = bytes(p.reason_codes)
        props = encode_properties(p.properties, PacketType.SUBACK)
    else:
        # 3.1.1 has one failure code; any 5.0 failure reason becomes it.
        mapped = []
        for rc in p.reason_codes:
            if rc >= 0x80:
                rc = 0x80
            elif rc > 2:
                raise ValueError(f"invalid SUBACK return code 0x{rc:02x}")
            mapped.append(rc)
        codes = bytes(mapped)
        props = b""
    return _fixed(0x90, u16(pid) + props + codes)


def _e_unsubscribe(p: Unsubscribe, v: int) -> bytes:
    pid = _check_pid(p.packet_id)
    if not p.topic_filters:
        raise ValueError("UNSUBSCRIBE needs at least one topic filter")
    parts = [u16(pid)]
    if v == PROTOCOL_V5:
        parts.append(encode_properties(p.properties, PacketType.UNSUBSCRIBE))
    for topic_filter in p.topic_filters:
        if not is_valid_topic_filter(topic_filter):
            raise ValueError(f"invalid topic filter {topic_filter!r}")
        parts.append(write_str(topic_filter))
    return _fixed(0xA2, b"".join(parts))


def _e_unsuback(p: UnsubAck, v: int) -> bytes:
    pid = _check_pid(p.packet_id)
    if v != PROTOCOL_V5:
        return bytes((0xB0, 2, pid >> 8, pid & 0xFF))
    if not p.reason_codes:
        raise ValueError("a 5.0 UNSUBACK needs one reason code per topic filter")
    for rc in p.reason_codes:
        if rc not in UNSUBACK_REASONS:
            raise ValueError(f"invalid UNSUBACK reason code 0x{rc:02x}")
    props = encode_properties(p.properties, PacketType.UNSUBACK)
    return _fixed(0xB0, u16(pid) + props + bytes(p.reason_codes))


def _e_pingreq(p: PingReq, v: int) -> bytes:
    return b"\xc0\x00"


def _e_pingresp(p: PingResp, v: int) -> bytes:
    return b"\xd0\x00"


def _e_disconnect(p: Disconnect, v: int) -> bytes:
    if v != PROTOCOL_V5:
        return b"\xe0\x00"
    rc = p.reason_code
    if rc not in DISCONNECT_REASONS:
        raise ValueError(f"invalid DISCONNECT reason code 0x{rc:02x}")
    props = encode_properties(p.properties, PacketType.DISCONNECT)
    if props == b"\x00":
        return b"\xe0\x00" if rc == 0 else bytes((0xE0, 1, rc))  # 5.0 §3.14.2.1
    return _fixed(0xE0, bytes((rc,)) + props)


def _e_auth(p: Auth, v: int) -> bytes:
    if v != PROTOCOL_V5:
        raise ValueError("AUTH exists only in MQTT 5.0")
    rc = p.reason_code
    if rc not in AUTH_REASONS:
        raise ValueError(f"invalid AUTH reason code 0x{rc:02x}")
    props = encode_properties(p.properties, PacketType.AUTH)
    if rc == 0 and props == b"\x00":
        return b"\xf0\x00"  # 5.0 §3.15.2.1
    return _fixed(0xF0, bytes((rc,)) + props)


_ENCODERS: Final[dict[type, Callable[[Any, int], bytes]]] = {
    Connect: _e_connect,
    ConnAck: _e_connack,
    Publish: encode_publish,
    PubAck: _ack_encoder(0x40, PacketType.PUBACK, PUBACK_REASONS),
    PubRec: _ack_encoder(0x50, PacketType.PUBREC, PUBACK_REASONS),
    PubRel: _ack_encoder(0x62, PacketType.PUBREL, PUBREL_REASONS),
    PubComp: _ack_encoder(0x70, PacketType.PUBCOMP, PUBREL_REASONS),
    Subscribe: _e_subscribe,
    SubAck: _e_suback,
    Unsubscribe: _e_unsubscribe,
    UnsubAck: _e_unsuback,
    PingReq: _e_pingreq,
    PingResp: _e_pingresp,
    Disconnect: _e_disconnect,
    Auth: _e_auth,
}


def encode(packet: Packet, protocol_version: int) -> bytes:
    """The wire form of ``packet`` for ``protocol_version`` (3, 4 or 5)."""
    _check_version(protocol_version)
    try:
        encoder = _ENCODERS[type(packet)]
    except KeyError:
        raise ValueError(f"not an MQTT packet: {packet!r}") from None
    return encoder(packet, protocol_version)
