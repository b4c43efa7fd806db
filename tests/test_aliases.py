"""Topic aliases both ways (MQTT 5.0 §3.3.2.3.4)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mqtt.aliases import InboundAliases, OutboundAliases
from gateway.mqtt.codec import StreamDecoder, encode
from gateway.mqtt.errors import ProtocolError
from gateway.mqtt.packets import NO_PROPERTIES, Properties, Publish
from gateway.mqtt.reason_codes import ReasonCode


def aliased(topic: str, alias: int, props: Properties = NO_PROPERTIES) -> Publish:
    return Publish(topic, b"x", properties=dataclasses.replace(props, topic_alias=alias))


# --------------------------------------------------------------------------- inbound


def test_inbound_sets_then_uses_an_alias() -> None:
    inbound = InboundAliases(10)
    first = inbound.resolve(aliased("home/temp", 3))
    assert first == Publish("home/temp", b"x")
    assert first.properties == NO_PROPERTIES
    assert inbound.resolve(aliased("", 3)) == Publish("home/temp", b"x")


def test_inbound_keeps_other_properties() -> None:
    inbound = InboundAliases(5)
    inbound.resolve(aliased("a", 1))
    extra = Properties(message_expiry_interval=9, user_properties=(("k", "v"),))
    out = inbound.resolve(aliased("", 1, extra))
    assert out.topic == "a"
    assert out.properties == extra


def test_inbound_alias_can_be_remapped() -> None:
    # 5.0 §3.3.2.3.4: a non-empty topic with a known alias replaces the mapping.
    inbound = InboundAliases(2)
    inbound.resolve(aliased("a", 1))
    inbound.resolve(aliased("b", 1))
    assert inbound.resolve(aliased("", 1)).topic == "b"


def test_inbound_without_alias_is_untouched() -> None:
    p = Publish("a/b", b"x", qos=1, packet_id=4)
    assert InboundAliases(3).resolve(p) is p


@pytest.mark.parametrize(
    ("maximum", "packet"),
    [
        (10, aliased("a", 0)),  # MQTT-3.3.2-8: 0 is not a valid alias
        (10, aliased("a", 11)),  # MQTT-3.3.2-9: above the maximum we announced
        (0, aliased("a", 1)),  # we allowed no aliases at all
    ],
    ids=["zero", "above-maximum", "none-allowed"],
)
def test_inbound_invalid_alias(maximum: int, packet: Publish) -> None:
    with pytest.raises(ProtocolError) as info:
        InboundAliases(maximum).resolve(packet)
    assert info.value.reason_code == ReasonCode.TOPIC_ALIAS_INVALID


def test_inbound_unknown_alias_with_empty_topic_is_a_protocol_error() -> None:
    # A valid alias value that was never set on this connection, and no topic name: the
    # PUBLISH has no topic at all (0x82), the alias value itself is fine (not 0x94).
    with pytest.raises(ProtocolError) as info:
        InboundAliases(10).resolve(aliased("", 4))
    assert info.value.reason_code == ReasonCode.PROTOCOL_ERROR


def test_inbound_empty_topic_without_alias() -> None:
    with pytest.raises(ProtocolError):
        InboundAliases(3).resolve(Publish(""))


def test_inbound_mappings_are_per_instance() -> None:
    # Aliases do not survive the connection (5.0 §3.3.2.3.4).
    old = InboundAliases(3)
    old.resolve(aliased("a", 1))
    with pytest.raises(ProtocolError):
        InboundAliases(3).resolve(aliased("", 1))


def test_inbound_from_the_wire() -> None:
    decoder = StreamDecoder(protocol_version=5)
    wire = encode(aliased("s/1", 2), 5) + encode(aliased("", 2), 5)
    inbound = InboundAliases(4)
    topics = [inbound.resolve(p).topic for p in decoder.feed(wire) if isinstance(p, Publish)]
    assert topics == ["s/1", "s/1"]


# --------------------------------------------------------------------------- outbound


def test_outbound_assigns_in_order_then_sends_alias_only() -> None:
    out = OutboundAliases(2)
    assert out.apply(Publish("a", b"1")) == Publish("a", b"1", properties=Properties(topic_alias=1))
    assert out.apply(Publish("a", b"2")) == Publish("", b"2", properties=Properties(topic_alias=1))
    assert out.apply(Publish("b", b"3")) == Publish("b", b"3", properties=Properties(topic_alias=2))
    assert out.apply(Publish("b", b"4")).topic == ""


def test_outbound_when_aliases_run_out_topics_go_in_full() -> None:
    out = OutboundAliases(1)
    out.apply(Publish("a"))
    p = Publish("b", b"x")
    assert out.apply(p) is p
    assert out.apply(p) is p
    assert out.apply(Publish("a")).topic == ""


def test_outbound_disabled() -> None:
    p = Publish("a")
    assert OutboundAliases(0).apply(p) is p


def test_outbound_keeps_properties_and_drops_foreign_alias() -> None:
    out = OutboundAliases(5)
    src = Publish("a", b"", properties=Properties(topic_alias=99, content_type="t"))
    first = out.apply(src)
    assert first.properties == Properties(topic_alias=1, content_type="t")
    assert OutboundAliases(0).apply(src).properties == Properties(content_type="t")


def test_maximum_range() -> None:
    with pytest.raises(ValueError):
        OutboundAliases(65536)
    with pytest.raises(ValueError):
        InboundAliases(-1)


@settings(deadline=None, max_examples=60)
@given(
    st.integers(0, 4),
    st.integers(0, 4),
    st.lists(st.sampled_from(["a", "b/c", "d/e/f", "g", "h", "i/j", "k"]), max_size=30),
)
def test_outbound_wire_inbound_round_trip(sender_max: int, extra: int, topics: list[str]) -> None:
    # What one side aliases, the other side (announcing at least as many) resolves back.
    out = OutboundAliases(sender_max)
    inbound = InboundAliases(sender_max + extra)
    decoder = StreamDecoder(protocol_version=5)
    sent = [out.apply(Publish(t, t.encode())) for t in topics]
    assert all(
        p.properties.topic_alias is None or p.properties.topic_alias <= sender_max for p in sent
    )
    received = decoder.feed(b"".join(encode(p, 5) for p in sent))
    assert [inbound.resolve(p).topic for p in received if isinstance(p, Publish)] == topics
