"""$SYS statistics and broker counters."""

from __future__ import annotations

import logging

import pytest
from test_broker_support import V5, V311, Harness

from gateway.broker.settings import BrokerSettings
from gateway.broker.stats import BrokerStats


def test_sys_topics_published_every_interval() -> None:
    h = Harness(BrokerSettings(sys_interval=10))
    c = h.connect("mon", V311)
    c.subscribe("$SYS/#")
    assert c.publishes() == []
    h.advance(5)
    assert c.publishes() == []
    h.advance(5)
    got = {m.topic: m.payload for m in c.publishes()}
    assert got["$SYS/broker/clients/connected"] == b"1"
    assert got["$SYS/broker/uptime"] == b"10 seconds"
    assert got["$SYS/broker/version"].startswith(b"edge-gateway ")
    for topic in (
        "$SYS/broker/clients/total",
        "$SYS/broker/messages/received",
        "$SYS/broker/messages/sent",
        "$SYS/broker/publish/messages/dropped",
        "$SYS/broker/messages/stored",
        "$SYS/broker/retained messages/count",
        "$SYS/broker/subscriptions/count",
        "$SYS/broker/load/bytes/received",
        "$SYS/broker/load/bytes/sent",
        "$SYS/broker/store/queued",
        "$SYS/broker/publish/messages/dropped/queue_full",
        "$SYS/broker/publish/messages/dropped/expired",
    ):
        assert topic in got, topic
    h.advance(10)
    assert len(c.publishes()) == len(got)
    # Retained: a late subscriber gets the latest values at once.
    late = h.connect("late", V5)
    late.subscribe("$SYS/broker/uptime")
    assert [m.payload for m in late.publishes()] == [b"20 seconds"]
    assert h.store.ops == []  # $SYS is never written to the store


def test_sys_off() -> None:
    h = Harness(BrokerSettings(sys_interval=0))
    c = h.connect("mon", V311)
    c.subscribe("$SYS/#")
    h.advance(100)
    assert c.publishes() == []


def test_counters() -> None:
    h = Harness()
    s = h.connect("s", V311, clean=False)
    s.subscribe("t", qos=1)
    p = h.connect("p", V311)
    p.publish("t", qos=1)
    p.publish("t", qos=0)
    st = h.broker.stats
    assert st.publish_received == 2
    assert st.publish_sent == 2
    assert st.connections_total == 2
    assert st.clients_maximum == 2
    # CONNECTs, SUBSCRIBE, 2 PUBLISH; sent: 2 CONNACK, SUBACK, PUBACK, 2 PUBLISH
    assert st.messages_received == 5
    assert st.messages_sent == 6
    g = h.broker.gauges(h.now)
    assert (g.clients_connected, g.subscriptions, g.queued, g.inflight) == (2, 1, 1, 1)


def test_drop_logging_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    stats = BrokerStats()
    with caplog.at_level(logging.WARNING, logger="gateway.broker"):
        for _ in range(2500):
            stats.dropped("expired", 1, "x")
    assert stats.dropped_expired == 2500
    assert len(caplog.records) == 3  # 1st, 1000th, 2000th
    assert stats.dropped_total == 2500
