"""The empty containers idle sessions and topic-tree nodes share (NO_ITEMS, NO_ENTRIES,
NO_PACKET_IDS): they refuse every addition, and a broker whose clients subscribe, receive,
go away and come back from the store never writes them."""

from __future__ import annotations

import pytest
from test_broker_support import V5, V311, Harness

from gateway.broker.records import Message
from gateway.broker.session import NO_ENTRIES, NO_PACKET_IDS, QEntry
from gateway.broker.settings import BrokerSettings
from gateway.broker.shared_empty import NO_ITEMS


def test_reads_like_an_empty_dict() -> None:
    assert NO_ITEMS == {} and len(NO_ITEMS) == 0 and not NO_ITEMS
    assert NO_ITEMS.get("x") is None and "x" not in NO_ITEMS and list(NO_ITEMS) == []
    assert NO_ITEMS.pop("x", 7) == 7


@pytest.mark.parametrize(
    "write",
    [
        lambda d: d.__setitem__("k", 1),
        lambda d: d.setdefault("k", 1),
        lambda d: d.update(k=1),
        lambda d: d.update({"k": 1}),
        lambda d: d.__ior__({"k": 1}),
    ],
)
def test_refuses_every_write(write: object) -> None:
    with pytest.raises(TypeError, match="shared"):
        write(NO_ITEMS)  # type: ignore[operator]
    assert NO_ITEMS == {}


def test_the_shared_queue_and_packet_ids_refuse_additions() -> None:
    e = QEntry(1, Message(1, "t", b"x", 1, False), 1, False, ())
    for add in (NO_ENTRIES.append, NO_ENTRIES.appendleft, NO_PACKET_IDS.add):
        with pytest.raises(TypeError, match="shared"):
            add(e if add is not NO_PACKET_IDS.add else 1)  # type: ignore[arg-type]
    assert NO_ENTRIES.popleft() is None and len(NO_ENTRIES) == 0 and list(NO_ENTRIES) == []
    NO_PACKET_IDS.discard(1)
    assert 1 not in NO_PACKET_IDS and len(NO_PACKET_IDS) == 0


def _nothing_shared_was_written() -> bool:
    return NO_ITEMS == {} and not NO_ENTRIES and not NO_PACKET_IDS and list(NO_ENTRIES) == []


def test_sessions_get_their_own_dicts_and_leave_the_shared_one_empty() -> None:
    h = Harness(BrokerSettings(max_inflight_out=2, sys_interval=0))
    h.connect("idle", V311)
    session = h.broker.sessions["idle"]
    assert session.subscriptions is NO_ITEMS and session.inflight is NO_ITEMS
    assert session.queue is NO_ENTRIES and session.inbound_qos2 is NO_PACKET_IDS
    a = h.connect("a", V5, clean=False, expiry=3600)
    b = h.connect("b", V311)
    a.subscribe("t/#", qos=1)
    b.subscribe("t/+", qos=2)
    pub = h.connect("pub", V311)
    for i in range(3):
        pub.publish("t/x", f"m{i}".encode(), qos=1)
    assert [m.payload for m in a.publishes()] == [b"m0", b"m1"]  # window of 2
    assert [m.payload for m in b.publishes()] == [b"m0", b"m1"]
    assert set(h.broker.sessions["a"].subscriptions) == {"t/#"}
    assert len(h.broker.sessions["b"].inflight) == 2
    assert session.subscriptions is NO_ITEMS and session.inflight is NO_ITEMS
    assert len(h.broker.sessions["a"].queue) == 1  # m2, behind the window
    # "a" goes away with two in flight and one queued; a restart rebuilds it from the store.
    a.lose()
    new = Harness(h.settings, now=h.now + 10, store=h.store)
    new.next_conn = h.next_conn + 1000
    new.restore()
    restored = new.broker.sessions["a"]
    assert set(restored.subscriptions) == {"t/#"} and len(restored.inflight) == 2
    back = new.connect("a", V5, clean=False, expiry=3600)
    assert [m.payload for m in back.publishes()] == [b"m0", b"m1"]  # resent, then m2 follows
    assert len(restored.queue) == 1
    assert _nothing_shared_was_written()


def test_a_half_received_qos2_message_gets_its_own_packet_ids() -> None:
    h = Harness(BrokerSettings(sys_interval=0))
    pub = h.connect("pub", V311, clean=False)
    pub.publish("t", b"x", qos=2)
    s = h.broker.sessions["pub"]
    assert s.inbound_qos2 is not NO_PACKET_IDS and len(s.inbound_qos2) == 1
    pub.lose()
    new = Harness(h.settings, now=h.now + 10, store=h.store)
    new.restore()
    assert len(new.broker.sessions["pub"].inbound_qos2) == 1  # exactly-once survives
    assert _nothing_shared_was_written()


def test_the_window_holds_when_the_first_send_makes_the_inflight_dict() -> None:
    # pump() once kept s.inflight in a local: NO_ITEMS stayed "empty" while it sent past
    # the window.
    h = Harness(BrokerSettings(max_inflight_out=2, sys_interval=0))
    sub = h.connect("sub", V311, clean=False)
    sub.subscribe("q", qos=1)
    sub.disconnect()
    pub = h.connect("pub", V311)
    for i in range(3):
        pub.publish("q", f"m{i}".encode(), qos=1)
    back = h.connect("sub", V311, clean=False)
    first = back.publishes()
    assert [m.payload for m in first] == [b"m0", b"m1"]
    back.ack(first[0])
    assert [m.payload for m in back.publishes()] == [b"m2"]
    assert _nothing_shared_was_written()
