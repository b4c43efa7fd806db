"""MQTT packet bodies to packets, strict (the decoding half of the codec, without framing).

Every violation the specs let a receiver detect raises an :class:`MQTTError` subclass carrying
the reason code to report. One decoder per packet type, all with the signature ``_Decoder``
(first byte, buffer, body start, body end, protocol version), reached through a table indexed
by the first byte: the stream decoder (:mod:`gateway.mqtt.stream`) finds one with a single
index and no branch on the packet type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from gateway.mqtt.errors import MalformedPacket, ProtocolError, UnsupportedProtocolVersion
from gateway.mqtt.packets import (
    NO_PROPERTIES,
    PROTOCOL_V5,
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
    new_puback,
    new_pubcomp,
    new_publish,
    new_pubrec,
    new_pubrel,
)
from gateway.mqtt.properties import WILL, decode_properties, read_bin, read_str, read_u16
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
)
from gateway.mqtt.topics import is_valid_topic_filter

__all__ = ["FIXED_TABLES", "LEARNED_TABLES", "PRE_CONNECT_TABLE"]


def _check_topic_name(topic: str) -> None:
    if "+" in topic or "#" in topic:
        raise ProtocolError("wildcard in topic name", ReasonCode.TOPIC_NAME_INVALID)
    if "\x00" in topic:
        raise MalformedPacket("topic name contains U+0000")


_Decoder = Callable[[int, bytes, int, int, int], Packet]


def _extra(what: str) -> MalformedPacket:
    return MalformedPacket(f"unexpected bytes after the end of the {what}")


def _packet_id(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    pid, pos = read_u16(buf, pos, end)
    if not pid:
        # 3.1.1 §2.3.1 / 5.0 §2.2.1: packet identifiers are non-zero.
        raise ProtocolError("packet identifier 0")
    return pid, pos


def _protocol_name_and_level(buf: bytes, pos: int, end: int) -> tuple[str, int, int]:
    # 3.1.1 §3.1.2.1-2, 5.0 §3.1.2.1-2: the pairs this codec speaks, MQIsdp only at level 3.
    name, pos = read_str(buf, pos, end)
    if pos >= end:
        raise MalformedPacket("truncated CONNECT")
    level = buf[pos]
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
    return name, level, pos + 1


def _check_connect_flags(flags: int, level: int) -> None:
    if flags & 0x01:
        raise MalformedPacket("reserved CONNECT flag set")  # 3.1.1 §3.1.2.3, 5.0 §3.1.2.3
    will_flag = flags & 0x04
    will_qos = (flags >> 3) & 3
    will_retain = flags & 0x20
    if will_qos == 3:
        raise MalformedPacket("will QoS 3")  # 5.0 §3.1.2.6
    if not will_flag and (will_qos or will_retain):
        raise MalformedPacket("will QoS/retain set without a will")  # 5.0 §3.1.2.6, §3.1.2.7
    has_password = flags & 0x40
    has_username = flags & 0x80
    if has_password and not has_username and level != 5:
        raise MalformedPacket("password without user name")  # 3.1.1 §3.1.2.9


def _d_will(buf: bytes, pos: int, end: int, flags: int, level: int) -> tuple[Will, int]:
    # 3.1.1 §3.1.3.2-3, 5.0 §3.1.3.2-4: will properties (5.0 only), topic, payload.
    will_props = NO_PROPERTIES
    if level == 5:
        will_props, pos = decode_properties(buf, pos, end, WILL)
    will_topic, pos = read_str(buf, pos, end)
    if not will_topic:
        raise ProtocolError("empty will topic", ReasonCode.TOPIC_NAME_INVALID)
    _check_topic_name(will_topic)
    will_payload, pos = read_bin(buf, pos, end)
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    return Will(will_topic, will_payload, will_qos, will_retain, will_props), pos


def _d_connect(b0: int, buf: bytes, pos: int, end: int, v: int) -> Connect:
    # 3.1.1 §3.1, 5.0 §3.1. The level in the packet decides the layout, not ``v``.
    name, level, pos = _protocol_name_and_level(buf, pos, end)
    if pos + 3 > end:
        raise MalformedPacket("truncated CONNECT")
    flags = buf[pos]
    keep_alive = (buf[pos + 1] << 8) | buf[pos + 2]
    pos += 3
    _check_connect_flags(flags, level)
    will_flag = flags & 0x04
    has_password = flags & 0x40
    has_username = flags & 0x80
    props = NO_PROPERTIES
    if level == 5:
        props, pos = decode_properties(buf, pos, end, PacketType.CONNECT)
    client_id, pos = read_str(buf, pos, end)
    will = None
    if will_flag:
        will, pos = _d_will(buf, pos, end, flags, level)
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


_AckBuilder = Callable[[int, int, Properties], PubAck | PubRec | PubRel | PubComp]


def _ack_decoder(build: _AckBuilder, ptype: PacketType, valid: frozenset[int]) -> _Decoder:
    # 3.1.1 §3.4-§3.7, 5.0 §3.4-§3.7 (same layout for the four). ``build``: packets.py's
    # new_puback and the like, the constructors without the dataclass __init__.
    def decode(b0: int, buf: bytes, pos: int, end: int, v: int) -> Packet:
        size = end - pos
        if size == 2 or (size > 2 and v == PROTOCOL_V5):
            pid = (buf[pos] << 8) | buf[pos + 1]
            if not pid:
                raise ProtocolError("packet identifier 0")
            if size == 2:
                return build(pid, 0, NO_PROPERTIES)  # 5.0 §3.4.2.1: no reason code means 0x00
            rc = buf[pos + 2]
            if rc not in valid:
                raise ProtocolError(f"invalid {ptype.name} reason code 0x{rc:02x}")
            if size == 3:
                return build(pid, rc, NO_PROPERTIES)
            props, pos = decode_properties(buf, pos + 3, end, ptype)
            if pos != end:
                raise _extra(ptype.name)
            return build(pid, rc, props)
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
        0x40: _ack_decoder(new_puback, PacketType.PUBACK, PUBACK_REASONS),
        0x50: _ack_decoder(new_pubrec, PacketType.PUBREC, PUBACK_REASONS),
        0x62: _ack_decoder(new_pubrel, PacketType.PUBREL, PUBREL_REASONS),
        0x70: _ack_decoder(new_pubcomp, PacketType.PUBCOMP, PUBREL_REASONS),
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
FIXED_TABLES: Final = {v: _table(v, _d_connect) for v in (3, 4, 5)}
LEARNED_TABLES: Final = {v: _table(v, _d_second_connect) for v in (3, 4, 5)}
PRE_CONNECT_TABLE: Final = _table(None, _d_connect)
