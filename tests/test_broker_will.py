"""Wills (MQTT 3.1.1 §3.1.2.5, MQTT 5.0 §3.1.2.5 and §3.1.3.2 will delay)."""

from __future__ import annotations

import pytest
from test_broker_support import V5, V311, Client, Harness, only, props

from gateway.broker.records import PutSession
from gateway.mqtt.packets import Disconnect, Will


def watcher(h: Harness, topic: str = "status/#", version: int = V5) -> Client:
    w = h.connect("watcher", version)
    w.subscribe(topic, qos=2)
    return w


@pytest.mark.parametrize("version", [V311, V5])
def test_will_on_lost_connection(version: int) -> None:
    h = Harness()
    w = watcher(h)
    c = h.connect("dev", version, will=Will("status/dev", b"offline", qos=1, retain=True))
    c.lose()
    msgs = w.publishes()
    assert [(m.topic, m.payload, m.qos) for m in msgs] == [("status/dev", b"offline", 1)]
    # Retained: a later subscriber sees it with RETAIN 1.
    late = h.connect("late", V311)
    late.subscribe("status/dev", qos=1)
    assert [(m.payload, m.retain) for m in late.publishes()] == [(b"offline", True)]


@pytest.mark.parametrize("version", [V311, V5])
def test_no_will_on_normal_disconnect(version: int) -> None:
    h = Harness()
    w = watcher(h)
    c = h.connect("dev", version, will=Will("status/dev", b"offline"))
    c.disconnect()
    c.lose()  # the shell reports the socket closing afterwards
    assert w.publishes() == []


def test_v5_disconnect_with_will_message() -> None:
    h = Harness()
    w = watcher(h)
    c = h.connect("dev", V5, will=Will("status/dev", b"offline"))
    c.disconnect(reason=0x04)
    assert [m.payload for m in w.publishes()] == [b"offline"]


@pytest.mark.parametrize("version", [V311, V5])
def test_protocol_violation_publishes_will(version: int) -> None:
    h = Harness()
    w = watcher(h)
    c = h.connect("dev", version, will=Will("status/dev", b"offline"))
    h.broker.protocol_violation(c.conn_id, 0x8D, h.now)  # keep-alive timeout seen by the shell
    h.flush()
    assert c.closed
    disc = only(c.all(), Disconnect)
    assert [d.reason_code for d in disc] == ([0x8D] if version == V5 else [])
    assert [m.payload for m in w.publishes()] == [b"offline"]
    c.lose()
    assert w.publishes() == []  # not twice


def test_will_properties_passed_through() -> None:
    h = Harness()
    w = watcher(h)
    will_props = props(will_delay_interval=0, user_properties=(("a", "2"), ("c", "3")))
    c = h.connect("dev", V5, will=Will("status/x", b"w", properties=will_props))
    c.lose()
    m = w.publishes()[0]
    assert m.properties.user_properties == (("a", "2"), ("c", "3"))
    assert m.properties.will_delay_interval is None


def test_will_delay_shorter_than_expiry() -> None:
    h = Harness()
    w = watcher(h)
    will = Will("status/d", b"w", properties=props(will_delay_interval=3))
    c = h.connect("dev", V5, expiry=5, will=will)
    c.lose()
    assert h.store.sessions["dev"].will == will
    h.advance(2)
    assert w.publishes() == []
    h.advance(1)
    assert [m.payload for m in w.publishes()] == [b"w"]
    assert h.store.sessions["dev"].will is None
    h.advance(5)
    assert w.publishes() == []
    assert not h.broker.session_exists("dev")


def test_will_delay_with_zero_expiry_is_immediate() -> None:
    h = Harness()
    w = watcher(h)
    will = Will("status/d", b"w", properties=props(will_delay_interval=5))
    c = h.connect("dev", V5, expiry=0, will=will)
    c.lose()
    assert [m.payload for m in w.publishes()] == [b"w"]


def test_will_delay_capped_by_session_expiry() -> None:
    h = Harness()
    w = watcher(h)
    will = Will("status/d", b"w", properties=props(will_delay_interval=5))
    c = h.connect("dev", V5, expiry=2, will=will)
    c.lose()
    h.advance(1)
    assert w.publishes() == []
    h.advance(1)
    assert [m.payload for m in w.publishes()] == [b"w"]
    assert not h.broker.session_exists("dev")


def test_will_delay_cancelled_by_reconnect() -> None:
    h = Harness()
    w = watcher(h)
    will = Will("status/d", b"w", properties=props(will_delay_interval=10))
    c = h.connect("dev", V5, expiry=100, will=will)
    c.lose()
    h.advance(5)
    c2 = h.connect("dev", V5, clean=False, expiry=100)
    assert h.store.sessions["dev"].will is None
    h.advance(10)
    assert w.publishes() == []
    c2.disconnect()
    h.advance(20)
    assert w.publishes() == []


def test_will_published_when_session_expires_first() -> None:
    h = Harness()
    w = watcher(h)
    will = Will("status/d", b"w", properties=props(will_delay_interval=1000))
    c = h.connect("dev", V5, expiry=3, will=will)
    c.lose()
    h.advance(3)
    assert [m.payload for m in w.publishes()] == [b"w"]


def test_will_delivered_to_offline_persistent_sessions() -> None:
    h = Harness()
    w = h.connect("w", V311, clean=False)
    w.subscribe("status/#", qos=1)
    w.disconnect()
    c = h.connect("dev", V311, will=Will("status/dev", b"bye", qos=1))
    c.lose()
    assert len(h.store.queue) == 1
    w2 = h.connect("w", V311, clean=False)
    assert [m.payload for m in w2.publishes()] == [b"bye"]


def test_will_in_session_record_while_connected() -> None:
    h = Harness()
    will = Will("status/d", b"w", qos=1)
    h.connect("dev", V311, clean=False, will=will)
    puts = [op for op in h.store.ops if isinstance(op, PutSession)]
    assert puts[-1].record.will == will and puts[-1].record.disconnected_at is None


def test_will_qos_and_retain_downgraded_for_311() -> None:
    from gateway.broker.settings import BrokerSettings

    h = Harness(BrokerSettings(max_qos=1, retain_available=False, sys_interval=0))
    w = watcher(h, version=V311)
    c = h.connect("dev", V311, will=Will("status/d", b"w", qos=2, retain=True))
    c.lose()
    m = w.publishes()[0]
    assert m.qos == 1 and not m.retain
    assert h.broker.retained_messages() == []
