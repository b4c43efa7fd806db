"""The broker core while the store says it is full (store_limit.py): what it refuses, what it
drops by the session's overflow policy, and what goes on."""

from __future__ import annotations

import json
import logging

import pytest
from test_broker_support import V5, V311, Harness, only, props

from gateway.broker.effects import Identity
from gateway.broker.records import DeleteQueueEntry, PutMessage
from gateway.broker.settings import BrokerSettings, Overflow, QueueLimits
from gateway.mqtt.packets import PubAck, PubRec


def harness(overflow: Overflow = Overflow.DROP_OLDEST) -> Harness:
    return Harness(BrokerSettings(sys_interval=0, default_queue=QueueLimits(overflow=overflow)))


def offline(h: Harness, client_id: str = "keeper", version: int = V5) -> None:
    c = h.connect(client_id, version, clean=False, expiry=3600 if version == V5 else None)
    c.subscribe("t/#", qos=1)
    c.disconnect()


def stored_messages(h: Harness) -> list[bytes]:
    return [m.payload for m in h.store.messages.values()]


def test_v5_publish_that_would_be_stored_is_refused_whole_with_0x97() -> None:
    h = harness()
    offline(h)
    live = h.connect("live", V5)
    live.subscribe("t/#", qos=1)
    pub = h.connect("pub", V5)
    h.broker.set_store_full(True, "test")
    (ack,) = only(pub.publish("t/1", b"a", qos=1), PubAck)
    assert ack.reason_code == 0x97 and "full" in (ack.properties.reason_string or "")
    (rec,) = only(pub.publish("t/2", b"b", qos=2), PubRec)
    assert rec.reason_code == 0x97
    assert not h.broker.sessions["pub"].inbound_qos2  # the exchange ended with the PUBREC
    assert stored_messages(h) == [] and live.publishes() == []  # not routed at all
    assert h.broker.stats.dropped_store_full == 2


def test_what_is_not_stored_goes_on_while_full() -> None:
    h = harness()
    live = h.connect("live", V5)
    live.subscribe("t/#", qos=1)
    pub = h.connect("pub", V5)
    h.broker.set_store_full(True)
    # A clean subscriber only: nothing to store, so nothing to refuse.
    assert only(pub.publish("t/1", b"a", qos=1), PubAck)[0].reason_code == 0
    pub.publish("t/2", b"b", qos=0)
    assert [p.payload for p in live.publishes()] == [b"a", b"b"]
    # A persistent session that is online still receives QoS 0.
    offline(h, "keeper")
    keeper = h.connect("keeper", V5, clean=False, expiry=3600)
    pub.publish("t/3", b"c", qos=0)
    assert [p.payload for p in keeper.publishes()] == [b"c"]


def test_deliveries_shrink_the_store_while_full() -> None:
    h = harness()
    offline(h)
    pub = h.connect("pub", V5)
    for i in range(3):
        pub.publish(f"t/{i}", b"m%d" % i, qos=1)
    h.broker.set_store_full(True)
    keeper = h.connect("keeper", V5, clean=False, expiry=3600)
    got = keeper.publishes()
    assert [p.payload for p in got] == [b"m0", b"m1", b"m2"]
    for p in got:
        keeper.ack(p)
    assert stored_messages(h) == []
    assert h.broker.stats.dropped_store_full == 0


@pytest.mark.parametrize("publisher", [V311, "local"])
def test_drop_oldest_makes_room_for_a_message_that_cannot_be_refused(
    publisher: int | str,
) -> None:
    h = harness(Overflow.DROP_OLDEST)
    offline(h)
    watcher = h.connect("watcher", V5)
    pub = h.connect("pub", V311)
    for i in range(3):
        pub.publish(f"t/{i}", b"1234", qos=1)
    h.broker.set_store_full(True)
    if publisher == "local":
        h.publish_local("t/new", b"12345678", qos=1)  # the broker's own: nobody to tell
    else:
        (ack,) = only(pub.publish("t/new", b"12345678", qos=1), PubAck)
        assert ack.reason_code == 0  # 3.1.1 cannot be told
    # Two oldest dropped: as many payload bytes as the new one brings.
    keeper = h.connect("keeper", V5, clean=False, expiry=3600)
    assert [p.topic for p in keeper.publishes()] == ["t/2", "t/new"]
    assert h.broker.stats.dropped_store_full == 2
    assert watcher.publishes() == []


def test_reject_new_drops_the_new_message_and_tells_the_notify_topic() -> None:
    h = harness(Overflow.REJECT_NEW)
    dev = h.connect(
        "dev-x", V5, clean=False, expiry=3600, identity=Identity(ok=True, is_admin=True),
        properties=props(user_properties=(("queue-notify-topic", "gw/x/result"),)),
    )  # fmt: skip
    dev.subscribe("gw/x/set", qos=1)
    dev.disconnect()
    watcher = h.connect("watcher", V5)
    watcher.subscribe("gw/x/result", qos=1)
    app = h.connect("app", V311)
    app.publish("gw/x/set", b'{"on": true}', qos=1)
    h.broker.set_store_full(True)
    app.publish("gw/x/set", b'{"on": false}', qos=1)
    (notice,) = [json.loads(p.payload) for p in watcher.publishes()]
    assert notice["result"] == "dropped" and notice["reason"] == "store_full"
    assert stored_messages(h) == [b'{"on": true}']


def test_a_session_with_nothing_to_drop_loses_the_new_message() -> None:
    h = harness(Overflow.DROP_OLDEST)
    offline(h)
    pub = h.connect("pub", V311)
    h.broker.set_store_full(True)
    pub.publish("t/1", b"a", qos=1)
    assert stored_messages(h) == [] and h.broker.stats.dropped_store_full == 1


def test_retained_messages_are_kept_only_if_the_store_does_not_grow_much() -> None:
    h = harness()
    pub = h.connect("pub", V311)
    pub.publish("r/a", b"12345", qos=1, retain=True)
    pub.publish("r/big", b"x" * 5000, qos=1, retain=True)
    h.broker.set_store_full(True)
    pub.publish("r/b", b"new", qos=1, retain=True)  # a new topic: not kept
    pub.publish("r/a", b"123456789", qos=1, retain=True)  # a small state: replaces
    pub.publish("r/a", b"y" * 2000, qos=1, retain=True)  # larger than 1 KiB: refused
    pub.publish("r/big", b"z" * 4000, qos=1, retain=True)  # smaller: replaces
    pub.publish("r/big", b"z" * 4001, qos=1, retain=True)  # larger: the 4000 bytes stay
    retained = {t: m.payload for t, m in h.store.retained.items()}
    assert retained == {"r/a": b"123456789", "r/big": b"z" * 4000}
    assert h.broker.stats.dropped_store_full == 3
    v5 = h.connect("pub5", V5)
    assert only(v5.publish("r/c", b"x", qos=1, retain=True), PubAck)[0].reason_code == 0x97
    assert only(v5.publish("r/a", b"", qos=1, retain=True), PubAck)[0].reason_code == 0x10
    assert "r/a" not in h.store.retained  # clearing always works


def test_room_again_stores_again_and_both_changes_are_events_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = harness()
    offline(h)
    pub = h.connect("pub", V5)
    with caplog.at_level(logging.WARNING, logger="gateway.broker"):
        h.broker.set_store_full(True, "0.9 MiB of data")
        h.broker.set_store_full(True, "again")  # no change: nothing said
        assert only(pub.publish("t/1", b"a", qos=1), PubAck)[0].reason_code == 0x97
        h.broker.set_store_full(False, "0.7 MiB of data")
    assert only(pub.publish("t/2", b"b", qos=1), PubAck)[0].reason_code == 0
    assert any(isinstance(op, PutMessage) for op in h.batches[-1][0])
    _, events = h.broker.events_since(0)
    kinds = [(e["type"], e["detail"]) for e in events if str(e["type"]).startswith("store")]
    assert kinds == [("store_full", "0.9 MiB of data"), ("store_ok", "0.7 MiB of data")]
    warnings = [r.getMessage() for r in caplog.records if "store" in r.getMessage()]
    assert len([w for w in warnings if w.startswith("store full")]) == 1
    assert any(w.startswith("store has room again") for w in warnings)


def test_a_dropped_oldest_message_with_an_expiry_is_not_dropped_twice() -> None:
    # A message dropped for room (queue full or store full) left its expiry behind; when it
    # came due it was "expired" again: counted twice and deleted twice from the store.
    h = Harness(BrokerSettings(sys_interval=0, default_queue=QueueLimits(max_messages=1)))
    offline(h)
    pub = h.connect("pub", V5)
    pub.publish("t/1", b"a", qos=1, properties=props(message_expiry_interval=10))
    pub.publish("t/2", b"b", qos=1)
    h.advance(20)  # FakeStore asserts that a message is not deleted twice
    assert h.broker.stats.dropped_expired == 0 and h.broker.stats.dropped_queue_full == 1
    keeper = h.connect("keeper", V5, clean=False, expiry=3600)
    assert [p.payload for p in keeper.publishes()] == [b"b"]
    deletes = [op for batch, _ in h.batches for op in batch if isinstance(op, DeleteQueueEntry)]
    assert len(deletes) == len({(d.client_id, d.seq) for d in deletes})
