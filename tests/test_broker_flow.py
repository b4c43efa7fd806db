"""Outgoing flow control, redelivery, offline queues and their limits, message expiry."""

from __future__ import annotations

import logging

import pytest
from test_broker_support import V5, V311, Harness, only, props

from gateway.broker.records import DeleteMessage, DeleteQueueEntry, EntryState, PutQueueEntry
from gateway.broker.settings import BrokerSettings, Overflow, QueueLimits, QueueRule
from gateway.mqtt.codec import publish_size
from gateway.mqtt.packets import PubAck, PubComp, Publish, PubRec, PubRel


def settings(**kw: object) -> BrokerSettings:
    kw.setdefault("sys_interval", 0)
    return BrokerSettings(**kw)  # type: ignore[arg-type]


def test_client_receive_maximum_limits_inflight() -> None:
    h = Harness()
    c = h.connect("c", V5, properties=props(receive_maximum=2))
    c.subscribe("t", qos=2)
    p = h.connect("p", V5)
    for i in range(3):
        p.publish("t", f"m{i}".encode(), qos=1)
    first = c.publishes()
    assert [m.payload for m in first] == [b"m0", b"m1"]
    c.send(PubAck(first[0].packet_id))  # type: ignore[arg-type]
    third = c.publishes()
    assert [m.payload for m in third] == [b"m2"]
    assert c.send(PubAck(first[1].packet_id)) == []  # type: ignore[arg-type]


def test_max_inflight_out_limits_311() -> None:
    h = Harness(settings(max_inflight_out=3))
    c = h.connect("c", V311)
    c.subscribe("t", qos=1)
    p = h.connect("p", V311)
    for _ in range(5):
        p.publish("t", qos=1)
    msgs = c.publishes()
    assert len(msgs) == 3
    info = h.broker.sessions_info()[0]
    assert (info.inflight, info.queued) == (3, 2)
    for m in msgs:
        c.ack(m)
    assert len(c.publishes()) == 2


def test_qos0_is_not_held_back_by_a_full_window() -> None:
    h = Harness(settings(max_inflight_out=1))
    c = h.connect("c", V311)
    c.subscribe("t", qos=2)
    p = h.connect("p", V311)
    p.publish("t", b"q1", qos=1)
    p.publish("t", b"q1b", qos=1)
    p.publish("t", b"q0", qos=0)
    assert [m.payload for m in c.publishes()] == [b"q1", b"q0"]


def test_packet_ids_skip_ids_in_use() -> None:
    h = Harness(settings(max_inflight_out=5))
    c = h.connect("c", V311)
    c.subscribe("t", qos=1)
    p = h.connect("p", V311)
    for _ in range(3):
        p.publish("t", qos=1)
    msgs = c.publishes()
    assert [m.packet_id for m in msgs] == [1, 2, 3]
    c.ack(msgs[1])
    # Force the counter around: ids 1 and 3 are still in flight.
    session = h.broker.sessions["c"]
    session.next_packet_id = 65535
    for _ in range(3):
        p.publish("t", qos=1)
    assert [m.packet_id for m in c.publishes()] == [65535, 2, 4]


def test_qos2_outbound_flow() -> None:
    h = Harness()
    c = h.connect("c", V5, clean=False, expiry=100)
    c.subscribe("t", qos=2)
    p = h.connect("p", V5)
    p.publish("t", qos=2)
    m = c.publishes()[0]
    entry = next(iter(h.store.queue.values()))
    assert entry.state is EntryState.SENT and entry.packet_id == m.packet_id
    assert c.send(PubRec(m.packet_id)) == [PubRel(m.packet_id)]  # type: ignore[arg-type]
    assert next(iter(h.store.queue.values())).state is EntryState.RELEASED
    assert c.send(PubRec(m.packet_id)) == [PubRel(m.packet_id)]  # type: ignore[arg-type]
    assert c.send(PubComp(m.packet_id)) == []  # type: ignore[arg-type]
    assert h.store.queue == {} and h.store.messages == {}


def test_pubrec_error_ends_the_exchange() -> None:
    h = Harness()
    c = h.connect("c", V5)
    c.subscribe("t", qos=2)
    h.connect("p", V5).publish("t", qos=2)
    m = c.publishes()[0]
    assert c.send(PubRec(m.packet_id, 0x80)) == []  # type: ignore[arg-type]
    assert h.broker.sessions_info()[0].inflight == 0


@pytest.mark.parametrize(("version", "code"), [(V311, 0), (V5, 0x92)])
def test_unknown_acks_are_tolerated(version: int, code: int) -> None:
    h = Harness()
    c = h.connect("c", version)
    assert c.send(PubAck(5)) == []
    assert c.send(PubComp(5)) == []
    assert c.send(PubRec(5)) == [PubRel(5, code)]
    assert not c.closed


@pytest.mark.parametrize("version", [V311, V5])
def test_redelivery_on_reconnect_with_dup_and_same_ids(version: int) -> None:
    h = Harness()
    expiry = 100 if version == V5 else None
    c = h.connect("c", version, clean=False, expiry=expiry)
    c.subscribe("TopicA/#", qos=2)
    c.publish("TopicA/B", b"one", qos=1)
    c.publish("TopicA/C", b"two", qos=2)
    c.send(PubRel(2))
    sent = c.publishes()
    assert [m.payload for m in sent] == [b"one", b"two"]
    # The client does not acknowledge, then goes away.
    c.disconnect()
    c2 = h.connect("c", version, clean=False, expiry=expiry)
    again = c2.publishes()
    assert [(m.payload, m.dup, m.packet_id) for m in again] == [
        (b"one", True, sent[0].packet_id),
        (b"two", True, sent[1].packet_id),
    ]
    for m in again:
        c2.ack(m)
    assert h.store.queue == {}


def test_resume_resends_pubrel_then_continues_queue_in_order() -> None:
    h = Harness(settings(max_inflight_out=2))
    c = h.connect("c", V5, clean=False, expiry=100)
    c.subscribe("t", qos=2)
    p = h.connect("p", V5)
    for i in range(4):
        p.publish("t", f"m{i}".encode(), qos=2)
        p.send(PubRel(i + 1))
    first = c.publishes()
    assert [m.payload for m in first] == [b"m0", b"m1"]
    c.send(PubRec(first[0].packet_id))  # type: ignore[arg-type]
    c.lose()
    c2 = h.connect("c", V5, clean=False, expiry=100)
    got = c2.take()
    assert got[0] == PubRel(first[0].packet_id)  # type: ignore[arg-type]
    assert isinstance(got[1], Publish) and got[1].payload == b"m1" and got[1].dup
    assert len(got) == 2  # window full: m2, m3 wait
    nxt = only(c2.send(PubComp(first[0].packet_id)), Publish)  # type: ignore[arg-type]
    assert [m.payload for m in nxt] == [b"m2"]
    assert not nxt[0].dup


@pytest.mark.parametrize("version", [V311, V5])
def test_offline_queue_qos1_2_not_qos0(version: int) -> None:
    h = Harness()
    expiry = 99999 if version == V5 else None
    a = h.connect("a", version, clean=False, expiry=expiry)
    a.subscribe("+/+", qos=2)
    a.disconnect()
    b = h.connect("b", version)
    b.publish("TopicA/B", b"qos 0", qos=0)
    b.publish("Topic/C", b"qos 1", qos=1)
    b.publish("TopicA/C", b"qos 2", qos=2)
    b.send(PubRel(2))
    a2 = h.connect("a", version, clean=False, expiry=expiry)
    msgs = a2.publishes()
    assert [(m.payload, m.qos) for m in msgs] == [(b"qos 1", 1), (b"qos 2", 2)]
    assert h.broker.stats.dropped_qos0_offline == 1


def test_queue_qos0_when_configured() -> None:
    h = Harness(settings(default_queue=QueueLimits(queue_qos0=True)))
    a = h.connect("a", V311, clean=False)
    a.subscribe("t", qos=1)
    a.disconnect()
    h.connect("b", V311).publish("t", b"zero", qos=0)
    assert len(h.store.queue) == 1
    a2 = h.connect("a", V311, clean=False)
    msgs = a2.publishes()
    assert [(m.payload, m.qos) for m in msgs] == [(b"zero", 0)]
    assert h.store.queue == {} and h.store.messages == {}


def test_drop_oldest(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(settings(default_queue=QueueLimits(max_messages=5)))
    a = h.connect("a", V311, clean=False)
    a.subscribe("q", qos=1)
    a.disconnect()
    p = h.connect("p", V311)
    with caplog.at_level(logging.WARNING, logger="gateway.broker"):
        for i in range(12):
            assert p.publish("q", str(i).encode(), qos=1)[0].reason_code == 0
    assert h.broker.stats.dropped_queue_full == 7
    assert any("queue_full" in r.getMessage() for r in caplog.records)
    assert len(caplog.records) == 1  # rate-limited
    a2 = h.connect("a", V311, clean=False)
    assert [m.payload for m in a2.publishes()] == [str(i).encode() for i in range(7, 12)]


def test_drop_oldest_never_drops_inflight() -> None:
    h = Harness(settings(max_inflight_out=2, default_queue=QueueLimits(max_messages=2)))
    a = h.connect("a", V311, clean=False)
    a.subscribe("q", qos=1)
    p = h.connect("p", V311)
    for i in range(6):
        p.publish("q", str(i).encode(), qos=1)
    inflight = a.publishes()
    assert [m.payload for m in inflight] == [b"0", b"1"]
    for m in inflight:
        a.ack(m)
    assert [m.payload for m in a.publishes()] == [b"4", b"5"]


def test_reject_new_tells_v5_publisher() -> None:
    h = Harness(settings(default_queue=QueueLimits(max_messages=3, overflow=Overflow.REJECT_NEW)))
    a = h.connect("a", V5, clean=False, expiry=600)
    a.subscribe("q", qos=1)
    a.disconnect()
    p5 = h.connect("p5", V5)
    codes = [p5.publish("q", str(i).encode(), qos=1)[0].reason_code for i in range(5)]
    assert codes == [0, 0, 0, 0x97, 0x97]
    p3 = h.connect("p3", V311)
    assert p3.publish("q", b"x", qos=1) == [PubAck(1)]
    assert p5.publish("q", b"x", qos=2)[0].reason_code == 0x97
    assert h.broker.stats.dropped_queue_full == 4
    a2 = h.connect("a", V5, clean=False, expiry=600)
    assert [m.payload for m in a2.publishes()] == [b"0", b"1", b"2"]


def test_byte_limit() -> None:
    h = Harness(settings(default_queue=QueueLimits(max_messages=0, max_bytes=10)))
    a = h.connect("a", V311, clean=False)
    a.subscribe("q", qos=1)
    a.disconnect()
    p = h.connect("p", V311)
    for payload in (b"aaaa", b"bbbb", b"cccc", b"x" * 11):
        p.publish("q", payload, qos=1)
    info = h.broker.sessions_info()[0]
    assert info.queued_bytes == 8
    assert h.broker.stats.dropped_queue_full == 2  # "aaaa" to make room, the 11-byte one
    a2 = h.connect("a", V311, clean=False)
    assert [m.payload for m in a2.publishes()] == [b"bbbb", b"cccc"]


def test_queue_rules_per_client_id() -> None:
    rule = QueueRule("dev-*", QueueLimits(max_messages=1))
    h = Harness(settings(queue_rules=(rule,)))
    for cid in ("dev-1", "other"):
        c = h.connect(cid, V311, clean=False)
        c.subscribe("q", qos=1)
        c.disconnect()
    p = h.connect("p", V311)
    for _ in range(3):
        p.publish("q", qos=1)
    queued = {i.client_id: i.queued for i in h.broker.sessions_info()}
    assert queued["dev-1"] == 1 and queued["other"] == 3


def test_online_session_with_full_window_obeys_limits() -> None:
    h = Harness(settings(max_inflight_out=1, default_queue=QueueLimits(max_messages=2)))
    a = h.connect("a", V311)
    a.subscribe("q", qos=1)
    p = h.connect("p", V311)
    for i in range(5):
        p.publish("q", str(i).encode(), qos=1)
    assert h.broker.stats.dropped_queue_full == 2
    m = a.publishes()[0]
    a.ack(m)
    m = a.publishes()[0]
    a.ack(m)
    assert [x.payload for x in a.publishes()] == [b"4"]


def test_message_expiry_while_queued() -> None:
    h = Harness()
    b = h.connect("b", V5, clean=False, expiry=99999)
    b.subscribe("t", qos=2)
    b.disconnect()
    a = h.connect("a", V5)
    a.publish("t", b"expire1", qos=1, properties=props(message_expiry_interval=1))
    a.publish("t", b"expire2", qos=2, properties=props(message_expiry_interval=1))
    a.publish("t", b"keep1", qos=1, properties=props(message_expiry_interval=6))
    a.publish("t", b"keep2", qos=2, properties=props(message_expiry_interval=6))
    h.now += 3  # no tick: expiry is also checked when sending
    b2 = h.connect("b", V5, clean=False)
    msgs = b2.publishes()
    assert [m.payload for m in msgs] == [b"keep1", b"keep2"]
    assert [m.properties.message_expiry_interval for m in msgs] == [3, 3]
    assert h.broker.stats.dropped_expired == 2


def test_message_expiry_tick_removes_durable_entries() -> None:
    h = Harness()
    b = h.connect("b", V5, clean=False, expiry=99999)
    b.subscribe("t", qos=1)
    b.disconnect()
    h.connect("a", V5).publish("t", qos=1, properties=props(message_expiry_interval=5))
    assert len(h.store.queue) == 1
    n = len(h.store.ops)
    h.advance(4)
    assert len(h.store.queue) == 1
    h.advance(2)
    assert h.store.queue == {} and h.store.messages == {}
    kinds = {type(op) for op in h.store.ops[n:]}
    assert kinds == {DeleteQueueEntry, DeleteMessage}


def test_expiry_interval_forwarded_unchanged_when_delivered_at_once() -> None:
    h = Harness()
    s = h.connect("s", V5)
    s.subscribe("t", qos=1)
    h.connect("p", V5).publish("t", qos=1, properties=props(message_expiry_interval=600))
    assert s.publishes()[0].properties.message_expiry_interval == 600


def test_message_larger_than_client_maximum_is_discarded() -> None:
    h = Harness()
    c = h.connect("c", V5, properties=props(maximum_packet_size=64))
    c.subscribe("client_test5/TopicA", qos=2)
    p = h.connect("p", V5)
    p.publish("client_test5/TopicA", b"." * 32, qos=0)
    p.publish("client_test5/TopicA", b"." * 64, qos=1)
    p.publish("client_test5/TopicA", b"." * 64, qos=0)
    msgs = c.publishes()
    assert [len(m.payload) for m in msgs] == [32]
    assert h.broker.stats.dropped_too_large == 2
    assert h.broker.sessions_info()[0].inflight == 0


def test_too_large_queued_message_discarded_on_resume() -> None:
    h = Harness()
    c = h.connect("c", V5, clean=False, expiry=100)
    c.subscribe("t", qos=1)
    c.disconnect()
    p = h.connect("p", V5)
    p.publish("t", b"." * 100, qos=1)
    p.publish("t", b"small", qos=1)
    c2 = h.connect("c", V5, clean=False, expiry=100, properties=props(maximum_packet_size=50))
    assert [m.payload for m in c2.publishes()] == [b"small"]
    assert len(h.store.queue) == 1  # only "small", in flight


def test_publish_size_matches_simple_cases() -> None:
    # Fixed header (2) + topic length (2) + topic (1) + payload (3).
    assert publish_size(Publish("t", b"abc"), 4) == 8
    # + packet id (2) + empty properties (1)
    assert publish_size(Publish("t", b"abc", qos=1, packet_id=1), 5) == 11
    p = Publish(
        "t", b"", properties=props(message_expiry_interval=5, user_properties=(("a", "b"),))
    )
    assert publish_size(p, 5) == 2 + 2 + 1 + 1 + 5 + 7


def test_durable_ops_for_a_persistent_online_subscriber() -> None:
    h = Harness()
    c = h.connect("c", V311, clean=False)
    c.subscribe("t", qos=1)
    p = h.connect("p", V311)
    p.publish("t", qos=1)
    store_ops, actions = h.batches[-1]
    assert [type(op).__name__ for op in store_ops] == ["PutMessage", "PutQueueEntry"]
    assert isinstance(store_ops[1], PutQueueEntry)
    assert store_ops[1].entry.state is EntryState.SENT
    # The PUBACK to the publisher is in the same batch: it is sent after the commit.
    assert any(getattr(a, "packet", None) == PubAck(1) for a in actions)
    m = c.publishes()[0]
    c.ack(m)
    assert h.store.queue == {} and h.store.messages == {}


def test_message_stored_once_for_many_sessions() -> None:
    h = Harness()
    for cid in ("a", "b", "c"):
        c = h.connect(cid, V311, clean=False)
        c.subscribe("t", qos=1)
        c.disconnect()
    h.connect("p", V311).publish("t", qos=1)
    store_ops, _ = h.batches[-1]
    names = [type(op).__name__ for op in store_ops]
    assert names.count("PutMessage") == 1 and names.count("PutQueueEntry") == 3
    for cid in ("a", "b"):
        c = h.connect(cid, V311, clean=False)
        c.ack(c.publishes()[0])
    assert len(h.store.messages) == 1
    c = h.connect("c", V311, clean=False)
    c.ack(c.publishes()[0])
    assert h.store.messages == {}


def test_clean_subscriber_costs_no_store_ops() -> None:
    h = Harness()
    c = h.connect("c", V311)
    c.subscribe("t", qos=2)
    p = h.connect("p", V311)
    p.publish("t", qos=1)
    p.publish("t", qos=2)
    for m in c.publishes():
        c.ack(m)
    assert h.store.ops == []


def test_takeover_with_session_continuing_resends_inflight() -> None:
    h = Harness()
    c = h.connect("c", V5, clean=False, expiry=60)  # taken over while live
    c.subscribe("t", qos=1)
    h.connect("p", V5).publish("t", b"m", qos=1)
    m = c.publishes()[0]
    c2 = h.connect("c", V5, clean=False)
    again = c2.publishes()
    assert [(x.payload, x.dup, x.packet_id) for x in again] == [(b"m", True, m.packet_id)]
    assert only(c.all(), Publish) == [m]
