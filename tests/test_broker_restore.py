"""Durability: the store ops the broker emits are enough to rebuild it after a crash."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from test_broker_support import V5, V311, Client, Harness, only, props

from gateway.broker.records import EntryState
from gateway.broker.settings import BrokerSettings
from gateway.mqtt.packets import ConnAck, PubAck, PubComp, Publish, PubRec, PubRel, Will


def crash(h: Harness, later: float = 10.0) -> Harness:
    """A new broker restored from what the old one made durable (nothing else survives)."""
    new = Harness(h.settings, now=h.now + later, store=h.store)
    new.next_conn = h.next_conn + 1000
    new.restore()
    return new


def test_everything_durable_survives_a_crash() -> None:
    h = Harness(BrokerSettings(max_inflight_out=2, sys_interval=0))
    # A persistent subscriber with messages in every state.
    sub = h.connect("sub", V5, clean=False, expiry=3600)
    sub.subscribe("d/#", qos=2)
    sub.subscribe("$share/g/jobs", qos=1)
    pub = h.connect("pub", V5)
    for i in range(5):
        pub.publish(f"d/{i}", f"m{i}".encode(), qos=2)
        pub.send(PubRel(pub._pid))
    first = sub.publishes()
    assert [m.payload for m in first] == [b"m0", b"m1"]
    sub.send(PubRec(first[0].packet_id))  # type: ignore[arg-type]  # m0 RELEASED, m1 SENT
    pub.publish("d/retained", b"kept", qos=1, retain=True)
    pub.publish("jobs", b"job", qos=1)
    # A persistent publisher in the middle of an inbound QoS 2 exchange.
    qp = h.connect("qp", V311, clean=False)
    assert qp.publish("d/q2", b"exactly once", qos=2, packet_id=77) == [PubRec(77)]
    # A persistent client with a will, connected at the crash.
    h.connect("dev", V5, clean=False, expiry=3600, will=Will("status/dev", b"offline", 1, True))
    states = sorted(e.state.value for e in h.store.queue.values())
    assert states.count("sent") == 1 and states.count("released") == 1

    h2 = crash(h)
    info = {i.client_id: i for i in h2.broker.sessions_info()}
    assert set(info) == {"sub", "qp", "dev"}
    assert not any(i.connected for i in info.values())

    # The retained message and the will (due at once: no will delay) after the first tick.
    watcher = h2.connect("w", V311)
    watcher.subscribe("status/#", "d/retained", qos=1)
    assert [m.payload for m in watcher.publishes()] == [b"kept"]
    h2.advance(1)
    assert [m.payload for m in watcher.publishes()] == [b"offline"]

    # The subscriber resumes: PUBREL for m0, DUP m1 with its packet id, then the queue.
    s2 = h2.connect("sub", V5, clean=False, expiry=3600)
    assert only(s2.all(), ConnAck)[0].session_present
    got = s2.take()
    assert got[0] == PubRel(first[0].packet_id)  # type: ignore[arg-type]
    assert isinstance(got[1], Publish)
    assert (got[1].payload, got[1].dup, got[1].packet_id) == (b"m1", True, first[1].packet_id)
    received = [got[1].payload]
    s2.send(PubComp(first[0].packet_id))  # type: ignore[arg-type]
    pending = [got[1], *s2.publishes()[1:]]
    while pending:
        m = pending.pop(0)
        if m.payload not in received:
            received.append(m.payload)
        s2.ack(m)
        pending.extend(s2.publishes())
    assert received == [b"m1", b"m2", b"m3", b"m4", b"kept", b"job", b"exactly once"]
    assert h2.store.queue == {}

    # The QoS 2 publisher resends: no second delivery, and PUBREL completes it.
    q2 = h2.connect("qp", V311, clean=False)
    assert q2.publish("d/q2", b"exactly once", qos=2, packet_id=77, dup=True) == [PubRec(77)]
    assert q2.send(PubRel(77)) == [PubComp(77)]
    assert s2.publishes() == []
    assert h2.store.inbound == set()

    # New messages get fresh ids (the fake store refuses a second PutMessage of one id).
    s2.disconnect()
    h2.connect("p2", V311).publish("d/new", b"new", qos=1)
    assert len(h2.store.messages) == 1


def test_will_delay_counts_from_restore_for_sessions_connected_at_crash() -> None:
    h = Harness()
    will = Will("status/dev", b"offline", properties=props(will_delay_interval=30))
    h.connect("dev", V5, clean=False, expiry=3600, will=will)
    h2 = crash(h)
    w = h2.connect("w", V5)
    w.subscribe("status/#")
    h2.advance(29)
    assert w.publishes() == []
    h2.advance(1)
    assert [m.payload for m in w.publishes()] == [b"offline"]


def test_offline_session_expiry_survives_restart() -> None:
    h = Harness()
    c = h.connect("p", V5, clean=False, expiry=100)
    c.subscribe("t", qos=1)
    c.disconnect()
    h2 = crash(h, later=50)
    h2.advance(49)
    assert h2.broker.session_exists("p")
    h2.advance(2)
    assert not h2.broker.session_exists("p")
    assert h2.store.sessions == {}


def test_restore_drops_orphans() -> None:
    from gateway.broker.records import Message, QueueEntry, Snapshot

    snap = Snapshot(
        messages=[Message(5, "t", b"x", 1, False), Message(6, "t", b"y", 1, False)],
        queue=[QueueEntry("ghost", 1, 5, 1)],
    )
    h = Harness()
    h.broker.restore(snap, h.now)
    eff = h.broker.take_effects()
    names = sorted(type(op).__name__ for op in eff.store)
    assert names == ["DeleteMessage", "DeleteMessage", "DeleteQueueEntry"]
    assert eff.actions == []


def test_restored_inflight_keeps_packet_ids_and_counter() -> None:
    h = Harness()
    c = h.connect("c", V311, clean=False)
    c.subscribe("t", qos=1)
    p = h.connect("p", V311)
    for _ in range(3):
        p.publish("t", qos=1)
    ids = [m.packet_id for m in c.publishes()]
    c.lose()
    h2 = crash(h)
    c2 = h2.connect("c", V311, clean=False)
    again = c2.publishes()
    assert [m.packet_id for m in again] == ids and all(m.dup for m in again)
    h2.connect("p", V311).publish("t", qos=1)
    new = c2.publishes()
    assert new[0].packet_id not in ids


def test_restore_gives_each_session_its_stored_queue_policy() -> None:
    from gateway.broker.records import (
        Message,
        PutSession,
        QueueEntry,
        QueuePolicy,
        SessionRecord,
        Snapshot,
        SubscriptionRecord,
    )
    from gateway.broker.settings import Overflow, QueueLimits

    policy = QueuePolicy(
        max_messages=2,
        overflow=Overflow.REJECT_NEW,
        coalesce=True,
        default_expiry=30,
        notify_topic="n/dev",
        pending_topic="p/dev",
    )
    snap = Snapshot(
        sessions=[
            # Connected when the broker stopped: its record is written again, policy and all.
            SessionRecord("dev", 3600, 5, queue_policy=policy),
            SessionRecord("plain", 3600, 5, disconnected_at=999_000.0),
        ],
        subscriptions=[SubscriptionRecord("dev", "set/dev", 1)],
        messages=[Message(5, "set/dev", b'{"a": 1}', 1, False)],
        queue=[QueueEntry("dev", 1, 5, 1)],
    )
    h = Harness()
    h.broker.restore(snap, h.now)
    eff = h.broker.take_effects()
    assert [op.record.queue_policy for op in eff.store if isinstance(op, PutSession)] == [policy]
    dev, plain = h.broker.sessions["dev"], h.broker.sessions["plain"]
    assert dev.policy == policy and plain.policy is None
    assert dev.limits == QueueLimits(
        max_messages=2, overflow=Overflow.REJECT_NEW, coalesce=True, default_expiry=30
    )
    assert (dev.notify_topic, dev.pending_topic) == ("n/dev", "p/dev")
    assert plain.limits == h.settings.default_queue
    assert (plain.notify_topic, plain.pending_topic) == (None, None)


# --- randomised: what was acknowledged is delivered after any crash ---------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_acknowledged_messages_survive_random_crashes(seed: int) -> None:
    rnd = random.Random(seed)
    h = Harness(BrokerSettings(max_inflight_out=rnd.randint(1, 4), sys_interval=0))
    subs = ["s1", "s2"]
    for cid in subs:
        c = h.connect(cid, V5, clean=False, expiry=3600)
        c.subscribe("cmd/#", qos=rnd.choice([1, 2]))
        c.lose()
    acked: list[bytes] = []  # QoS >= 1 publishes the publisher was told are safe
    received: dict[str, list[bytes]] = {cid: [] for cid in subs}
    online: dict[str, Client] = {}
    n = 0
    for _ in range(rnd.randint(5, 40)):
        action = rnd.random()
        if action < 0.45:
            n += 1
            payload = f"{n}".encode()
            qos = rnd.choice([1, 2])
            p = h.connect(f"pub{n}", rnd.choice([V311, V5]))
            got = p.publish("cmd/x", payload, qos=qos)
            if qos == 2:
                got = [x for x in got if isinstance(x, PubRec)]
                p.send(PubRel(got[0].packet_id))
            if got and got[0].reason_code < 0x80:
                acked.append(payload)
            p.disconnect()
        elif action < 0.7:
            cid = rnd.choice(subs)
            if cid not in online:
                online[cid] = h.connect(cid, V5, clean=False, expiry=3600)
        elif action < 0.85:
            # A connected subscriber acknowledges some of what it received (or not).
            for cid, c in list(online.items()):
                for m in c.publishes():
                    received[cid].append(m.payload)
                    if rnd.random() < 0.7:
                        c.ack(m)
                if rnd.random() < 0.3:
                    c.lose()
                    del online[cid]
        else:
            for cid, c in online.items():
                received[cid].extend(m.payload for m in c.publishes())
            h = crash(h, later=1)
            online.clear()
    # Final: everyone reconnects and drains.
    for cid in subs:
        if cid in online:
            c = online[cid]
            received[cid].extend(m.payload for m in c.publishes())
            c.lose()
        c = h.connect(cid, V5, clean=False, expiry=3600)
        pending = c.publishes()
        while pending:
            m = pending.pop(0)
            received[cid].append(m.payload)
            c.ack(m)
            pending.extend(c.publishes())
        assert set(acked) <= set(received[cid]), (cid, acked, received[cid])
    assert h.store.queue == {}
    # Queue entries were never left in an inconsistent state along the way.
    for e in h.store.queue.values():
        assert e.state in EntryState


def test_puback_after_commit_ordering() -> None:
    """A PUBACK is emitted in the same batch as the ops that make its message durable."""
    h = Harness()
    c = h.connect("c", V311, clean=False)
    c.subscribe("t", qos=1)
    c.lose()
    p = h.connect("p", V311)
    p.publish("t", qos=1)
    ops, actions = h.batches[-1]
    assert [type(op).__name__ for op in ops] == ["PutMessage", "PutQueueEntry"]
    assert [getattr(a, "packet", None) for a in actions] == [PubAck(1)]
