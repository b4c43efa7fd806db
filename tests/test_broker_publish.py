"""PUBLISH in, routing, SUBSCRIBE/UNSUBSCRIBE (MQTT 3.1.1 §3.3-3.11, MQTT 5.0 §3.3-3.11, §4.8)."""

from __future__ import annotations

import pytest
from test_broker_support import V5, V311, Harness, only, props, sub

from gateway.broker.effects import Identity
from gateway.broker.settings import BrokerSettings
from gateway.mqtt.packets import (
    Disconnect,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    UnsubAck,
)


class Acl:
    """Denies publish to ``deny/#``, reading ``secret/#``, subscribing ``test/nosubscribe``."""

    def __init__(self, refusal: int = 0x87) -> None:
        self.refusal = refusal

    def can_publish(self, username: str | None, client_id: str, topic: str) -> bool:
        return not topic.startswith("deny/")

    def can_receive(self, username: str | None, client_id: str, topic: str) -> bool:
        return not topic.startswith("secret/")

    def subscribe_refusal(self, username: str | None, client_id: str, f: str) -> int:
        return self.refusal if f == "test/nosubscribe" else 0


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_roundtrip_at_each_qos(version: int, qos: int) -> None:
    h = Harness()
    s = h.connect("s", version)
    assert only(s.subscribe("a/+", qos=2), SubAck)[0].reason_codes == (2,)
    p = h.connect("p", version)
    got = p.publish("a/b", b"hello", qos=qos)
    if qos == 1:
        assert got == [PubAck(1)]
    elif qos == 2:
        assert got == [PubRec(1)]
        assert p.send(PubRel(1)) == [PubComp(1)]
    else:
        assert got == []
    msgs = s.publishes()
    assert [(m.topic, m.payload, m.qos, m.retain) for m in msgs] == [("a/b", b"hello", qos, False)]
    assert (msgs[0].packet_id is None) == (qos == 0)
    if qos:
        s.ack(msgs[0])
    assert h.broker.sessions_info()[0].inflight == 0


def test_qos0_packet_object_is_reused_for_plain_fan_out() -> None:
    h = Harness()
    s = h.connect("s", V311)
    s.subscribe("t")
    p = h.connect("p", V311)
    packet = Publish("t", b"x")
    h.broker.handle(p.conn_id, packet, h.now)
    h.flush()
    assert s.publishes()[0] is packet


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_delivery_qos_is_min_of_publish_and_subscription(qos: int) -> None:
    h = Harness()
    s = h.connect("s", V5)
    s.subscribe("t", qos=1)
    h.connect("p", V5).publish("t", qos=qos)
    assert s.publishes()[0].qos == min(qos, 1)


def test_qos2_duplicate_is_not_redelivered() -> None:
    h = Harness()
    s = h.connect("s", V311)
    s.subscribe("t", qos=2)
    p = h.connect("p", V311)
    assert p.publish("t", b"once", qos=2, packet_id=7) == [PubRec(7)]
    assert p.publish("t", b"once", qos=2, packet_id=7, dup=True) == [PubRec(7)]
    assert p.send(PubRel(7)) == [PubComp(7)]
    assert len(s.publishes()) == 1
    # After the PUBREL the id is free: the same id is a new message.
    p.publish("t", b"again", qos=2, packet_id=7)
    assert [m.payload for m in s.publishes()] == [b"again"]


@pytest.mark.parametrize(("version", "code"), [(V311, 0), (V5, 0x92)])
def test_pubrel_for_unknown_id(version: int, code: int) -> None:
    h = Harness()
    c = h.connect("c", version)
    assert c.send(PubRel(99)) == [PubComp(99, code)]


def test_qos2_inbound_state_is_durable_for_persistent_sessions() -> None:
    h = Harness()
    p = h.connect("p", V5, clean=False, expiry=100)
    p.publish("t", qos=2, packet_id=3)
    assert ("p", 3) in h.store.inbound
    p.send(PubRel(3))
    assert ("p", 3) not in h.store.inbound


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_to_sys_refused(qos: int) -> None:
    h = Harness()
    s = h.connect("s", V5)
    s.subscribe("$SYS/#", qos=2)
    v5 = h.connect("p5", V5)
    got = v5.publish("$SYS/broker/fake", qos=qos)
    if qos == 1:
        assert got == [PubAck(1, 0x87)]
    elif qos == 2:
        assert got == [PubRec(1, 0x87)]
    v3 = h.connect("p3", V311)
    got = v3.publish("$SYS/broker/fake", qos=qos)
    if qos == 1:
        assert got == [PubAck(1)]  # 3.1.1 cannot be told; the message is dropped
    elif qos == 2:
        assert got == [PubRec(1)]
        assert v3.send(PubRel(1)) == [PubComp(1)]
    assert s.publishes() == []


def test_other_dollar_topics_may_be_published_but_not_matched_by_wildcards() -> None:
    h = Harness()
    wild = h.connect("w", V311)
    wild.subscribe("+/+", "#", qos=1)
    exact = h.connect("e", V311)
    exact.subscribe("$TopicA/B", qos=1)
    p = h.connect("p", V311)
    assert p.publish("$TopicA/B", b"", qos=1) == [PubAck(1)]
    assert wild.publishes() == []
    assert len(exact.publishes()) == 1


@pytest.mark.parametrize("version", [V311, V5])
def test_publish_acl(version: int) -> None:
    h = Harness(authorizer=Acl())
    s = h.connect("s", version)
    s.subscribe("#", qos=1)
    p = h.connect("p", version)
    got = p.publish("deny/x", qos=1)
    assert got == [PubAck(1, 0x87 if version == V5 else 0)]
    assert s.publishes() == []
    assert h.broker.stats.publish_denied == 1


def test_receive_acl_filters_deliveries() -> None:
    h = Harness(authorizer=Acl())
    s = h.connect("s", V311)
    s.subscribe("#", qos=0)
    p = h.connect("p", V311)
    p.publish("secret/x")
    p.publish("open/x")
    assert [m.topic for m in s.publishes()] == ["open/x"]


def test_trusted_identity_is_exempt_from_the_acl() -> None:
    """The gateway's own device sessions (trusted, is_admin) must work under default-deny."""
    h = Harness(authorizer=Acl(refusal=0x87))
    admin = Identity(ok=True, is_admin=True)
    dev = h.connect("dev-1", V5, identity=admin)
    assert dev.subscribe("test/nosubscribe", qos=1)[0].reason_codes == (1,)
    dev.subscribe("secret/#", qos=1)
    assert only(dev.publish("deny/x", qos=1), PubAck)[0].reason_code == 0x10  # no subscriber
    other = h.connect("other", V5)
    other.publish("secret/x", qos=1)
    assert [m.topic for m in dev.publishes()] == ["secret/x"]
    plain = h.connect("plain", V5)
    assert only(plain.publish("deny/x", qos=1), PubAck)[0].reason_code == 0x87


def test_qos_above_maximum_disconnects_v5() -> None:
    h = Harness(BrokerSettings(max_qos=1, sys_interval=0))
    p = h.connect("p", V5)
    got = p.publish("t", qos=2)
    assert only(got, Disconnect)[0].reason_code == 0x9B
    assert p.closed


def test_retain_when_unavailable_disconnects() -> None:
    h = Harness(BrokerSettings(retain_available=False, sys_interval=0))
    p = h.connect("p", V5)
    assert only(p.publish("t", retain=True), Disconnect)[0].reason_code == 0x9A
    q = h.connect("q", V311)
    q.publish("t", retain=True)
    assert q.closed


def test_wildcard_in_topic_name_is_a_protocol_violation() -> None:
    h = Harness()
    p = h.connect("p", V5)
    assert only(p.publish("a/+", qos=1), Disconnect)[0].reason_code == 0x90


def test_receive_maximum_exceeded_v5() -> None:
    h = Harness(BrokerSettings(receive_maximum=3, sys_interval=0))
    p = h.connect("p", V5)
    for i in range(3):
        assert p.publish("t", qos=2)[0].packet_id == i + 1
    got = p.publish("t", qos=2)
    assert only(got, Disconnect)[0].reason_code == 0x93
    assert p.closed


def test_receive_maximum_frees_on_pubrel() -> None:
    h = Harness(BrokerSettings(receive_maximum=2, sys_interval=0))
    p = h.connect("p", V5)
    for _ in range(10):
        pid = p.next_pid()
        assert p.publish("t", qos=2, packet_id=pid)[0].packet_id == pid
        assert p.send(PubRel(pid)) == [PubComp(pid)]
    assert not p.closed


@pytest.mark.parametrize("qos", [1, 2])
def test_no_matching_subscribers_v5(qos: int) -> None:
    h = Harness()
    p = h.connect("p", V5)
    got = p.publish("nobody", qos=qos)
    assert got[0].reason_code == 0x10
    v3 = h.connect("p3", V311)
    assert v3.publish("nobody", qos=qos)[0].reason_code == 0


def test_payload_format_invalid_v5() -> None:
    h = Harness()
    s = h.connect("s", V5)
    s.subscribe("t")
    p = h.connect("p", V5)
    got = p.publish("t", b"\xff\xfe", qos=1, properties=props(payload_format_indicator=1))
    assert got == [PubAck(1, 0x99)]
    ok = p.publish("t", "ok é".encode(), qos=1, properties=props(payload_format_indicator=1))
    assert ok == [PubAck(2)]
    assert len(s.publishes()) == 1


def test_overlapping_subscriptions_one_delivery_at_max_qos_v5_ids() -> None:
    h = Harness()
    s = h.connect("s", V5)
    s.subscribe(sub("TopicA/#", 2), properties=props(subscription_identifiers=(2,)))
    s.subscribe(sub("TopicA/+", 1), properties=props(subscription_identifiers=(3,)))
    s.subscribe(sub("+/C", 0))
    h.connect("p", V5).publish("TopicA/C", qos=2)
    msgs = s.publishes()
    assert len(msgs) == 1
    assert msgs[0].qos == 2
    assert sorted(msgs[0].properties.subscription_identifiers) == [2, 3]


def test_overlapping_subscriptions_311_one_delivery() -> None:
    h = Harness()
    s = h.connect("s", V311)
    s.subscribe(sub("TopicA/#", 2), sub("TopicA/+", 1))
    h.connect("p", V311).publish("TopicA/C", qos=2)
    msgs = s.publishes()
    assert [m.qos for m in msgs] == [2]


def test_subscription_identifier_single_and_replaced() -> None:
    h = Harness()
    a = h.connect("a", V5)
    a.subscribe("TopicA", qos=2, properties=props(subscription_identifiers=(456789,)))
    p = h.connect("p", V5)
    p.publish("TopicA", qos=1)
    assert a.publishes()[0].properties.subscription_identifiers == (456789,)
    a.subscribe("TopicA", qos=2)  # re-subscribe without an id replaces it
    p.publish("TopicA", qos=0)
    assert a.publishes()[0].properties.subscription_identifiers == ()


def test_subscription_identifiers_not_supported() -> None:
    h = Harness(BrokerSettings(subscription_identifiers=False, sys_interval=0))
    a = h.connect("a", V5)
    got = a.subscribe("t", properties=props(subscription_identifiers=(1,)))
    assert only(got, Disconnect)[0].reason_code == 0xA1


def test_no_local() -> None:
    h = Harness()
    a = h.connect("a", V5)
    b = h.connect("b", V5)
    a.subscribe(sub("t", 2, no_local=True))
    b.subscribe(sub("t", 2, no_local=True))
    got = a.publish("t", b"from a", qos=1)
    assert only(got, Publish) == []
    assert a.publishes() == []
    assert [m.payload for m in b.publishes()] == [b"from a"]


def test_no_local_with_overlapping_local_subscription() -> None:
    h = Harness()
    a = h.connect("a", V5)
    a.subscribe(sub("t", 2, no_local=True))
    a.subscribe(sub("#", 1), properties=props(subscription_identifiers=(9,)))
    msgs = only(a.publish("t", qos=2), Publish)
    assert len(msgs) == 1
    assert msgs[0].qos == 1 and msgs[0].properties.subscription_identifiers == (9,)


@pytest.mark.parametrize("version", [V311, V5])
def test_retain_flag_cleared_on_normal_delivery(version: int) -> None:
    h = Harness()
    s = h.connect("s", version)
    s.subscribe("t", qos=1)
    h.connect("p", version).publish("t", qos=1, retain=True)
    assert s.publishes()[0].retain is False


def test_retain_as_published() -> None:
    h = Harness()
    s = h.connect("s", V5)
    s.subscribe(sub("t", 1, retain_as_published=True))
    p = h.connect("p", V5)
    p.publish("t", b"plain", qos=1)
    p.publish("t", b"kept", qos=1, retain=True)
    p.publish("t", b"kept0", qos=0, retain=True)
    assert [(m.payload, m.retain) for m in s.publishes()] == [
        (b"plain", False),
        (b"kept", True),
        (b"kept0", True),
    ]


@pytest.mark.parametrize(("version", "code"), [(V311, 0x80), (V5, 0x80), (V5, 0x87)])
def test_subscribe_refused_by_acl(version: int, code: int) -> None:
    h = Harness(authorizer=Acl(refusal=code))
    c = h.connect("c", version)
    got = only(c.subscribe("test/nosubscribe", "ok", qos=2), SubAck)[0]
    assert got.reason_codes == (0x80 if version == V311 else code, 2)
    assert h.broker.sessions_info()[0].subscriptions == ("ok",)


@pytest.mark.parametrize(
    "bad", ["a/#/b", "a+", "", "#/x", "a/b#", "$share/g", "$share//t", "$share/g+/t"]
)
@pytest.mark.parametrize("version", [V311, V5])
def test_invalid_filters(bad: str, version: int) -> None:
    h = Harness()
    c = h.connect("c", version)
    got = only(c.subscribe(bad, qos=1), SubAck)[0]
    assert got.reason_codes == ((0x80,) if version == V311 else (0x8F,))


def test_granted_qos_capped_by_max_qos() -> None:
    h = Harness(BrokerSettings(max_qos=1, sys_interval=0))
    c = h.connect("c", V5)
    assert only(c.subscribe("t", qos=2), SubAck)[0].reason_codes == (1,)


def test_wildcards_unavailable() -> None:
    h = Harness(BrokerSettings(wildcard_subscriptions=False, sys_interval=0))
    c = h.connect("c", V5)
    assert only(c.subscribe("a/+", "a/b"), SubAck)[0].reason_codes == (0xA2, 0)


def test_unsubscribe_v5_codes_and_311_empty() -> None:
    h = Harness()
    c = h.connect("c", V5)
    c.subscribe("a", "b")
    assert c.unsubscribe("a", "zzz") == [UnsubAck(2, (0, 0x11))]
    p = h.connect("p", V5)
    p.publish("a")
    p.publish("b")
    assert [m.topic for m in c.publishes()] == ["b"]
    d = h.connect("d", V311)
    d.subscribe("a")
    assert d.unsubscribe("a") == [UnsubAck(2, ())]


def test_properties_passed_through_unchanged() -> None:
    h = Harness()
    s = h.connect("s", V5)
    s.subscribe("req")
    p = h.connect("p", V5)
    pp = props(
        payload_format_indicator=1,
        content_type="text/plain",
        response_topic="resp/1",
        correlation_data=b"334",
        user_properties=(("a", "2"), ("c", "3")),
    )
    for qos in (0, 1, 2):
        p.publish("req", b"request", qos=qos, properties=pp)
    msgs = s.publishes()
    assert len(msgs) == 3
    for m in msgs:
        assert m.properties == pp


def test_request_response_round_trip() -> None:
    h = Harness()
    a = h.connect("a", V5)
    b = h.connect("b", V5)
    a.subscribe(sub("svc", 2, no_local=True))
    b.subscribe(sub("svc", 2, no_local=True))
    a.publish(
        "svc", b"request", qos=1, properties=props(response_topic="svc", correlation_data=b"7")
    )
    req = b.publishes()[0]
    assert req.properties.response_topic == "svc" and req.properties.correlation_data == b"7"
    b.publish(req.properties.response_topic, b"response", qos=1, properties=req.properties)
    resp = a.publishes()
    assert [m.payload for m in resp] == [b"response"]
    assert resp[0].properties.correlation_data == b"7"


def test_inbound_topic_alias_and_subscription_ids_are_not_forwarded() -> None:
    h = Harness()
    s = h.connect("s", V5)
    s.subscribe("t")
    p = h.connect("p", V5)
    p.publish("t", properties=props(topic_alias=3, subscription_identifiers=(5,)))
    m = s.publishes()[0]
    assert m.properties.topic_alias is None and m.properties.subscription_identifiers == ()


# --- shared subscriptions ---------------------------------------------------------------------


def test_shared_subscription_round_robin() -> None:
    h = Harness()
    a = h.connect("a", V5)
    b = h.connect("b", V5)
    a.subscribe("$share/g/jobs/#", "plain", qos=1)
    b.subscribe("$share/g/jobs/#", "plain", qos=1)
    p = h.connect("p", V5)
    for i in range(10):
        p.publish("jobs/x", str(i).encode(), qos=1)
    got_a = [m.payload for m in a.publishes()]
    got_b = [m.payload for m in b.publishes()]
    assert len(got_a) == 5 and len(got_b) == 5
    assert sorted(got_a + got_b, key=int) == [str(i).encode() for i in range(10)]
    p.publish("plain", qos=0)
    assert len(a.publishes()) == 1 and len(b.publishes()) == 1


def test_shared_subscription_skips_disconnected_members() -> None:
    h = Harness()
    a = h.connect("a", V5, clean=False, expiry=100)
    b = h.connect("b", V5)
    a.subscribe("$share/g/t", qos=1)
    b.subscribe("$share/g/t", qos=1)
    a.lose()
    p = h.connect("p", V5)
    for _ in range(4):
        p.publish("t", qos=1)
    assert len(b.publishes()) == 4
    assert h.broker.sessions_info()[0].queued == 0


def test_shared_subscription_queues_when_no_member_is_connected() -> None:
    h = Harness()
    a = h.connect("a", V5, clean=False, expiry=100)
    b = h.connect("b", V5, clean=False, expiry=100)
    a.subscribe("$share/g/t", qos=1)
    b.subscribe("$share/g/t", qos=1)
    a.lose()
    b.lose()
    p = h.connect("p", V5)
    for i in range(4):
        assert p.publish("t", str(i).encode(), qos=1)[0].reason_code == 0
    queued = {i.client_id: i.queued for i in h.broker.sessions_info()}
    assert queued["a"] + queued["b"] == 4
    a2 = h.connect("a", V5, clean=False, expiry=100)
    b2 = h.connect("b", V5, clean=False, expiry=100)
    assert len(a2.publishes()) + len(b2.publishes()) == 4


def test_shared_subscription_no_local_is_protocol_error() -> None:
    h = Harness()
    a = h.connect("a", V5)
    got = a.subscribe(sub("$share/g/t", 1, no_local=True))
    assert only(got, Disconnect)[0].reason_code == 0x82


def test_shared_subscriptions_unavailable() -> None:
    h = Harness(BrokerSettings(shared_subscriptions=False, sys_interval=0))
    a = h.connect("a", V5)
    assert only(a.subscribe("$share/g/t"), SubAck)[0].reason_codes == (0x9E,)


def test_shared_unsubscribe_and_per_group_delivery() -> None:
    h = Harness()
    a = h.connect("a", V5)
    b = h.connect("b", V5)
    a.subscribe("$share/g1/t", qos=1)
    b.subscribe("$share/g2/t", qos=1)
    p = h.connect("p", V5)
    p.publish("t", qos=1)
    assert len(a.publishes()) == 1 and len(b.publishes()) == 1  # one per group
    assert a.unsubscribe("$share/g1/t") == [UnsubAck(2, (0,))]
    p.publish("t", qos=1)
    assert a.publishes() == [] and len(b.publishes()) == 1


def test_max_topic_levels() -> None:
    h = Harness(BrokerSettings(max_topic_levels=3, sys_interval=0))
    c = h.connect("c", V5)
    assert only(c.subscribe("a/b/c", "a/b/c/d"), SubAck)[0].reason_codes == (0, 0x8F)
    assert c.publish("a/b/c/d", qos=1) == [PubAck(2, 0x90)]


def test_pingreq() -> None:
    from gateway.mqtt.packets import PingReq, PingResp

    h = Harness()
    c = h.connect("c", V311)
    assert c.send(PingReq()) == [PingResp()]


def test_auth_packet_is_a_protocol_error() -> None:
    from gateway.mqtt.packets import Auth

    h = Harness()
    c = h.connect("c", V5)
    assert only(c.send(Auth(0x19)), Disconnect)[0].reason_code == 0x82
    assert c.closed


def test_311_has_no_inbound_receive_maximum() -> None:
    h = Harness(BrokerSettings(receive_maximum=2, sys_interval=0))
    p = h.connect("p", V311)
    for _ in range(10):
        p.publish("t", qos=2)
    assert not p.closed
    assert h.broker.sessions_info()[0].inbound_qos2 == 10
