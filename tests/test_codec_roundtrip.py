"""Property tests: round trips for every packet type and version, truncation, splitting, fuzz."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codec_vectors import VECTORS

from gateway.mqtt.codec import (
    StreamDecoder,
    decode_packet,
    encode,
    encode_publish,
    is_valid_topic_filter,
    publish_size,
)
from gateway.mqtt.errors import MQTTError
from gateway.mqtt.packets import (
    NO_PROPERTIES,
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
)

# CODEC_FUZZ_EXAMPLES raises the example count for a longer local soak; the default keeps
# the whole file to a few seconds.
EXAMPLES = int(os.environ.get("CODEC_FUZZ_EXAMPLES", "80"))
SETTINGS = settings(
    deadline=None, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow]
)

T = PacketType
WILL = "will"

# MQTT 5.0 §2.2.2.2 Table 2-4, written out again here (not imported from the codec) so that a
# wrong entry in the codec's table shows up as a failing round trip.
SPEC_ALLOWED: dict[str, set[Any]] = {
    "payload_format_indicator": {T.PUBLISH, WILL},
    "message_expiry_interval": {T.PUBLISH, WILL},
    "content_type": {T.PUBLISH, WILL},
    "response_topic": {T.PUBLISH, WILL},
    "correlation_data": {T.PUBLISH, WILL},
    "subscription_identifiers": {T.PUBLISH, T.SUBSCRIBE},
    "session_expiry_interval": {T.CONNECT, T.CONNACK, T.DISCONNECT},
    "assigned_client_identifier": {T.CONNACK},
    "server_keep_alive": {T.CONNACK},
    "authentication_method": {T.CONNECT, T.CONNACK, T.AUTH},
    "authentication_data": {T.CONNECT, T.CONNACK, T.AUTH},
    "request_problem_information": {T.CONNECT},
    "will_delay_interval": {WILL},
    "request_response_information": {T.CONNECT},
    "response_information": {T.CONNACK},
    "server_reference": {T.CONNACK, T.DISCONNECT},
    "reason_string": {
        T.CONNACK,
        T.PUBACK,
        T.PUBREC,
        T.PUBREL,
        T.PUBCOMP,
        T.SUBACK,
        T.UNSUBACK,
        T.DISCONNECT,
        T.AUTH,
    },
    "receive_maximum": {T.CONNECT, T.CONNACK},
    "topic_alias_maximum": {T.CONNECT, T.CONNACK},
    "topic_alias": {T.PUBLISH},
    "maximum_qos": {T.CONNACK},
    "retain_available": {T.CONNACK},
    "user_properties": {t for t in T if t not in (T.PINGREQ, T.PINGRESP)} | {WILL},
    "maximum_packet_size": {T.CONNECT, T.CONNACK},
    "wildcard_subscription_available": {T.CONNACK},
    "subscription_identifier_available": {T.CONNACK},
    "shared_subscription_available": {T.CONNACK},
}

TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=8)
LEVEL = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00+#/"), max_size=5)
BIN = st.binary(max_size=12)
BOOL_BYTE = st.integers(0, 1)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFF_FFFF)
SUB_ID = st.integers(1, 268_435_455)

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "payload_format_indicator": BOOL_BYTE,
    "message_expiry_interval": U32,
    "content_type": TEXT,
    "response_topic": TEXT,
    "correlation_data": BIN,
    "session_expiry_interval": U32,
    "assigned_client_identifier": TEXT,
    "server_keep_alive": U16,
    "authentication_method": TEXT,
    "authentication_data": BIN,
    "request_problem_information": BOOL_BYTE,
    "will_delay_interval": U32,
    "request_response_information": BOOL_BYTE,
    "response_information": TEXT,
    "server_reference": TEXT,
    "reason_string": TEXT,
    "receive_maximum": st.integers(1, 0xFFFF),
    "topic_alias_maximum": U16,
    "topic_alias": st.integers(1, 0xFFFF),
    "maximum_qos": BOOL_BYTE,
    "retain_available": BOOL_BYTE,
    "user_properties": st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=3).map(tuple),
    "maximum_packet_size": st.integers(1, 0xFFFF_FFFF),
    "wildcard_subscription_available": BOOL_BYTE,
    "subscription_identifier_available": BOOL_BYTE,
    "shared_subscription_available": BOOL_BYTE,
}


def properties(ptype: Any) -> st.SearchStrategy[Properties]:
    optional = {
        name: VALUES[name]
        for name, types in SPEC_ALLOWED.items()
        if ptype in types and name in VALUES
    }
    if ptype == T.PUBLISH:
        optional["subscription_identifiers"] = st.lists(SUB_ID, min_size=1, max_size=3).map(tuple)
    elif ptype == T.SUBSCRIBE:
        optional["subscription_identifiers"] = st.tuples(SUB_ID)

    def build(values: dict[str, Any]) -> Properties:
        if "authentication_data" in values:
            values.setdefault("authentication_method", "m")  # data needs a method
        return Properties(**values)

    return st.fixed_dictionaries({}, optional=optional).map(build)


def props_for(v: int, ptype: Any) -> st.SearchStrategy[Properties]:
    return properties(ptype) if v == 5 else st.just(NO_PROPERTIES)


TOPIC = st.lists(LEVEL, min_size=1, max_size=4).map("/".join).filter(bool)


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.one_of(LEVEL, st.just("+")), min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    result = "/".join(levels)
    if draw(st.booleans()):
        result = f"$share/{draw(LEVEL.filter(bool))}/{result}"
    if not is_valid_topic_filter(result):  # e.g. an empty filter or share target
        result = "a/+/#"
    return result


PUBACK_RC = [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]
PUBREL_RC = [0x00, 0x92]
SUBACK_RC = [0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2]
UNSUBACK_RC = [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]
CONNACK_RC = [0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C]
CONNACK_RC += [0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F]
DISCONNECT_RC = [0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F]
DISCONNECT_RC += list(range(0x90, 0xA3))
DISCONNECT_RC.remove(0x91)
DISCONNECT_RC.remove(0x92)
PID = st.integers(1, 0xFFFF)


@st.composite
def connects(draw: st.DrawFn, v: int) -> Connect:
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(TOPIC),
            draw(BIN),
            draw(st.integers(0, 2)),
            draw(st.booleans()),
            draw(props_for(v, WILL)),
        )
    username = draw(st.none() | TEXT)
    password = draw(st.none() | BIN)
    if v != 5 and username is None:
        password = None  # 3.1.1 §3.1.2.9
    return Connect(
        draw(TEXT),
        v,
        "MQIsdp" if v == 3 else "MQTT",
        draw(st.booleans()),
        draw(U16),
        will,
        username,
        password,
        draw(props_for(v, T.CONNECT)),
    )


@st.composite
def connacks(draw: st.DrawFn, v: int) -> ConnAck:
    rc = draw(st.sampled_from(CONNACK_RC) if v == 5 else st.integers(0, 5))
    # MQTT 3.1 has no session present flag (see test_codec_vectors).
    session_present = draw(st.booleans()) and rc == 0 and v != 3
    return ConnAck(session_present, rc, draw(props_for(v, T.CONNACK)))


@st.composite
def publishes(draw: st.DrawFn, v: int) -> Publish:
    qos = draw(st.integers(0, 2))
    props = draw(props_for(v, T.PUBLISH))
    topic = draw(TOPIC)
    if props.topic_alias is not None and draw(st.booleans()):
        topic = ""  # 5.0 §3.3.2.3.4: the alias stands in for the topic
    return Publish(
        topic,
        draw(st.binary(max_size=40)),
        qos,
        draw(st.booleans()),
        draw(st.booleans()) and qos > 0,
        draw(PID) if qos else None,
        props,
    )


def acks(v: int, cls: Any, ptype: Any, codes: list[int]) -> st.SearchStrategy[Packet]:
    if v != 5:
        return st.builds(cls, PID)
    return st.builds(cls, PID, st.sampled_from(codes), properties(ptype))


@st.composite
def subscribes(draw: st.DrawFn, v: int) -> Subscribe:
    subs = []
    for topic_filter in draw(st.lists(topic_filters(), min_size=1, max_size=3)):
        qos = draw(st.integers(0, 2))
        if v == 5:
            no_local = draw(st.booleans()) and not topic_filter.startswith("$share/")
            sub = Subscription(
                topic_filter, qos, no_local, draw(st.booleans()), draw(st.integers(0, 2))
            )
        else:
            sub = Subscription(topic_filter, qos)
        subs.append(sub)
    return Subscribe(draw(PID), tuple(subs), draw(props_for(v, T.SUBSCRIBE)))


def subacks(v: int) -> st.SearchStrategy[SubAck]:
    codes = SUBACK_RC if v == 5 else [0, 1, 2, 0x80]
    return st.builds(
        SubAck,
        PID,
        st.lists(st.sampled_from(codes), min_size=1, max_size=4).map(tuple),
        props_for(v, T.SUBACK),
    )


def unsubscribes(v: int) -> st.SearchStrategy[Unsubscribe]:
    return st.builds(
        Unsubscribe,
        PID,
        st.lists(topic_filters(), min_size=1, max_size=3).map(tuple),
        props_for(v, T.UNSUBSCRIBE),
    )


def unsubacks(v: int) -> st.SearchStrategy[UnsubAck]:
    if v != 5:
        return st.builds(UnsubAck, PID)
    return st.builds(
        UnsubAck,
        PID,
        st.lists(st.sampled_from(UNSUBACK_RC), min_size=1, max_size=4).map(tuple),
        properties(T.UNSUBACK),
    )


def disconnects(v: int) -> st.SearchStrategy[Disconnect]:
    if v != 5:
        return st.just(Disconnect())
    return st.builds(Disconnect, st.sampled_from(DISCONNECT_RC), properties(T.DISCONNECT))


def packet_strategies(v: int) -> dict[str, st.SearchStrategy[Any]]:
    strategies: dict[str, st.SearchStrategy[Any]] = {
        "CONNECT": connects(v),
        "CONNACK": connacks(v),
        "PUBLISH": publishes(v),
        "PUBACK": acks(v, PubAck, T.PUBACK, PUBACK_RC),
        "PUBREC": acks(v, PubRec, T.PUBREC, PUBACK_RC),
        "PUBREL": acks(v, PubRel, T.PUBREL, PUBREL_RC),
        "PUBCOMP": acks(v, PubComp, T.PUBCOMP, PUBREL_RC),
        "SUBSCRIBE": subscribes(v),
        "SUBACK": subacks(v),
        "UNSUBSCRIBE": unsubscribes(v),
        "UNSUBACK": unsubacks(v),
        "PINGREQ": st.just(PingReq()),
        "PINGRESP": st.just(PingResp()),
        "DISCONNECT": disconnects(v),
    }
    if v == 5:
        strategies["AUTH"] = st.builds(
            Auth, st.sampled_from([0x00, 0x18, 0x19]), properties(T.AUTH)
        )
    return strategies


def packets(v: int) -> st.SearchStrategy[Packet]:
    return st.one_of(list(packet_strategies(v).values()))


VERSIONS = [3, 4, 5]
versioned_packets = st.sampled_from(VERSIONS).flatmap(lambda v: st.tuples(st.just(v), packets(v)))


def _decoder_for(v: int) -> StreamDecoder:
    return StreamDecoder(protocol_version=v)


# --------------------------------------------------------------------------- round trips


PER_TYPE = [(v, name) for v in VERSIONS for name in packet_strategies(v)]


@pytest.mark.parametrize(("v", "name"), PER_TYPE, ids=[f"{n}-v{v}" for v, n in PER_TYPE])
def test_round_trip(v: int, name: str) -> None:
    # Every packet type, every protocol level: encode then decode gives an equal packet.
    @settings(
        deadline=None,
        max_examples=max(30, EXAMPLES // 3),
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(packet_strategies(v)[name])
    def check(packet: Packet) -> None:
        assert packet.type.name == name
        wire = encode(packet, v)
        assert decode_packet(wire, v) == (packet, len(wire))
        assert _decoder_for(v).feed(wire) == [packet]
        if isinstance(packet, Publish):
            assert encode_publish(packet, v) == wire
            assert publish_size(packet, v) == len(wire)

    check()


@SETTINGS
@given(versioned_packets, st.data())
def test_truncated_prefix_needs_more_data(case: tuple[int, Packet], data: st.DataObject) -> None:
    v, packet = case
    wire = encode(packet, v)
    cut = data.draw(st.integers(0, len(wire) - 1), label="cut")
    assert decode_packet(wire[:cut], v) is None
    decoder = _decoder_for(v)
    assert decoder.feed(wire[:cut]) == []
    for i in range(cut, len(wire) - 1):
        assert decoder.feed(wire[i : i + 1]) == []
    assert decoder.feed(wire[-1:]) == [packet]
    assert decoder.buffered == 0


@pytest.mark.parametrize(
    ("version", "packet", "wire"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS]
)
def test_every_prefix_of_every_vector(version: int, packet: Packet, wire: bytes) -> None:
    for cut in range(len(wire)):
        assert decode_packet(wire[:cut], version) is None
        decoder = _decoder_for(version)
        assert decoder.feed(wire[:cut]) == []
        for i in range(cut, len(wire) - 1):
            assert decoder.feed(wire[i : i + 1]) == []
        assert decoder.feed(wire[-1:]) == [packet]


@SETTINGS
@given(
    st.sampled_from(VERSIONS).flatmap(
        lambda v: st.tuples(st.just(v), st.lists(packets(v), min_size=1, max_size=6))
    ),
    st.data(),
)
def test_stream_split_anywhere(case: tuple[int, list[Packet]], data: st.DataObject) -> None:
    v, items = case
    stream = b"".join(encode(p, v) for p in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="cuts"))
    decoder = _decoder_for(v)
    out: list[Packet] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        out.extend(decoder.feed(stream[start:cut]))
        start = cut
    assert out == items


def test_big_packet_in_many_chunks() -> None:
    packet = Publish("big/topic", bytes(range(256)) * 2000, qos=1, packet_id=9)
    wire = encode(packet, 5) + encode(PubAck(9), 5)
    decoder = _decoder_for(5)
    out: list[Packet] = []
    for i in range(0, len(wire), 1000):
        out.extend(decoder.feed(wire[i : i + 1000]))
        assert decoder.buffered == min(len(wire), i + 1000) - sum(len(encode(p, 5)) for p in out)
    assert out == [packet, PubAck(9)]


def test_server_learns_version_then_decodes_that_version() -> None:
    for v in VERSIONS:
        connect = Connect("c", v, "MQIsdp" if v == 3 else "MQTT")
        publish = Publish(
            "t", b"x", properties=Properties(content_type="a") if v == 5 else NO_PROPERTIES
        )
        decoder = StreamDecoder()
        assert decoder.feed(encode(connect, v) + encode(publish, v)) == [connect, publish]
        assert decoder.protocol_version == v


# --------------------------------------------------------------------------- fuzz


def _decode_all(decoder: StreamDecoder, data: bytes) -> list[Packet]:
    try:
        return decoder.feed(data)
    except MQTTError:
        return []


def _reencodes(packet: Packet, v: int) -> None:
    # Whatever the decoder accepts, the encoder can write back, and it reads the same.
    if isinstance(packet, Connect):
        v = packet.protocol_version
    if isinstance(packet, ConnAck) and v == 5 and 1 <= packet.reason_code <= 5:
        return  # a 3.1.1 refusal tolerated on a 5.0 connection; not ours to send
    wire = encode(packet, v)
    assert decode_packet(wire, v) == (packet, len(wire))


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from([None, 3, 4, 5]))
def test_random_bytes_only_raise_mqtt_errors(data: bytes, v: int | None) -> None:
    decoder = StreamDecoder(protocol_version=v)
    for packet in _decode_all(decoder, data):
        _reencodes(packet, decoder.protocol_version or 4)


@SETTINGS
@given(st.sampled_from(VERSIONS).flatmap(lambda v: st.tuples(st.just(v), st.binary(max_size=120))))
def test_random_bytes_after_a_connect(case: tuple[int, bytes]) -> None:
    # Get past the CONNECT gate so the fuzz reaches every other decoder.
    v, data = case
    decoder = StreamDecoder(max_packet_size=100)
    decoder.feed(encode(Connect("c", v, "MQIsdp" if v == 3 else "MQTT"), v))
    for packet in _decode_all(decoder, data):
        _reencodes(packet, v)


@SETTINGS
@given(versioned_packets, st.data())
def test_mutated_packets_only_raise_mqtt_errors(
    case: tuple[int, Packet], data: st.DataObject
) -> None:
    v, packet = case
    wire = bytearray(encode(packet, v))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        kind = data.draw(st.sampled_from(["flip", "insert", "delete", "set"]), label="kind")
        i = data.draw(st.integers(0, max(len(wire) - 1, 0)), label="index")
        if kind == "flip" and wire:
            wire[i] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif kind == "insert":
            wire.insert(i, data.draw(st.integers(0, 255), label="byte"))
        elif kind == "delete" and wire:
            del wire[i]
        elif wire:
            wire[i] = data.draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]), label="value")
    decoder = _decoder_for(v)
    for out in _decode_all(decoder, bytes(wire)):
        _reencodes(out, v)


def test_the_fast_constructors_build_what_the_dataclasses_build() -> None:
    from gateway.mqtt.packets import new_puback, new_pubcomp, new_publish, new_pubrec, new_pubrel

    props = Properties(reason_string="why")
    for cls, build in ((PubAck, new_puback), (PubRec, new_pubrec), (PubRel, new_pubrel)):
        for args in ((7, 0, NO_PROPERTIES), (65535, 0x80, props)):
            made = build(*args)
            assert made == cls(*args) and type(made) is cls and hash(made) == hash(cls(*args))
    assert new_pubcomp(1, 0x92, NO_PROPERTIES) == PubComp(1, 0x92)
    assert new_pubcomp(1, 0, NO_PROPERTIES).type is PubComp(1).type
    assert new_publish("t", b"x", 1, True, False, 3, props) == Publish(
        "t", b"x", 1, True, False, 3, props
    )
