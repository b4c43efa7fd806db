"""Retained messages (MQTT 3.1.1 §3.3.1.3, MQTT 5.0 §3.3.1.3 and retain handling §3.8.3.1)."""

from __future__ import annotations

import pytest
from test_broker_support import V5, V311, Harness, only, props, sub

from gateway.broker.records import DeleteRetained, PutRetained
from gateway.broker.settings import BrokerSettings
from gateway.mqtt.packets import PubRel, SubAck


def seed(h: Harness, version: int = V5) -> None:
    p = h.connect("seed", version)
    p.publish("TopicA/B", b"qos 0", qos=0, retain=True)
    p.publish("Topic/C", b"qos 1", qos=1, retain=True)
    p.publish("TopicA/C", b"qos 2", qos=2, retain=True)
    p.send(PubRel(2))
    p.disconnect()


@pytest.mark.parametrize("version", [V311, V5])
def test_retained_delivered_on_subscribe_with_retain_flag(version: int) -> None:
    h = Harness()
    seed(h, version)
    c = h.connect("c", version)
    got = c.subscribe("+/+", qos=2)
    assert isinstance(got[0], SubAck)  # SUBACK first, then the retained messages
    msgs = c.publishes()
    assert sorted((m.topic, m.qos, m.retain) for m in msgs) == [
        ("Topic/C", 1, True),
        ("TopicA/B", 0, True),
        ("TopicA/C", 2, True),
    ]


def test_retained_qos_capped_by_subscription() -> None:
    h = Harness()
    seed(h)
    c = h.connect("c", V311)
    c.subscribe("TopicA/C", qos=1)
    assert [m.qos for m in c.publishes()] == [1]


@pytest.mark.parametrize("version", [V311, V5])
def test_replace_and_clear(version: int) -> None:
    h = Harness()
    p = h.connect("p", version)
    p.publish("state/a", b"one", qos=1, retain=True)
    p.publish("state/a", b"two", qos=1, retain=True)
    assert h.store.retained["state/a"].payload == b"two"
    c = h.connect("c", version)
    c.subscribe("state/#", qos=1)
    assert [m.payload for m in c.publishes()] == [b"two"]
    p.publish("state/a", b"", qos=0, retain=True)
    assert "state/a" not in h.store.retained
    assert [m.payload for m in c.publishes()] == [b""]  # the clearing publish goes out live
    late = h.connect("late", version)
    late.subscribe("state/#", qos=1)
    assert late.publishes() == []
    kinds = [type(op) for op in h.store.ops if isinstance(op, (PutRetained, DeleteRetained))]
    assert kinds == [PutRetained, PutRetained, DeleteRetained]


def test_clearing_a_missing_retained_message_emits_nothing() -> None:
    h = Harness()
    h.connect("p", V311).publish("none", b"", retain=True)
    assert h.store.ops == []


def test_dollar_rule_for_retained() -> None:
    h = Harness()
    h.publish_local("$SYS/broker/x", b"1", retain=True)
    c = h.connect("c", V311)
    c.subscribe("#", "+/broker/x")
    assert c.publishes() == []
    c.subscribe("$SYS/#")
    assert [m.topic for m in c.publishes()] == ["$SYS/broker/x"]


def test_retain_handling() -> None:
    h = Harness()
    seed(h)
    c = h.connect("c", V5)
    c.subscribe(sub("+/+", 2, retain_handling=1))
    assert len(c.publishes()) == 3
    c.subscribe(sub("+/+", 2, retain_handling=1))  # exists already: nothing
    assert c.publishes() == []
    c.subscribe(sub("+/+", 2, retain_handling=0))  # always
    assert len(c.publishes()) == 3
    d = h.connect("d", V5)
    d.subscribe(sub("+/+", 2, retain_handling=2))
    d.subscribe(sub("+/+", 2, retain_handling=2))
    assert d.publishes() == []


def test_no_retained_for_shared_subscriptions() -> None:
    h = Harness()
    seed(h)
    c = h.connect("c", V5)
    c.subscribe("$share/g/+/+", qos=2)
    assert c.publishes() == []


def test_retained_with_subscription_identifier() -> None:
    h = Harness()
    seed(h)
    c = h.connect("c", V5)
    c.subscribe("TopicA/B", properties=props(subscription_identifiers=(42,)))
    assert c.publishes()[0].properties.subscription_identifiers == (42,)


def test_retained_expiry() -> None:
    h = Harness()
    p = h.connect("p", V5)
    p.publish("t", b"short", qos=1, retain=True, properties=props(message_expiry_interval=10))
    h.now += 4
    c = h.connect("c", V5)
    c.subscribe("t", qos=1)
    assert [m.properties.message_expiry_interval for m in c.publishes()] == [6]
    h.advance(7)
    assert "t" not in h.store.retained
    d = h.connect("d", V5)
    d.subscribe("t", qos=1)
    assert d.publishes() == []


def test_retained_expired_but_not_yet_ticked_is_not_delivered() -> None:
    h = Harness()
    h.connect("p", V5).publish("t", b"s", retain=True, properties=props(message_expiry_interval=1))
    h.now += 2
    c = h.connect("c", V5)
    c.subscribe("t")
    assert c.publishes() == []


def test_max_retained_messages() -> None:
    h = Harness(BrokerSettings(max_retained_messages=2, sys_interval=0))
    p = h.connect("p", V311)
    for t in ("a", "b", "c"):
        p.publish(t, t.encode(), retain=True)
    p.publish("a", b"replaced", retain=True)  # replacing is always allowed
    assert {m.topic: m.payload for m in h.broker.retained_messages()} == {
        "a": b"replaced",
        "b": b"b",
    }
    assert h.broker.stats.dropped_retained_full == 1


def test_sys_retained_not_made_durable() -> None:
    h = Harness()
    h.publish_local("$SYS/broker/uptime", b"1 seconds", retain=True)
    assert h.store.ops == []
    assert len(h.broker.retained_messages()) == 1


def test_dollar_topics_outside_sys_are_durable() -> None:
    # "$SYSTEM/x" is not in the $SYS tree: a client may publish it, so it must be stored.
    h = Harness()
    p = h.connect("p")
    p.publish("$SYSTEM/x", b"kept", qos=1, retain=True)
    assert h.store.retained["$SYSTEM/x"].payload == b"kept"


def test_publish_local_bypasses_publish_acl() -> None:
    class DenyAll:
        def can_publish(self, username: str | None, client_id: str, topic: str) -> bool:
            return False

        def can_receive(self, username: str | None, client_id: str, topic: str) -> bool:
            return True

        def subscribe_refusal(self, username: str | None, client_id: str, f: str) -> int:
            return 0

    h = Harness(authorizer=DenyAll())
    c = h.connect("c", V311)
    assert only(c.subscribe("gw/#", qos=1), SubAck)[0].reason_codes == (1,)
    h.publish_local("gw/bridge/state", b"online", qos=1, retain=True)
    assert [m.payload for m in c.publishes()] == [b"online"]
    with pytest.raises(ValueError):
        h.broker.publish_local("bad/#", b"", now=h.now)
