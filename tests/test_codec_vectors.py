"""Byte vectors for every packet type, MQTT 3.1 / 3.1.1 and 5.0, both directions.

Each vector is built by hand from the spec's layout tables (section cited per case), so a
codec that merely agrees with itself cannot pass.
"""

from __future__ import annotations

import pytest

from gateway.mqtt.codec import StreamDecoder, decode_packet, encode, encode_publish, publish_size
from gateway.mqtt.packets import (
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
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
)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


MQTT = "00 04 4d 51 54 54"  # protocol name "MQTT", 3.1.1 §3.1.2.1 / 5.0 §3.1.2.1

# (id, protocol version, packet, wire bytes). Encoding the packet must give exactly the bytes
# and decoding the bytes must give back the packet.
VECTORS: list[tuple[str, int, Packet, bytes]] = [
    # --- CONNECT ---------------------------------------------------------------------------
    # 3.1.1 §3.1.2: name, level 4, flags (clean session 0x02), keep alive; §3.1.3.1 client id.
    (
        "connect-311-minimal",
        4,
        Connect("c", 4, keep_alive=60),
        h(f"10 0d {MQTT} 04 02 00 3c 00 01 63"),
    ),
    # 3.1.1 §3.1.2.3 flags 0xEC = user, password, will retain, will QoS 1, will; §3.1.3 order
    # client id, will topic, will message, user name, password.
    (
        "connect-311-will-user-password",
        4,
        Connect(
            "id",
            4,
            clean_start=False,
            keep_alive=10,
            will=Will("w", b"x", qos=1, retain=True),
            username="u",
            password=b"p",
        ),
        h(f"10 1a {MQTT} 04 ec 00 0a 00 02 69 64 00 01 77 00 01 78 00 01 75 00 01 70"),
    ),
    # MQTT 3.1 (IBM spec §3.1): protocol name "MQIsdp", level 3, same layout as 3.1.1.
    (
        "connect-31-mqisdp",
        3,
        Connect("c", 3, "MQIsdp"),
        h("10 0f 00 06 4d 51 49 73 64 70 03 02 00 3c 00 01 63"),
    ),
    # 5.0 §3.1.2.11: properties after keep alive: session expiry 0x11 (4 bytes), receive
    # maximum 0x21 (2 bytes).
    (
        "connect-5-properties",
        5,
        Connect(
            "c",
            5,
            properties=Properties(session_expiry_interval=120, receive_maximum=20),
        ),
        h(f"10 16 {MQTT} 05 02 00 3c 08 11 00 00 00 78 21 00 14 00 01 63"),
    ),
    # 5.0 §3.1.3.2: will properties (will delay 0x18) precede the will topic; empty client id
    # and empty will payload; user name without password (§3.1.2.8).
    (
        "connect-5-will-properties",
        5,
        Connect(
            "",
            5,
            keep_alive=0,
            will=Will("w", b"", properties=Properties(will_delay_interval=5)),
            username="u",
        ),
        h(f"10 1b {MQTT} 05 86 00 00 00 00 00 05 18 00 00 00 05 00 01 77 00 00 00 01 75"),
    ),
    # 5.0 §3.1.2.9: a password without a user name is allowed in 5.0 (flags 0x42).
    (
        "connect-5-password-only",
        5,
        Connect("c", 5, password=b"pw"),
        h(f"10 12 {MQTT} 05 42 00 3c 00 00 01 63 00 02 70 77"),
    ),
    # --- CONNACK ---------------------------------------------------------------------------
    # 3.1.1 §3.2.2: acknowledge flags (session present) then return code.
    ("connack-311-session-present", 4, ConnAck(True, 0), h("20 02 01 00")),
    ("connack-311-not-authorized", 4, ConnAck(False, 5), h("20 02 00 05")),
    # 5.0 §3.2.2: flags, reason code, property length (always present).
    ("connack-5-success", 5, ConnAck(False, 0), h("20 03 00 00 00")),
    ("connack-5-not-authorized", 5, ConnAck(False, 0x87), h("20 03 00 87 00")),
    # 5.0 §3.2.2.3: assigned client id 0x12 and topic alias maximum 0x22.
    (
        "connack-5-properties",
        5,
        ConnAck(
            True,
            0,
            Properties(assigned_client_identifier="ab", topic_alias_maximum=10),
        ),
        h("20 0b 01 00 08 12 00 02 61 62 22 00 0a"),
    ),
    # --- PUBLISH ---------------------------------------------------------------------------
    # 3.1.1 §3.3.2: topic name; no packet id at QoS 0; payload is the rest.
    ("publish-311-qos0", 4, Publish("a/b", b"hi"), h("30 07 00 03 61 2f 62 68 69")),
    # 3.1.1 §3.3.1: DUP 0x08, QoS 1 0x02, RETAIN 0x01; §3.3.2.2 packet identifier.
    (
        "publish-311-qos1-dup-retain",
        4,
        Publish("a/b", b"hi", qos=1, retain=True, dup=True, packet_id=10),
        h("3b 09 00 03 61 2f 62 00 0a 68 69"),
    ),
    (
        "publish-311-qos2",
        4,
        Publish("a/b", b"", qos=2, packet_id=0xFFFF),
        h("34 07 00 03 61 2f 62 ff ff"),
    ),
    # 3.1.1 §2.2.3: remaining length 203 takes two bytes (0xcb 0x01).
    (
        "publish-311-two-byte-length",
        4,
        Publish("t", b"z" * 200),
        h("30 cb 01 00 01 74") + b"z" * 200,
    ),
    # 5.0 §3.3.2.3: property length 0 after the topic.
    ("publish-5-qos0", 5, Publish("a/b", b"hi"), h("30 08 00 03 61 2f 62 00 68 69")),
    # 5.0 §3.3.2.3.3 message expiry 0x02, §3.3.2.3.4 topic alias 0x23 with an empty topic.
    (
        "publish-5-alias-expiry",
        5,
        Publish(
            "",
            b"x",
            qos=1,
            packet_id=1,
            properties=Properties(message_expiry_interval=60, topic_alias=3),
        ),
        h("32 0e 00 00 00 01 08 02 00 00 00 3c 23 00 03 78"),
    ),
    # 5.0 §3.3.2.3.8: several subscription identifiers (variable byte integers: 200 is
    # c8 01); §3.3.2.3.7 user property (string pair).
    (
        "publish-5-subids-user-property",
        5,
        Publish(
            "t",
            b"",
            properties=Properties(subscription_identifiers=(1, 200), user_properties=(("k", "v"),)),
        ),
        h("30 10 00 01 74 0c 0b 01 0b c8 01 26 00 01 6b 00 01 76"),
    ),
    # 5.0 §3.3.2.3.2/§3.3.2.3.5/§3.3.2.3.6/§3.3.2.3.9: payload format, response topic,
    # correlation data, content type (ids 0x01, 0x08, 0x09, 0x03; encoded in id order).
    (
        "publish-5-request-response",
        5,
        Publish(
            "q",
            b"{}",
            properties=Properties(
                payload_format_indicator=1,
                content_type="j",
                response_topic="r",
                correlation_data=b"\x01",
            ),
        ),
        h("30 14 00 01 71 0e 01 01 03 00 01 6a 08 00 01 72 09 00 01 01 7b 7d"),
    ),
    # --- PUBACK / PUBREC / PUBREL / PUBCOMP ------------------------------------------------
    # 3.1.1 §3.4-§3.7: packet identifier only; PUBREL fixed header flags 0010 (§3.6.1).
    ("puback-311", 4, PubAck(10), h("40 02 00 0a")),
    ("pubrec-311", 4, PubRec(10), h("50 02 00 0a")),
    ("pubrel-311", 4, PubRel(10), h("62 02 00 0a")),
    ("pubcomp-311", 4, PubComp(10), h("70 02 00 0a")),
    # 5.0 §3.4.2.1: reason 0 without properties may omit reason and property length.
    ("puback-5-short", 5, PubAck(10), h("40 02 00 0a")),
    # 5.0 §3.4.2.2.1: with a reason code but no properties, the property length is omitted.
    ("puback-5-no-subscribers", 5, PubAck(10, 0x10), h("40 03 00 0a 10")),
    # 5.0 §3.4.2.2.2: reason string 0x1f.
    (
        "puback-5-reason-string",
        5,
        PubAck(10, 0x10, Properties(reason_string="no")),
        h("40 09 00 0a 10 05 1f 00 02 6e 6f"),
    ),
    ("pubrec-5-quota", 5, PubRec(10, 0x97), h("50 03 00 0a 97")),
    # 5.0 §3.6.2.1: PUBREL reason 0x92 packet identifier not found.
    ("pubrel-5-not-found", 5, PubRel(10, 0x92), h("62 03 00 0a 92")),
    ("pubcomp-5-short", 5, PubComp(10), h("70 02 00 0a")),
    # --- SUBSCRIBE / SUBACK ----------------------------------------------------------------
    # 3.1.1 §3.8.3: topic filter then requested QoS byte, repeated.
    (
        "subscribe-311",
        4,
        Subscribe(1, (Subscription("a/+", 1), Subscription("#", 0))),
        h("82 0c 00 01 00 03 61 2f 2b 01 00 01 23 00"),
    ),
    # 5.0 §3.8.2.1.2 subscription identifier; §3.8.3.1 options: QoS 2 | no local 0x04 |
    # retain as published 0x08 | retain handling 2 (0x20).
    (
        "subscribe-5-options",
        5,
        Subscribe(
            2,
            (Subscription("a/#", 2, True, True, 2),),
            Properties(subscription_identifiers=(5,)),
        ),
        h("82 0b 00 02 02 0b 05 00 03 61 2f 23 2e"),
    ),
    # 5.0 §4.8.2: a shared subscription is an ordinary topic filter on the wire.
    (
        "subscribe-5-shared",
        5,
        Subscribe(3, (Subscription("$share/g/t", 1),)),
        h("82 10 00 03 00 00 0a 24 73 68 61 72 65 2f 67 2f 74 01"),
    ),
    # 3.1.1 §3.9.3: granted QoS 1 and failure 0x80.
    ("suback-311", 4, SubAck(1, (1, 0x80)), h("90 04 00 01 01 80")),
    # 5.0 §3.9.3: granted QoS 2 and 0x87 not authorized.
    ("suback-5", 5, SubAck(2, (2, 0x87)), h("90 05 00 02 00 02 87")),
    # --- UNSUBSCRIBE / UNSUBACK ------------------------------------------------------------
    # 3.1.1 §3.10: flags 0010, packet identifier, topic filters.
    ("unsubscribe-311", 4, Unsubscribe(3, ("a/b",)), h("a2 07 00 03 00 03 61 2f 62")),
    ("unsubscribe-5", 5, Unsubscribe(3, ("a/b",)), h("a2 08 00 03 00 00 03 61 2f 62")),
    # 3.1.1 §3.11: packet identifier only.
    ("unsuback-311", 4, UnsubAck(3), h("b0 02 00 03")),
    # 5.0 §3.11.3: one reason code per filter (0x11 no subscription existed).
    ("unsuback-5", 5, UnsubAck(3, (0, 0x11)), h("b0 05 00 03 00 00 11")),
    # --- PINGREQ / PINGRESP ----------------------------------------------------------------
    # 3.1.1 §3.12, §3.13 / 5.0 §3.12, §3.13: fixed header only.
    ("pingreq-311", 4, PingReq(), h("c0 00")),
    ("pingresp-311", 4, PingResp(), h("d0 00")),
    ("pingreq-5", 5, PingReq(), h("c0 00")),
    ("pingresp-5", 5, PingResp(), h("d0 00")),
    # --- DISCONNECT ------------------------------------------------------------------------
    ("disconnect-311", 4, Disconnect(), h("e0 00")),  # 3.1.1 §3.14
    # 5.0 §3.14.2.1: length 0 means normal disconnection.
    ("disconnect-5-short", 5, Disconnect(), h("e0 00")),
    # 5.0 §3.14.2.2.1: with a reason code and no properties the property length is omitted.
    ("disconnect-5-with-will", 5, Disconnect(0x04), h("e0 01 04")),
    # 5.0 §3.14.2.2.2: session expiry interval in DISCONNECT.
    (
        "disconnect-5-session-expiry",
        5,
        Disconnect(0, Properties(session_expiry_interval=0)),
        h("e0 07 00 05 11 00 00 00 00"),
    ),
    # --- AUTH (5.0 only) -------------------------------------------------------------------
    ("auth-5-short", 5, Auth(), h("f0 00")),  # 5.0 §3.15.2.1
    # 5.0 §3.15.2.2: authentication method 0x15 and data 0x16, reason 0x18 continue.
    (
        "auth-5-continue",
        5,
        Auth(0x18, Properties(authentication_method="m", authentication_data=b"d")),
        h("f0 0a 18 08 15 00 01 6d 16 00 01 64"),
    ),
]

# Wire forms that are legal but not what the encoder produces: (id, version, bytes, packet).
DECODE_ONLY: list[tuple[str, int, bytes, Packet]] = [
    # 5.0 §3.4.2.2.1: an explicit zero property length is the same as none.
    ("puback-5-explicit-empty-properties", 5, h("40 04 00 0a 00 00"), PubAck(10)),
    ("pubrel-5-reason-only", 5, h("62 03 00 0a 00"), PubRel(10)),
    # 5.0 §3.14.2.1: reason 0 plus an empty property length.
    ("disconnect-5-explicit", 5, h("e0 02 00 00"), Disconnect()),
    # 5.0 §3.15.2.2.1: AUTH with a reason code and no property length.
    ("auth-5-reason-only", 5, h("f0 01 18"), Auth(0x18)),
    # 5.0 §3.2.2.3.7 + 3.1.1 §3.1.2.2: a 3.1.1 server refusing a 5.0 client (return code 1).
    ("connack-5-refused-by-311-server", 5, h("20 02 00 01"), ConnAck(False, 1)),
    # 5.0 §2.2.2.2: user properties may repeat, even with the same name.
    (
        "publish-5-repeated-user-properties",
        5,
        h("30 14 00 01 74 0e 26 00 01 6b 00 01 31 26 00 01 6b 00 01 32 01 00"),
        Publish(
            "t",
            b"\x01\x00",
            properties=Properties(user_properties=(("k", "1"), ("k", "2"))),
        ),
    ),
    # 3.1.1 §4.7.3: topic names may contain spaces and start with '$'.
    ("publish-311-dollar-topic", 4, h("30 07 00 05 24 53 59 53 20"), Publish("$SYS ")),
]


@pytest.mark.parametrize(
    ("version", "packet", "wire"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS]
)
def test_encode_vector(version: int, packet: Packet, wire: bytes) -> None:
    assert encode(packet, version) == wire


@pytest.mark.parametrize(
    ("version", "packet", "wire"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS]
)
def test_decode_vector(version: int, packet: Packet, wire: bytes) -> None:
    assert decode_packet(wire, version) == (packet, len(wire))
    if isinstance(packet, Connect):
        decoder = StreamDecoder()  # a server learns the version from the CONNECT
        assert decoder.feed(wire) == [packet]
        assert decoder.protocol_version == version
        assert decoder.requested_protocol_level == version
    else:
        assert StreamDecoder(protocol_version=version).feed(wire) == [packet]


@pytest.mark.parametrize(
    ("version", "wire", "packet"), [v[1:] for v in DECODE_ONLY], ids=[v[0] for v in DECODE_ONLY]
)
def test_decode_only_vector(version: int, wire: bytes, packet: Packet) -> None:
    assert StreamDecoder(protocol_version=version).feed(wire) == [packet]


PUBLISH_VECTORS = [v for v in VECTORS if isinstance(v[2], Publish)]


@pytest.mark.parametrize(
    ("version", "packet", "wire"),
    [v[1:] for v in PUBLISH_VECTORS],
    ids=[v[0] for v in PUBLISH_VECTORS],
)
def test_publish_fast_path_and_size(version: int, packet: Publish, wire: bytes) -> None:
    assert encode_publish(packet, version) == wire
    assert publish_size(packet, version) == len(wire)


def test_publish_size_non_ascii_and_large() -> None:
    p = Publish("température/ü", b"x" * 20000, qos=1, packet_id=3)
    for version in (4, 5):
        assert publish_size(p, version) == len(encode(p, version))


def test_v311_drops_what_it_cannot_carry() -> None:
    # 3.1.1 has no properties and no ack reason codes (3.1.1 §3.4.2): they are left out.
    props = Properties(message_expiry_interval=5, user_properties=(("a", "b"),))
    assert encode(Publish("a/b", b"hi", properties=props), 4) == h("30 07 00 03 61 2f 62 68 69")
    assert encode(PubAck(10, 0x10, Properties(reason_string="x")), 4) == h("40 02 00 0a")
    assert encode(Disconnect(0x8E), 4) == h("e0 00")
    assert encode(UnsubAck(3, (0x11,)), 4) == h("b0 02 00 03")
    sub = Subscribe(1, (Subscription("t", 1, no_local=True, retain_handling=2),))
    assert encode(sub, 4) == h("82 06 00 01 00 01 74 01")


def test_v311_maps_v5_reason_codes() -> None:
    # 3.1.1 §3.2.2.3: return codes 1-5; §3.9.3: 0x80 is the only SUBACK failure.
    assert encode(ConnAck(False, 0x84), 4) == h("20 02 00 01")
    assert encode(ConnAck(False, 0x86), 4) == h("20 02 00 04")
    assert encode(ConnAck(False, 0x87), 4) == h("20 02 00 05")
    assert encode(SubAck(1, (0x87, 0x01, 0xA2)), 4) == h("90 05 00 01 80 01 80")


def test_v31_connack_has_no_session_present_flag() -> None:
    # MQTT 3.1 (IBM spec §3.2): the first variable header byte is reserved (0). A resumed
    # 3.1 session must not set what 3.1.1 calls session present.
    assert encode(ConnAck(True, 0), 3) == h("20 02 00 00")
    assert encode(ConnAck(False, 0x87), 3) == h("20 02 00 05")
    assert encode(ConnAck(True, 0), 4) == h("20 02 01 00")


def test_empty_properties_object_encodes_short_form() -> None:
    # A fresh Properties() equal to NO_PROPERTIES still yields the short forms (5.0 §3.4.2.1).
    assert encode(PubAck(1, 0, Properties()), 5) == h("40 02 00 01")
    assert encode(Disconnect(0, Properties()), 5) == h("e0 00")
    assert encode(Publish("t", properties=Properties()), 5) == h("30 04 00 01 74 00")
    assert Properties() == NO_PROPERTIES


def test_stream_of_mixed_packets_in_one_chunk() -> None:
    wires = [w for _, version, _, w in VECTORS if version == 5 and not w.startswith(b"\x10")]
    packets = [p for _, version, p, w in VECTORS if version == 5 and not w.startswith(b"\x10")]
    assert StreamDecoder(protocol_version=5).feed(b"".join(wires)) == packets
