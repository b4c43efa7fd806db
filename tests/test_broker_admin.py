"""The broker's admin primitives (kick, delete_session, queue_entries, cancel_queued) and what
pollers read (versions, events_since, stats_snapshot), on the pure core."""

from __future__ import annotations

import json

from test_broker_support import V5, V311, Client, Harness, props

from gateway.auth.acl import BridgeGuard
from gateway.broker.effects import Identity
from gateway.broker.settings import BrokerSettings, QueueLimits
from gateway.mqtt.packets import Disconnect, PubAck, Publish, SubAck, Will

ADMIN = Identity(ok=True, is_admin=True)
POLICY = (
    ("queue-notify-topic", "gw/thermo/result"),
    ("queue-pending-topic", "gw/thermo/pending"),
)


def harness(**settings: object) -> Harness:
    return Harness(BrokerSettings(sys_interval=0, **settings))  # type: ignore[arg-type]


def topics(c: Client) -> list[str]:
    return [p.topic for p in c.publishes()]


# --- kick ------------------------------------------------------------------------------------


def test_kick_v5_disconnects_with_0x98_publishes_the_will_and_keeps_the_session() -> None:
    h = harness()
    watcher = h.connect("watcher", V5)
    watcher.subscribe("wills/#", qos=1)
    victim = h.connect("victim", V5, clean=False, expiry=600, will=Will("wills/victim", b"gone"))
    victim.subscribe("news", qos=1)
    assert h.broker.kick("victim", h.now)
    h.flush()
    assert victim.take() == [Disconnect(0x98)]
    assert victim.closed
    assert [(p.topic, p.payload) for p in watcher.publishes()] == [("wills/victim", b"gone")]
    info = {i.client_id: i for i in h.broker.sessions_info()}["victim"]
    assert not info.connected and info.subscriptions == ("news",)
    assert "victim" in h.store.sessions
    # The session keeps queueing as after a network drop.
    h.connect("pub", V311).publish("news", b"n", qos=1)
    assert h.broker.queue_entries("victim") is not None
    assert len(h.broker.queue_entries("victim") or []) == 1
    assert not h.broker.kick("victim", h.now)  # not connected any more
    assert not h.broker.kick("nobody", h.now)
    kinds = [e["type"] for e in h.broker.events_since(0)[1] if e["client_id"] == "victim"]
    assert kinds == ["connect", "kick"]


def test_kick_v311_closes_without_disconnect_and_a_clean_session_ends() -> None:
    h = harness()
    c = h.connect("c311", V311)
    assert h.broker.kick("c311", h.now)
    h.flush()
    assert c.take() == [] and c.closed
    assert not h.broker.session_exists("c311")


# --- delete_session --------------------------------------------------------------------------


def test_delete_offline_session_removes_it_durably() -> None:
    h = harness()
    sleeper = h.connect("sleeper", V5, clean=False, expiry=3600)
    sleeper.subscribe("news", "more/#", qos=1)
    sleeper.disconnect()
    pub = h.connect("pub", V311)
    pub.publish("news", b"1", qos=1)
    pub.publish("more/x", b"2", qos=2)
    assert len(h.store.queue) == 2 and h.store.messages
    assert h.broker.delete_session("sleeper", h.now)
    h.flush()
    assert "sleeper" not in {i.client_id for i in h.broker.sessions_info()}
    assert "sleeper" not in h.store.sessions
    assert not h.store.queue and not h.store.messages and not h.store.subscriptions
    h.store.check()
    # Nothing is queued for it any more, and it does not come back after a restart.
    pub.publish("news", b"3", qos=1)
    assert h.broker.queue_entries("sleeper") is None
    restarted = Harness(h.settings, store=h.store)
    restarted.restore()
    assert not restarted.broker.session_exists("sleeper")
    assert not h.broker.delete_session("sleeper", h.now)


def test_delete_connected_session_disconnects_without_the_will() -> None:
    h = harness()
    watcher = h.connect("watcher", V5)
    watcher.subscribe("wills/#")
    c = h.connect("doomed", V5, clean=False, expiry=600, will=Will("wills/doomed", b"x"))
    assert h.broker.delete_session("doomed", h.now)
    h.flush()
    assert c.take() == [Disconnect(0x98)] and c.closed
    assert watcher.publishes() == []
    assert not h.broker.session_exists("doomed") and "doomed" not in h.store.sessions
    # A late connection_lost from the shell is harmless.
    h.broker.connection_lost(c.conn_id, h.now)
    h.flush()
    assert watcher.publishes() == []
    events = h.broker.events_since(0)[1]
    assert events[-1]["type"] == "session_deleted" and events[-1]["client_id"] == "doomed"


def test_delete_session_with_a_pending_list_publishes_it_empty() -> None:
    h = harness()
    d = h.connect(
        "dev", V5, clean=False, expiry=3600, properties=props(user_properties=POLICY),
        identity=ADMIN,
    )  # fmt: skip
    d.subscribe("gw/thermo/set", qos=1)
    d.disconnect()
    h.connect("app", V311).publish("gw/thermo/set", b'{"t": 20}', qos=1)
    retained = {m.topic: m for m in h.broker.retained_messages()}
    assert len(json.loads(retained["gw/thermo/pending"].payload)) == 1
    assert h.broker.delete_session("dev", h.now)
    h.flush()
    assert json.loads(h.store.retained["gw/thermo/pending"].payload) == []


# --- queue_entries / cancel_queued ----------------------------------------------------------


def device_with_three_commands(h: Harness) -> tuple[Client, Client, list[int]]:
    """A policy session whose window holds one command: one in flight, two queued."""
    watcher = h.connect("watcher", V5)
    watcher.subscribe("gw/thermo/result", "gw/thermo/pending", qos=0)
    d = h.connect(
        "dev", V5, clean=False, expiry=3600, properties=props(user_properties=POLICY),
        identity=ADMIN,
    )  # fmt: skip
    d.subscribe("gw/thermo/set", qos=1)
    app = h.connect("app", V311)
    for t in (20, 21, 22):
        app.publish("gw/thermo/set", json.dumps({"t": t}).encode(), qos=1)
    entries = h.broker.queue_entries("dev")
    assert entries is not None
    assert [(json.loads(m.payload), flying) for _, m, flying in entries] == [
        ({"t": 20}, True),
        ({"t": 21}, False),
        ({"t": 22}, False),
    ]
    seqs = [seq for seq, _, _ in entries]
    assert seqs == sorted(seqs)
    watcher.publishes()
    return d, watcher, seqs


def test_cancel_queued_skips_in_flight_and_unknown_reports_and_is_durable() -> None:
    h = harness(max_inflight_out=1)
    d, watcher, (s1, s2, s3) = device_with_three_commands(h)
    assert h.broker.cancel_queued("dev", [s1, s2, 999_999], h.now) == [s2]
    h.flush()
    got = watcher.publishes()
    notices = [json.loads(p.payload) for p in got if p.topic == "gw/thermo/result"]
    assert len(notices) == 1
    assert notices[0]["result"] == "cancelled" and notices[0]["command"] == {"t": 21}
    assert notices[0]["id"] == s2 and notices[0]["ts"] == h.now
    pending = [json.loads(p.payload) for p in got if p.topic == "gw/thermo/pending"]
    assert [(e["id"], e["state"]) for e in pending[-1]] == [(s1, "in_flight"), (s3, "queued")]
    assert ("dev", s2) not in h.store.queue and ("dev", s3) in h.store.queue
    h.store.check()
    # Restarted from the store: the cancelled command stays cancelled.
    restarted = Harness(h.settings, store=h.store)
    restarted.restore()
    assert [seq for seq, _, _ in restarted.broker.queue_entries("dev") or []] == [s1, s3]
    # The device gets the in-flight one and then only the one that was not cancelled.
    d.ack(d.publishes()[0])
    assert [json.loads(p.payload) for p in d.publishes()] == [{"t": 22}]


def test_cancel_all_queued() -> None:
    h = harness(max_inflight_out=1)
    _, watcher, (s1, s2, s3) = device_with_three_commands(h)
    assert h.broker.cancel_queued("dev", None, h.now) == [s2, s3]
    h.flush()
    results = [json.loads(p.payload) for p in watcher.publishes() if p.topic == "gw/thermo/result"]
    assert [(n["result"], n["id"]) for n in results] == [("cancelled", s2), ("cancelled", s3)]
    assert [seq for seq, _, _ in h.broker.queue_entries("dev") or []] == [s1]
    assert h.broker.cancel_queued("dev", None, h.now) == []
    assert h.broker.cancel_queued("nobody", None, h.now) == []
    assert h.broker.queue_entries("nobody") is None


def test_cancel_without_a_policy_sends_no_notice() -> None:
    h = harness()
    s = h.connect("plain", V5, clean=False, expiry=600)
    s.subscribe("x", qos=1)
    s.disconnect()
    watcher = h.connect("watcher", V5)
    watcher.subscribe("#", qos=1)
    h.connect("pub", V311).publish("x", b"1", qos=1)
    watcher.publishes()
    (seq,) = [seq for seq, _, _ in h.broker.queue_entries("plain") or []]
    assert h.broker.cancel_queued("plain", [seq], h.now) == [seq]
    h.flush()
    assert watcher.publishes() == []
    assert not h.store.queue and not h.store.messages


# --- versions --------------------------------------------------------------------------------


def test_versions_increase_with_every_change() -> None:
    h = harness()
    seen = [h.broker.versions()]

    def changed(sessions: bool, queues: bool) -> None:
        now = h.broker.versions()
        before = seen[-1]
        assert (now[0] > before[0]) == sessions, (before, now)
        assert (now[1] > before[1]) == queues, (before, now)
        seen.append(now)

    c = h.connect("c", V5, clean=False, expiry=60)
    changed(True, False)
    c.subscribe("t", qos=1)
    changed(True, False)
    c.unsubscribe("t")
    changed(True, False)
    c.subscribe("t", qos=1)
    c.disconnect()
    changed(True, False)
    pub = h.connect("pub", V311)
    changed(True, False)
    pub.publish("nobody/listens", b"x", qos=1)
    changed(False, False)
    pub.publish("t", b"x", qos=1)  # queued for the offline session
    changed(False, True)
    c = h.connect("c", V5, clean=False, expiry=60)  # resumed: in flight now
    changed(True, True)
    c.ack(c.publishes()[0])
    changed(False, True)
    c.disconnect()
    h.advance(61)  # the session expires
    changed(True, False)
    h.connect("d", V5, clean=False, expiry=60)
    assert h.broker.delete_session("d", h.now)
    changed(True, False)


# --- events ----------------------------------------------------------------------------------


def test_events_are_ordered_typed_and_bounded() -> None:
    h = harness(default_queue=QueueLimits(max_messages=1))
    a = h.connect("a", V5, clean=False, expiry=10)
    a.subscribe("t", qos=1)
    a.disconnect()
    pub = h.connect("pub", V311)
    pub.publish("t", b"1", qos=1)
    pub.publish("t", b"2", qos=1)  # queue full: the oldest is dropped
    pub.lose()
    bad = h.connect("bad", V5)
    bad.send(Publish("a/+", b"x", 0))  # a wildcard in a topic name: protocol error
    h.advance(11)  # "a" expires
    last, events = h.broker.events_since(0)
    assert [e["seq"] for e in events] == list(range(1, last + 1))
    assert [(e["type"], e["client_id"]) for e in events] == [
        ("connect", "a"),
        ("disconnect", "a"),
        ("connect", "pub"),
        ("dropped", "a"),
        ("disconnect", "pub"),
        ("connect", "bad"),
        ("protocol_error", "bad"),
        ("session_expired", "a"),
        ("dropped", "a"),  # what was still queued for it
    ]
    assert all(isinstance(e["ts"], float) and isinstance(e["detail"], str) for e in events)
    assert "queue_full" in str(events[3]["detail"])
    assert h.broker.events_since(last) == (last, [])
    assert [e["seq"] for e in h.broker.events_since(last - 2)[1]] == [last - 1, last]
    # The ring keeps the newest 1000.
    for i in range(600):
        h.connect(f"c{i}", V311).lose()
    last, events = h.broker.events_since(0)
    assert last == 9 + 1200 and len(events) == 1000
    assert [e["seq"] for e in events] == list(range(last - 999, last + 1))
    # A caller cannot change the ring through what it got.
    events[-1]["type"] = "changed"
    assert h.broker.events_since(last - 1)[1][0]["type"] == "disconnect"


# --- stats_snapshot --------------------------------------------------------------------------


def test_stats_snapshot() -> None:
    h = harness()
    s = h.connect("s", V5, clean=False, expiry=60)
    s.subscribe("t", "u", qos=1)
    s.disconnect()
    pub = h.connect("pub", V311)
    pub.publish("t", b"1", qos=1)
    pub.publish("r", b"kept", qos=0, retain=True)
    snap = h.broker.stats_snapshot()
    assert snap["clients_connected"] == 1
    assert snap["sessions"] == 2
    assert snap["subscriptions"] == 2
    assert snap["retained"] == 1
    assert snap["queued"] == 1 and snap["inflight"] == 0
    assert snap["publish_received"] == 2
    assert snap["messages_received"] >= 6 and snap["messages_sent"] >= 4
    sent = snap["messages_sent"]
    pub.publish("r", b"again", qos=1)
    assert h.broker.stats_snapshot()["messages_sent"] == sent + 1  # the PUBACK


# --- the bridge guard in the broker ----------------------------------------------------------


def guarded() -> Harness:
    return Harness(BrokerSettings(sys_interval=0), BridgeGuard("gw"))


def test_non_admin_cannot_publish_to_bridge_topics_nor_read_private_ones() -> None:
    h = guarded()
    admin = h.connect("admin", V5, identity=ADMIN)
    admin.subscribe("gw/bridge/#", qos=1)
    user = h.connect("user", V5)
    acks = user.publish("gw/bridge/request/kick", b"{}", qos=1)
    assert [a for a in acks if isinstance(a, PubAck)] == [PubAck(1, 0x87)]
    user.publish("gw/bridge/state", b"offline", qos=0, retain=True)
    assert admin.publishes() == []
    codes = user.subscribe("gw/bridge/response/#", "gw/bridge/events", "gw/bridge/state", qos=1)
    assert codes == [SubAck(2, (0x87, 0x87, 1))]
    old = h.connect("old", V311)
    assert old.subscribe("$share/g/gw/bridge/updates/sessions") == [SubAck(1, (0x80,))]
    everything = h.connect("everything", V5)
    everything.subscribe("#", qos=1)
    admin.publish("gw/bridge/response/kick", b"{}", qos=1, retain=True)
    admin.publish("gw/bridge/events", b"{}", qos=1)
    admin.publish("gw/bridge/state", b"online", qos=1, retain=True)
    admin.publish("gw/bridgework", b"not ours", qos=1)
    assert topics(everything) == ["gw/bridge/state", "gw/bridgework"]
    assert topics(user) == ["gw/bridge/state"]
    # Retained messages follow the same rule.
    late = h.connect("late", V5)
    late.subscribe("gw/bridge/+/+", "gw/bridge/+", qos=1)
    assert topics(late) == ["gw/bridge/state"]
    assert set(topics(admin)) >= {"gw/bridge/response/kick", "gw/bridge/events"}


def test_a_non_admin_will_on_bridge_topics_is_refused() -> None:
    h = guarded()
    c = h.connect("w", V5, will=Will("gw/bridge/state", b"offline"))
    assert c.closed and c.all()[0].reason_code == 0x87
    ok = h.connect("w2", V5, will=Will("gw/bridge/state", b"x"), identity=ADMIN)
    assert not ok.closed


def test_guard_only_is_asked_about_its_own_topics() -> None:
    class Counting(BridgeGuard):
        calls = 0

        def can_receive(self, username: str | None, client_id: str, topic: str) -> bool:
            Counting.calls += 1
            return super().can_receive(username, client_id, topic)

        def can_publish(self, username: str | None, client_id: str, topic: str) -> bool:
            Counting.calls += 1
            return super().can_publish(username, client_id, topic)

    h = Harness(BrokerSettings(sys_interval=0), Counting("home/gw"))
    c = h.connect("c", V5)
    c.subscribe("#", qos=1)
    c.publish("sensors/t", b"1", qos=1)
    assert Counting.calls == 0 and topics(c) == ["sensors/t"]
    c.publish("home/gw/bridge/events", b"1", qos=1)
    assert Counting.calls == 1  # refused at publish: never routed
    h.broker.set_authorizer(BridgeGuard("gw"))
    c.publish("home/gw/bridge/events", b"1", qos=1)
    assert topics(c) == ["home/gw/bridge/events"]
