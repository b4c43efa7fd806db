"""MQTT packets to bytes, for MQTT 3.1 (MQIsdp), 3.1.1 and 5.0 (the encoding half of the codec).

Raises ``ValueError`` for a packet that cannot be put on the wire at the given protocol level
(a programming error); fields the level has no room for (3.1.1 properties, ack reason codes)
are left out. :func:`encode_publish` and :func:`publish_size` are on the per-message path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

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
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from gateway.mqtt.properties import (
    MAX_VBI,
    WILL,
    encode_properties,
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
    UNSUBACK_REASONS,
    connack_code_for_v311,
)
from gateway.mqtt.topics import is_valid_topic_filter, is_valid_topic_name

__all__ = ["encode", "encode_publish", "publish_size"]


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
