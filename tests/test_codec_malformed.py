"""Bad input: each case names the rule it breaks and the error and reason code it must raise."""

from __future__ import annotations

import pytest

from gateway.mqtt.codec import StreamDecoder, decode_packet, encode, encode_publish
from gateway.mqtt.errors import (
    MalformedPacket,
    MQTTError,
    PacketTooLarge,
    ProtocolError,
    UnsupportedProtocolVersion,
)
from gateway.mqtt.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    Properties,
    PubAck,
    Publish,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from gateway.mqtt.reason_codes import ReasonCode as RC


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def pkt(b0: int, body: str) -> bytes:
    """A packet with a one-byte remaining length computed from ``body`` (hex)."""
    raw = h(body)
    assert len(raw) < 128
    return bytes((b0, len(raw))) + raw


def connect(flags: str, rest: str, level: str = "04", name: str = "00 04 4d 51 54 54") -> bytes:
    """CONNECT with keep alive 60; ``rest`` is what follows keep alive."""
    return pkt(0x10, f"{name} {level} {flags} 00 3c {rest}")


def pub5(props: str, payload: str = "") -> bytes:
    """5.0 QoS 0 PUBLISH to "t" with the given raw properties (length prefix added)."""
    raw = h(props)
    return pkt(0x30, f"00 01 74 {len(raw):02x} {props} {payload}")


def sub(filter_hex: str, options: str = "00", props: str | None = None) -> bytes:
    raw = h(filter_hex)
    prop_part = "" if props is None else f"{len(h(props)):02x} {props}"
    return pkt(0x82, f"00 01 {prop_part} {len(raw):04x} {filter_hex} {options}")


def unsub(filter_hex: str, v5: bool = False) -> bytes:
    raw = h(filter_hex)
    return pkt(0xA2, f"00 01 {'00' if v5 else ''} {len(raw):04x} {filter_hex}")


def hexs(text: str) -> str:
    return text.encode().hex()


M, P = MalformedPacket, ProtocolError
MAL, PROTO = RC.MALFORMED_PACKET, RC.PROTOCOL_ERROR

# (id, decoder protocol version or None for a fresh server-side decoder, bytes, error, reason)
CASES: list[tuple[str, int | None, bytes, type[MQTTError], int]] = [
    # --- fixed header (3.1.1 §2.2, 5.0 §2.1) ----------------------------------------------
    ("publish-qos3-311", 4, pkt(0x36, "00 01 74 00 01"), M, MAL),  # 3.1.1 §3.3.1.2
    ("publish-qos3-5", 5, pkt(0x36, "00 01 74 00 01 00"), M, MAL),  # 5.0 §3.3.1.2
    ("publish-dup-on-qos0", 4, pkt(0x38, "00 01 74"), M, MAL),  # MQTT-3.3.1-2
    ("reserved-type-0", 4, h("00 00"), M, MAL),  # 3.1.1 §2.2.1
    ("auth-type-in-311", 4, h("f0 00"), M, MAL),  # 3.1.1 §2.2.1: 15 is reserved
    ("auth-bad-flags", 5, h("f1 00"), M, MAL),  # 5.0 §2.1.3
    ("puback-flags", 4, h("41 02 00 01"), M, MAL),  # 3.1.1 §2.2.2
    ("pubrel-flags-0000", 4, h("60 02 00 01"), M, MAL),  # 3.1.1 §3.6.1
    ("pubrel-flags-0000-5", 5, h("60 02 00 01"), M, MAL),  # 5.0 §3.6.1
    ("subscribe-flags-0000", 4, pkt(0x80, "00 01 00 01 74 00"), M, MAL),  # 3.1.1 §3.8.1
    ("unsubscribe-flags-0000", 5, pkt(0xA0, "00 01 00 00 01 74"), M, MAL),  # 5.0 §3.10.1
    ("pingreq-flags", 4, h("c1 00"), M, MAL),  # 3.1.1 §3.12.1
    ("disconnect-flags", 5, h("e2 00"), M, MAL),  # 5.0 §3.14.1
    ("connect-flags", None, h("11 00"), M, MAL),  # 3.1.1 §3.1.1
    ("remaining-length-5-bytes", 4, h("30 ff ff ff ff 01"), M, MAL),  # 3.1.1 §2.2.3
    ("remaining-length-padded", 4, h("c0 80 00"), M, MAL),  # MQTT-1.5.5-1 minimal encoding
    # --- packet identifiers (3.1.1 §2.3.1, 5.0 §2.2.1) ------------------------------------
    ("puback-pid-0", 4, h("40 02 00 00"), P, PROTO),
    ("pubrel-pid-0-5", 5, h("62 03 00 00 00"), P, PROTO),
    ("publish-qos1-pid-0", 5, pkt(0x32, "00 01 74 00 00 00"), P, PROTO),
    ("subscribe-pid-0", 4, pkt(0x82, "00 00 00 01 74 00"), P, PROTO),
    ("unsubscribe-pid-0", 4, pkt(0xA2, "00 00 00 01 74"), P, PROTO),
    ("suback-pid-0", 4, h("90 03 00 00 00"), P, PROTO),
    ("unsuback-pid-0", 4, h("b0 02 00 00"), P, PROTO),
    # --- lengths: extra or missing bytes ---------------------------------------------------
    ("puback-311-extra-byte", 4, h("40 03 00 01 00"), M, MAL),  # 3.1.1 §3.4: length 2
    ("puback-truncated", 4, h("40 01 00"), M, MAL),
    ("puback-5-after-properties", 5, h("40 05 00 01 00 00 00"), M, MAL),
    ("pingreq-extra", 4, h("c0 01 00"), M, MAL),  # 3.1.1 §3.12
    ("pingresp-extra", 5, h("d0 01 00"), M, MAL),  # 5.0 §3.13
    ("disconnect-311-extra", 4, h("e0 01 00"), M, MAL),  # 3.1.1 §3.14
    ("disconnect-5-after-properties", 5, h("e0 03 00 00 00"), M, MAL),
    ("auth-after-properties", 5, h("f0 03 00 00 00"), M, MAL),
    ("connack-311-extra", 4, h("20 03 00 00 00"), M, MAL),  # 3.1.1 §3.2: length 2
    ("connack-5-extra", 5, h("20 04 00 00 00 00"), M, MAL),
    ("connack-truncated", 4, h("20 01 00"), M, MAL),
    ("unsuback-311-extra", 4, h("b0 03 00 01 00"), M, MAL),  # 3.1.1 §3.11
    ("string-past-end", 4, pkt(0x30, "00 05 61"), M, MAL),
    ("publish-pid-truncated", 4, pkt(0x32, "00 01 74 00"), M, MAL),
    ("publish-5-no-property-length", 5, pkt(0x30, "00 01 74"), M, MAL),  # 5.0 §3.3.2.3.1
    ("subscribe-missing-options", 4, pkt(0x82, "00 01 00 01 74"), M, MAL),
    ("connect-extra-byte", None, connect("02", "00 01 63 00"), M, MAL),
    ("connect-truncated", None, h("10 02 00 04"), M, MAL),
    ("connect-missing-client-id", None, connect("02", ""), M, MAL),
    ("connect-missing-password", None, connect("c2", "00 01 63 00 01 75"), M, MAL),
    # --- CONNECT (3.1.1 §3.1, 5.0 §3.1) ---------------------------------------------------
    ("connect-reserved-flag", None, connect("03", "00 01 63"), M, MAL),  # MQTT-3.1.2-3
    ("connect-will-qos3", None, connect("1e", "00 01 63 00 01 77 00 00"), M, MAL),
    ("connect-will-qos-no-will", None, connect("0a", "00 01 63"), M, MAL),  # MQTT-3.1.2-13
    ("connect-will-retain-no-will", None, connect("22", "00 01 63"), M, MAL),  # MQTT-3.1.2-15
    # 3.1.1 §3.1.2.9 (MQTT-3.1.2-22): no password without a user name.
    ("connect-password-no-user-311", None, connect("42", "00 01 63 00 01 70"), M, MAL),
    (
        "connect-password-no-user-31",
        None,
        connect("42", "00 01 63 00 01 70", level="03", name="00 06 4d 51 49 73 64 70"),
        M,
        MAL,
    ),
    # 3.1.1 §3.1.2.2 / 5.0 §3.1.2.2: unsupported level -> CONNACK 0x01 / 0x84.
    (
        "connect-level-6",
        None,
        connect("02", "00 01 63", level="06"),
        UnsupportedProtocolVersion,
        0x84,
    ),
    (
        "connect-mqtt-level-3",
        None,
        connect("02", "00 01 63", level="03"),
        UnsupportedProtocolVersion,
        0x84,
    ),
    (
        "connect-mqisdp-level-4",
        None,
        connect("02", "00 01 63", name="00 06 4d 51 49 73 64 70"),
        UnsupportedProtocolVersion,
        0x84,
    ),
    # 3.1.1 §3.1.2.1: an unknown protocol name may be disconnected without CONNACK.
    ("connect-unknown-name", None, connect("02", "00 01 63", name="00 04 4d 51 54 58"), P, PROTO),
    ("first-packet-not-connect", None, pkt(0x30, "00 01 74"), P, PROTO),  # MQTT-3.1.0-1
    ("first-packet-pingreq", None, h("c0 00"), P, PROTO),
    (
        "connect-will-topic-wildcard",
        None,
        connect("06", "00 01 63 00 03 61 2f 23 00 00"),
        P,
        RC.TOPIC_NAME_INVALID,
    ),
    (
        "connect-will-topic-empty",
        None,
        connect("06", "00 01 63 00 00 00 00"),
        P,
        RC.TOPIC_NAME_INVALID,
    ),
    ("connect-client-id-bad-utf8", None, connect("02", "00 01 ff"), M, MAL),  # MQTT-1.5.4-1
    ("connect-client-id-nul", None, connect("02", "00 01 00"), M, MAL),  # MQTT-1.5.4-2
    ("connect-user-bad-utf8", None, connect("82", "00 01 63 00 02 c3 28"), M, MAL),
    # 5.0 §3.1.2.11 CONNECT properties.
    ("connect5-subid-not-allowed", None, connect("02", "02 0b 01 00 01 63", "05"), M, MAL),
    ("connect5-receive-maximum-0", None, connect("02", "03 21 00 00 00 01 63", "05"), P, PROTO),
    (
        "connect5-max-packet-size-0",
        None,
        connect("02", "05 27 00 00 00 00 00 01 63", "05"),
        P,
        PROTO,
    ),
    ("connect5-request-problem-2", None, connect("02", "02 17 02 00 01 63", "05"), P, PROTO),
    ("connect5-request-response-2", None, connect("02", "02 19 02 00 01 63", "05"), P, PROTO),
    (
        "connect5-duplicate-session-expiry",
        None,
        connect("02", "0a 11 00 00 00 01 11 00 00 00 02 00 01 63", "05"),
        P,
        PROTO,
    ),
    (
        "connect5-auth-data-no-method",
        None,
        connect("02", "04 16 00 01 78 00 01 63", "05"),
        P,
        PROTO,
    ),
    # 5.0 §3.1.3.2: will properties allow only the publication ones plus will delay.
    (
        "connect5-will-session-expiry",
        None,
        connect("06", "00 00 01 63 05 11 00 00 00 01 00 01 77 00 00", "05"),
        M,
        MAL,
    ),
    (
        "connect5-will-topic-alias",
        None,
        connect("06", "00 00 01 63 03 23 00 01 00 01 77 00 00", "05"),
        M,
        MAL,
    ),
    # --- UTF-8 strings (3.1.1 §1.5.3, 5.0 §1.5.4) -----------------------------------------
    ("topic-invalid-utf8", 4, pkt(0x30, "00 02 c3 28"), M, MAL),
    ("topic-encoded-surrogate", 4, pkt(0x30, "00 03 ed a0 80"), M, MAL),
    ("topic-overlong-slash", 4, pkt(0x30, "00 02 c0 af"), M, MAL),
    ("topic-nul", 5, pkt(0x30, "00 02 61 00 00"), M, MAL),
    ("topic-above-u10ffff", 4, pkt(0x30, "00 04 f4 90 80 80"), M, MAL),
    ("user-property-bad-utf8", 5, pub5("26 00 01 ff 00 00"), M, MAL),
    ("content-type-nul", 5, pub5("03 00 01 00"), M, MAL),
    # --- topic names (3.1.1 §4.7, 5.0 §4.7, §3.3.2.1) -------------------------------------
    ("topic-plus", 4, pkt(0x30, "00 03 61 2f 2b"), P, RC.TOPIC_NAME_INVALID),
    ("topic-hash", 5, pkt(0x30, "00 01 23 00"), P, RC.TOPIC_NAME_INVALID),
    ("topic-empty-311", 4, pkt(0x30, "00 00 78"), P, PROTO),  # MQTT-4.7.3-1
    ("topic-empty-5-no-alias", 5, pkt(0x30, "00 00 00 78"), P, PROTO),  # 5.0 §3.3.2.1
    # --- topic filters (5.0 §4.7.1, §4.8.2; 3.1.1 §4.7.1) ---------------------------------
    *[
        (
            f"filter-{name}-{v}",
            v,
            sub(hexs(f), props="" if v == 5 else None),
            P,
            RC.TOPIC_FILTER_INVALID,
        )
        for v in (4, 5)
        for name, f in [
            ("hash-not-last", "a/#/b"),
            ("hash-in-level", "a#"),
            ("plus-in-level", "a/b+"),
            ("hash-then-level", "#/"),
            ("empty", ""),
            ("share-no-filter", "$share/g"),
            ("share-empty-name", "$share//t"),
            ("share-wildcard-name", "$share/+/t"),
            ("share-empty-filter", "$share/g/"),
            ("share-bad-filter", "$share/g/a#"),
        ]
    ],
    ("unsubscribe-bad-filter-311", 4, unsub(hexs("a/#/b")), P, RC.TOPIC_FILTER_INVALID),
    ("unsubscribe-bad-filter-5", 5, unsub(hexs("+a"), v5=True), P, RC.TOPIC_FILTER_INVALID),
    # --- SUBSCRIBE / UNSUBSCRIBE payloads --------------------------------------------------
    ("subscribe-no-filters-311", 4, pkt(0x82, "00 01"), P, PROTO),  # MQTT-3.8.3-3
    ("subscribe-no-filters-5", 5, pkt(0x82, "00 01 00"), P, PROTO),  # MQTT-3.8.3-2
    ("unsubscribe-no-filters-311", 4, pkt(0xA2, "00 01"), P, PROTO),  # MQTT-3.10.3-2
    ("unsubscribe-no-filters-5", 5, pkt(0xA2, "00 01 00"), P, PROTO),
    ("subscribe-311-reserved-bits", 4, sub(hexs("t"), "04"), M, MAL),  # MQTT-3.8.3-4 (3.1.1)
    ("subscribe-311-qos3", 4, sub(hexs("t"), "03"), M, MAL),
    ("subscribe-5-reserved-bits", 5, sub(hexs("t"), "40", ""), M, MAL),  # MQTT-3.8.3-5
    ("subscribe-5-qos3", 5, sub(hexs("t"), "03", ""), M, MAL),
    ("subscribe-5-retain-handling-3", 5, sub(hexs("t"), "30", ""), P, PROTO),  # 5.0 §3.8.3.1
    ("subscribe-5-no-local-shared", 5, sub(hexs("$share/g/t"), "04", ""), P, PROTO),  # MQTT-3.8.3-4
    ("subscribe-5-subid-0", 5, sub(hexs("t"), "00", "0b 00"), P, PROTO),  # 5.0 §3.8.2.1.2
    ("subscribe-5-two-subids", 5, sub(hexs("t"), "00", "0b 01 0b 02"), P, PROTO),
    ("subscribe-5-topic-alias", 5, sub(hexs("t"), "00", "23 00 01"), M, MAL),  # 5.0 §2.2.2.2
    ("subscribe-5-subid-too-long", 5, sub(hexs("t"), "00", "0b ff ff ff ff 01"), M, MAL),
    # --- properties (5.0 §2.2.2) -----------------------------------------------------------
    ("property-unknown-7f", 5, pub5("7f 00"), M, MAL),
    ("property-unknown-00", 5, pub5("00"), M, MAL),
    ("property-not-for-publish", 5, pub5("11 00 00 00 01"), M, MAL),  # session expiry
    ("property-reason-string-in-publish", 5, pub5("1f 00 00"), M, MAL),
    ("property-duplicate-expiry", 5, pub5("02 00 00 00 01 02 00 00 00 02"), P, PROTO),
    ("property-duplicate-alias", 5, pub5("23 00 01 23 00 01"), P, PROTO),
    ("property-payload-format-2", 5, pub5("01 02"), P, PROTO),  # 5.0 §3.3.2.3.2
    ("property-publish-subid-0", 5, pub5("0b 00"), P, PROTO),  # 5.0 §3.3.2.3.8
    ("property-length-past-end", 5, pkt(0x30, "00 01 74 05 02 00"), M, MAL),
    ("property-length-5-bytes", 5, pkt(0x30, "00 01 74 ff ff ff ff 01"), M, MAL),  # §1.5.5
    ("property-truncated-u32", 5, pkt(0x30, "00 01 74 03 02 00 00"), M, MAL),
    ("property-truncated-string", 5, pub5("03 00 05 61"), M, MAL),
    ("property-truncated-byte", 5, pub5("01"), M, MAL),
    ("puback-session-expiry", 5, h("40 09 00 01 00 05 11 00 00 00 01"), M, MAL),
    ("connack-max-qos-2", 5, h("20 05 00 00 02 24 02"), P, PROTO),  # 5.0 §3.2.2.3.4
    ("connack-retain-available-2", 5, h("20 05 00 00 02 25 02"), P, PROTO),
    ("connack-wildcard-available-2", 5, h("20 05 00 00 02 28 02"), P, PROTO),
    ("auth-data-without-method", 5, h("f0 06 18 04 16 00 01 78"), P, PROTO),  # §3.15.2.2.3
    ("disconnect-topic-alias", 5, h("e0 05 00 03 23 00 01"), M, MAL),
    # --- reason codes (5.0 §2.4 per packet; 3.1.1 §3.2.2.3, §3.9.3) -----------------------
    ("puback-5-reason-05", 5, h("40 03 00 01 05"), P, PROTO),
    ("pubrec-5-reason-92", 5, h("50 03 00 01 92"), P, PROTO),
    ("pubrel-5-reason-10", 5, h("62 03 00 01 10"), P, PROTO),
    ("pubcomp-5-reason-80", 5, h("70 03 00 01 80"), P, PROTO),
    ("suback-5-reason-03", 5, h("90 04 00 01 00 03"), P, PROTO),
    ("suback-311-code-03", 4, h("90 03 00 01 03"), P, PROTO),
    ("suback-311-no-codes", 4, h("90 02 00 01"), P, PROTO),
    ("suback-5-no-codes", 5, h("90 03 00 01 00"), P, PROTO),
    ("unsuback-5-reason-01", 5, h("b0 04 00 01 00 01"), P, PROTO),
    ("unsuback-5-no-codes", 5, h("b0 03 00 01 00"), P, PROTO),
    ("disconnect-5-reason-01", 5, h("e0 01 01"), P, PROTO),
    ("auth-reason-01", 5, h("f0 01 01"), P, PROTO),
    ("connack-311-code-6", 4, h("20 02 00 06"), P, PROTO),
    ("connack-311-session-present-refused", 4, h("20 02 01 05"), P, PROTO),  # MQTT-3.2.2-4
    ("connack-5-session-present-refused", 5, h("20 03 01 87 00"), P, PROTO),  # MQTT-3.2.2-6
    ("connack-5-reason-01-with-properties", 5, h("20 03 00 01 00"), P, PROTO),
    ("connack-reserved-flags", 4, h("20 02 02 00"), M, MAL),  # 3.1.1 §3.2.2.1
    ("connack-5-reserved-flags", 5, h("20 03 80 00 00"), M, MAL),  # 5.0 §3.2.2.1
]


def _raise_case(version: int | None, wire: bytes) -> MQTTError:
    decoder = StreamDecoder(protocol_version=version)
    with pytest.raises(MQTTError) as info:
        decoder.feed(wire)
    # The decoder stays failed: a connection must not resume after bad input.
    with pytest.raises(type(info.value)):
        decoder.feed(b"")
    return info.value


@pytest.mark.parametrize(
    ("version", "wire", "error", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_raises_typed_error(
    version: int | None, wire: bytes, error: type[MQTTError], reason: int
) -> None:
    exc = _raise_case(version, wire)
    assert type(exc) is error, exc
    assert exc.reason_code == reason
    if version is not None:
        with pytest.raises(error):
            decode_packet(wire, version)


@pytest.mark.parametrize(
    ("version", "wire", "error"), [c[1:4] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_fed_byte_by_byte(
    version: int | None, wire: bytes, error: type[MQTTError]
) -> None:
    # Incremental input must fail the same way, and never produce a packet first.
    decoder = StreamDecoder(protocol_version=version)
    with pytest.raises(error):
        for i in range(len(wire)):
            assert decoder.feed(wire[i : i + 1]) == []


def test_unsupported_level_is_exposed() -> None:
    decoder = StreamDecoder()
    with pytest.raises(UnsupportedProtocolVersion) as info:
        decoder.feed(connect("02", "00 01 63", level="06"))
    assert info.value.protocol_level == 6
    assert decoder.requested_protocol_level == 6
    assert decoder.protocol_version is None


def test_level_is_exposed_for_a_malformed_connect() -> None:
    # A 5.0 client with a bad CONNECT gets a 5.0 CONNACK 0x81 (5.0 §4.13.1); a 3.1.1 one a
    # plain close. The server can only choose if it knows the level the client spoke.
    decoder = StreamDecoder()
    with pytest.raises(MalformedPacket):
        decoder.feed(connect("02", "02 0b 01 00 01 63", "05"))
    assert decoder.requested_protocol_level == 5
    decoder = StreamDecoder()
    with pytest.raises(MalformedPacket):
        decoder.feed(connect("03", "00 01 63"))
    assert decoder.requested_protocol_level == 4
    decoder = StreamDecoder()
    with pytest.raises(MalformedPacket):
        decoder.feed(h("10 03 00 05 4d"))  # name runs past the end: no level to report
    assert decoder.requested_protocol_level is None


def test_second_connect_is_a_protocol_error() -> None:
    # 3.1.1 §3.1 (MQTT-3.1.0-2): a second CONNECT is a protocol violation.
    first = connect("02", "00 01 63")
    decoder = StreamDecoder()
    assert len(decoder.feed(first)) == 1
    with pytest.raises(ProtocolError):
        decoder.feed(first)


def test_second_connect_in_the_same_chunk() -> None:
    first = connect("02", "00 01 63")
    with pytest.raises(ProtocolError):
        StreamDecoder().feed(first + first)


def test_version_learned_mid_chunk_applies_to_following_packets() -> None:
    # A 5.0 CONNECT followed by a 5.0 PUBLISH in one read: the PUBLISH needs 5.0 layout.
    wire = connect("02", "00 00 01 63", "05") + pkt(0x30, "00 01 74 00 78")
    decoder = StreamDecoder()
    packets = decoder.feed(wire)
    assert decoder.protocol_version == 5
    assert packets[1] == Publish("t", b"x")


def test_non_connect_rejected_from_its_first_byte() -> None:
    with pytest.raises(ProtocolError):
        StreamDecoder().feed(b"\x30")


def test_packet_too_large_detected_from_the_header() -> None:
    # 5.0 §3.1.2.11.4: the limit counts the whole packet; refuse before buffering the body.
    decoder = StreamDecoder(max_packet_size=10, protocol_version=4)
    ok = pkt(0x30, "00 01 74 61 62 63 64 65")  # 2 + 8 = 10 bytes
    assert decoder.feed(ok) == [Publish("t", b"abcde")]
    with pytest.raises(PacketTooLarge) as info:
        decoder.feed(h("30 09"))
    assert info.value.reason_code == RC.PACKET_TOO_LARGE


def test_packet_too_large_with_multibyte_length() -> None:
    decoder = StreamDecoder(max_packet_size=1000, protocol_version=5)
    with pytest.raises(PacketTooLarge):
        decoder.feed(h("30 ff 7f"))  # announces 16383 bytes


def test_password_without_user_allowed_in_5() -> None:
    wire = connect("42", "00 00 01 63 00 01 70", "05")
    assert StreamDecoder().feed(wire) == [Connect("c", 5, password=b"p")]


def test_empty_topic_with_alias_allowed_in_5() -> None:
    # 5.0 §3.3.2.3.4: the alias stands for the topic.
    wire = pkt(0x30, "00 00 03 23 00 05 78")
    expected = Publish("", b"x", properties=Properties(topic_alias=5))
    assert StreamDecoder(protocol_version=5).feed(wire) == [expected]


# --------------------------------------------------------------------------- encoding errors

ENCODE_ERRORS: list[tuple[str, int, Packet]] = [
    ("qos1-without-pid", 4, Publish("t", qos=1)),
    ("qos0-with-pid", 4, Publish("t", packet_id=1)),
    ("qos3", 5, Publish("t", qos=3, packet_id=1)),
    ("dup-on-qos0", 4, Publish("t", dup=True)),
    ("pid-too-big", 4, Publish("t", qos=1, packet_id=65536)),
    ("wildcard-topic", 4, Publish("a/+")),
    ("empty-topic-311", 4, Publish("")),
    ("empty-topic-5-no-alias", 5, Publish("")),
    ("nul-in-topic", 5, Publish("a\x00")),
    ("surrogate-in-topic", 5, Publish("a\ud800")),
    ("property-not-for-publish", 5, Publish("t", properties=Properties(session_expiry_interval=1))),
    ("property-out-of-range", 5, Publish("t", properties=Properties(topic_alias=70000))),
    ("subid-0", 5, Publish("t", properties=Properties(subscription_identifiers=(0,)))),
    ("auth-in-311", 4, Auth()),
    ("auth-bad-reason", 5, Auth(0x80)),
    ("password-without-user-311", 4, Connect("c", password=b"p")),
    ("connect-level-mismatch", 5, Connect("c", 4)),
    ("connect-will-wildcard", 4, Connect("c", will=Will("a/#", b""))),
    ("connect-will-qos3", 4, Connect("c", will=Will("a", b"", qos=3))),
    ("connect-keep-alive-range", 4, Connect("c", keep_alive=70000)),
    ("connack-bad-reason-5", 5, ConnAck(False, 0x01)),
    ("connack-bad-code-311", 4, ConnAck(False, 6)),
    ("connack-session-present-refused", 4, ConnAck(True, 5)),
    ("puback-bad-reason", 5, PubAck(1, 0x92)),
    ("pubrel-bad-reason", 5, PubRel(1, 0x10)),
    ("puback-pid-0", 4, PubAck(0)),
    ("subscribe-empty", 4, Subscribe(1, ())),
    ("subscribe-bad-filter", 5, Subscribe(1, (Subscription("a/#/b"),))),
    ("subscribe-retain-handling-3", 5, Subscribe(1, (Subscription("a", retain_handling=3),))),
    (
        "subscribe-two-subids",
        5,
        Subscribe(1, (Subscription("a"),), Properties(subscription_identifiers=(1, 2))),
    ),
    ("suback-empty", 5, SubAck(1, ())),
    ("suback-bad-reason", 5, SubAck(1, (0x03,))),
    ("suback-bad-311-code", 4, SubAck(1, (0x03,))),
    ("unsubscribe-empty", 5, Unsubscribe(1, ())),
    ("unsubscribe-bad-filter", 4, Unsubscribe(1, ("#/a",))),
    ("unsuback-5-no-codes", 5, UnsubAck(1)),
    ("disconnect-bad-reason", 5, Disconnect(0x01)),
    ("string-too-long", 5, Publish("t", properties=Properties(content_type="x" * 70000))),
]


@pytest.mark.parametrize(
    ("version", "packet"), [c[1:] for c in ENCODE_ERRORS], ids=[c[0] for c in ENCODE_ERRORS]
)
def test_encode_rejects_unrepresentable_packets(version: int, packet: Packet) -> None:
    with pytest.raises(ValueError):
        encode(packet, version)
    if isinstance(packet, Publish):
        with pytest.raises(ValueError):
            encode_publish(packet, version)


def test_encode_rejects_unknown_version_and_objects() -> None:
    with pytest.raises(ValueError):
        encode(Publish("t"), 6)
    with pytest.raises(ValueError):
        encode_publish(Publish("t"), 2)
    with pytest.raises(ValueError):
        encode("not a packet", 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StreamDecoder(protocol_version=6)
    with pytest.raises(ValueError):
        decode_packet(b"\xc0\x00", 2)
