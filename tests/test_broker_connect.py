"""CONNECT, sessions, takeover, session expiry (MQTT 3.1.1 §3.1-3.2, MQTT 5.0 §3.1-3.2)."""

from __future__ import annotations

from test_broker_support import V5, V311, Client, Harness, only, props

from gateway.broker.effects import Identity
from gateway.broker.records import (
    DeleteSession,
    PutSession,
    PutSubscription,
)
from gateway.broker.settings import BrokerSettings
from gateway.mqtt.packets import ConnAck, Connect, Disconnect, Publish, Will


def connack(c: Client) -> ConnAck:
    acks = only(c.all(), ConnAck)
    assert len(acks) == 1
    ack: ConnAck = acks[0]
    return ack


def test_connack_311_and_keepalive_after_it() -> None:
    h = Harness()
    c = h.connect("a", V311, keep_alive=30)
    ack = connack(c)
    assert (ack.session_present, ack.reason_code) == (False, 0)
    assert h.keep_alive[c.conn_id] == 30
    # SetKeepAlive comes after the CONNACK in the same batch.
    _, actions = h.batches[-1]
    kinds = [type(a).__name__ for a in actions]
    assert kinds == ["Send", "SetKeepAlive"]


def test_protocol_level_3_is_treated_as_311() -> None:
    h = Harness()
    c = h.connect("old", 3)
    assert connack(c).reason_code == 0
    assert c.subscribe("t", qos=1)[0].reason_codes == (1,)


def test_refused_identity_311_maps_code_and_closes() -> None:
    h = Harness()
    c = h.connect("a", V311, identity=Identity(ok=False, reason_code=0x86))
    assert connack(c).reason_code == 4  # bad user name or password
    assert c.closed
    assert not h.broker.session_exists("a")


def test_refused_identity_v5_keeps_reason_code() -> None:
    h = Harness()
    c = h.connect("a", V5, identity=Identity(ok=False, reason_code=0x87))
    assert connack(c).reason_code == 0x87
    assert c.closed
    assert h.broker.stats.connections_refused == 1


def test_empty_client_id_311_persistent_is_rejected() -> None:
    h = Harness()
    c = h.connect("", V311, clean=False)
    assert connack(c).reason_code == 2  # identifier rejected
    assert c.closed


def test_empty_client_id_311_clean_gets_one_silently() -> None:
    h = Harness()
    c = h.connect("", V311, clean=True)
    ack = connack(c)
    assert ack.reason_code == 0 and ack.properties.assigned_client_identifier is None
    assert not c.closed
    assert len(h.broker.sessions_info()) == 1


def test_empty_client_id_v5_is_assigned_even_without_clean_start() -> None:
    h = Harness()
    c1 = h.connect("", V5, clean=False)
    c2 = h.connect("", V5, clean=True)
    a1 = connack(c1).properties.assigned_client_identifier
    a2 = connack(c2).properties.assigned_client_identifier
    assert a1 and a2 and a1 != a2
    assert {i.client_id for i in h.broker.sessions_info()} == {a1, a2}


def test_v5_connack_advertises_limits() -> None:
    settings = BrokerSettings(
        receive_maximum=50,
        max_qos=1,
        retain_available=False,
        max_packet_size=4096,
        topic_alias_maximum=7,
        wildcard_subscriptions=False,
        subscription_identifiers=False,
        shared_subscriptions=False,
        sys_interval=0,
    )
    h = Harness(settings)
    p = connack(h.connect("a", V5)).properties
    assert p.receive_maximum == 50
    assert p.maximum_qos == 1
    assert p.retain_available == 0
    assert p.maximum_packet_size == 4096
    assert p.topic_alias_maximum == 7
    assert p.wildcard_subscription_available == 0
    assert p.subscription_identifier_available == 0
    assert p.shared_subscription_available == 0


def test_v5_connack_omits_defaults() -> None:
    h = Harness(BrokerSettings(receive_maximum=65535, topic_alias_maximum=0, sys_interval=0))
    p = connack(h.connect("a", V5)).properties
    assert p.receive_maximum is None and p.maximum_qos is None and p.retain_available is None
    assert p.topic_alias_maximum is None and p.server_keep_alive is None
    assert p.wildcard_subscription_available is None


def test_server_keep_alive_caps_v5_client() -> None:
    h = Harness(BrokerSettings(max_keepalive=60, sys_interval=0))
    c = h.connect("a", V5, keep_alive=120)
    assert connack(c).properties.server_keep_alive == 60
    assert h.keep_alive[c.conn_id] == 60
    zero = h.connect("b", V5, keep_alive=0)
    assert connack(zero).properties.server_keep_alive == 60
    assert h.keep_alive[zero.conn_id] == 60
    fine = h.connect("c", V5, keep_alive=30)
    assert connack(fine).properties.server_keep_alive is None
    assert h.keep_alive[fine.conn_id] == 30


def test_keep_alive_311_is_not_capped() -> None:
    # 3.1.1 has no way to tell the client; we honour what it asked for.
    h = Harness(BrokerSettings(max_keepalive=60, sys_interval=0))
    c = h.connect("a", V311, keep_alive=120)
    assert h.keep_alive[c.conn_id] == 120


def test_second_connect_is_a_protocol_violation() -> None:
    h = Harness()
    c = h.connect("a", V5)
    h.broker.connect(c.conn_id, Connect("a", protocol_version=5), Identity(ok=True), h.now)
    h.flush()
    disc = only(c.all(), Disconnect)
    assert disc and disc[0].reason_code == 0x82
    assert c.closed
    c2 = h.connect("b", V311)
    c2.send(Connect("b"))
    assert c2.closed and not only(c2.all(), Disconnect)


def test_clean_session_311_emits_no_store_ops() -> None:
    h = Harness()
    c = h.connect("clean", V311, clean=True)
    c.subscribe("a/#", qos=1)
    p = h.connect("pub", V311)
    p.publish("a/b", b"1", qos=1)
    c.disconnect()
    assert h.store.ops == []


def test_persistent_session_311_is_stored_and_resumed() -> None:
    h = Harness()
    c = h.connect("p", V311, clean=False)
    assert not connack(c).session_present
    assert isinstance(h.store.ops[0], PutSession)
    c.subscribe("a/#", qos=1)
    assert ("p", "a/#") in h.store.subscriptions
    c.disconnect()
    rec = h.store.sessions["p"]
    assert rec.disconnected_at == h.now and rec.will is None
    c2 = h.connect("p", V311, clean=False)
    assert connack(c2).session_present
    assert h.store.sessions["p"].disconnected_at is None


def test_clean_start_deletes_existing_persistent_session_first() -> None:
    h = Harness()
    c = h.connect("p", V5, clean=False, expiry=100)
    c.subscribe("a", qos=1)
    c.disconnect()
    n = len(h.store.ops)
    c2 = h.connect("p", V5, clean=True, expiry=100)
    assert not connack(c2).session_present
    new_ops = h.store.ops[n:]
    assert isinstance(new_ops[0], DeleteSession)
    assert isinstance(new_ops[1], PutSession)
    assert ("p", "a") not in h.store.subscriptions


def test_v5_expiry_zero_session_is_not_stored_and_ends_with_connection() -> None:
    h = Harness()
    c = h.connect("z", V5, clean=True, expiry=0)
    c.subscribe("a", qos=1)
    c.disconnect()
    assert h.store.ops == []
    c2 = h.connect("z", V5, clean=False)
    assert not connack(c2).session_present


def test_reconnect_with_expiry_zero_unstores_persistent_session() -> None:
    h = Harness()
    c = h.connect("p", V5, clean=False, expiry=100)
    c.subscribe("a", qos=1)
    c.disconnect()
    c2 = h.connect("p", V5, clean=False)  # no expiry property: 0 from now on
    assert connack(c2).session_present
    assert "p" not in h.store.sessions  # a crash now must not resurrect it
    c2.disconnect()
    assert not h.broker.session_exists("p")


def test_taking_over_an_expiry_zero_session_starts_a_new_one() -> None:
    # §3.1.2.11.2: a session with expiry 0 ends when its network connection closes, and a
    # takeover closes it: clean start 0 finds no session, and nothing is handed on.
    h = Harness()
    c = h.connect("p", V5, clean=True, expiry=0)
    c.subscribe("a", qos=1)
    c2 = h.connect("p", V5, clean=False, expiry=100)
    assert not connack(c2).session_present
    assert c.closed
    assert h.store.sessions["p"].expiry_interval == 100
    assert ("p", "a") not in h.store.subscriptions
    h.broker.publish_local("a", b"x", 1)
    assert c2.publishes() == []


def test_v311_clean_session_taken_over_by_clean_session_0_starts_a_new_one() -> None:
    h = Harness()
    c = h.connect("p", V311, clean=True)
    c.subscribe("a", qos=1)
    c2 = h.connect("p", V311, clean=False)
    assert not connack(c2).session_present
    h.broker.publish_local("a", b"x", 1)
    assert c2.publishes() == []


def test_session_becoming_persistent_writes_everything() -> None:
    h = Harness()
    c = h.connect("p", V5, clean=False, expiry=10)
    c.subscribe("a", qos=1)
    # Take over with clean start 0 and a longer expiry: the live session continues.
    c2 = h.connect("p", V5, clean=False, expiry=100)
    assert connack(c2).session_present
    assert c.closed
    assert h.store.sessions["p"].expiry_interval == 100
    assert ("p", "a") in h.store.subscriptions


def test_session_expiry_capped_and_reported() -> None:
    h = Harness(BrokerSettings(max_session_expiry=60, sys_interval=0))
    c = h.connect("p", V5, clean=True, expiry=3600)
    assert connack(c).properties.session_expiry_interval == 60
    assert h.store.sessions["p"].expiry_interval == 60


def test_v311_persistent_uses_configured_expiry() -> None:
    h = Harness(BrokerSettings(v311_session_expiry=120, sys_interval=0))
    c = h.connect("p", V311, clean=False)
    c.subscribe("x", qos=1)
    c.disconnect()
    assert h.store.sessions["p"].expiry_interval == 120
    h.advance(119)
    assert h.broker.session_exists("p")
    h.advance(2)
    assert not h.broker.session_exists("p")
    assert "p" not in h.store.sessions


def test_session_expiry_tick_and_reconnect_in_time() -> None:
    h = Harness()
    c = h.connect("p", V5, clean=True, expiry=5)
    c.subscribe("t", qos=1)
    c.disconnect()
    h.advance(2)
    c2 = h.connect("p", V5, clean=False, expiry=5)
    assert connack(c2).session_present
    c2.disconnect()
    h.advance(6)
    assert not h.broker.session_exists("p")
    c3 = h.connect("p", V5, clean=False, expiry=5)
    assert not connack(c3).session_present


def test_expired_session_not_resumed_even_before_tick() -> None:
    h = Harness()
    c = h.connect("p", V5, clean=True, expiry=5)
    c.disconnect()
    h.now += 10  # no tick in between
    c2 = h.connect("p", V5, clean=False, expiry=5)
    assert not connack(c2).session_present


def test_disconnect_may_change_expiry() -> None:
    h = Harness()
    c = h.connect("p", V5, clean=True, expiry=1)
    c.subscribe("t", qos=1)
    c.disconnect(properties=props(session_expiry_interval=5))
    assert h.store.sessions["p"].expiry_interval == 5
    h.advance(3)
    c2 = h.connect("p", V5, clean=False, expiry=1)
    assert connack(c2).session_present
    c2.disconnect(properties=props(session_expiry_interval=0))
    assert not h.broker.session_exists("p") and "p" not in h.store.sessions


def test_disconnect_from_zero_to_nonzero_expiry_is_protocol_error() -> None:
    h = Harness()
    watcher = h.connect("w", V5)
    watcher.subscribe("will/t", qos=0)
    c = h.connect("p", V5, clean=True, expiry=0, will=Will("will/t", b"gone"))
    got = c.disconnect(properties=props(session_expiry_interval=30))
    assert only(got, Disconnect)[0].reason_code == 0x82
    assert c.closed
    # Not a valid DISCONNECT: the will is published.
    assert [p.payload for p in watcher.publishes()] == [b"gone"]


def test_takeover_v5_disconnects_old_with_0x8e() -> None:
    h = Harness()
    old = h.connect("same", V5, clean=False, expiry=100)
    old.subscribe("t", qos=1)
    new = h.connect("same", V5, clean=False, expiry=100)
    assert only(old.all(), Disconnect)[0].reason_code == 0x8E
    assert old.closed
    assert connack(new).session_present
    assert h.broker.stats.takeovers == 1
    # The old connection's packets are ignored from now on.
    old.publish("t", b"late", qos=0)
    pub = h.connect("pub", V5)
    pub.publish("t", b"hello", qos=1)
    assert [p.payload for p in new.publishes()] == [b"hello"]
    # connection_lost for the taken-over connection changes nothing.
    old.lose()
    assert h.broker.sessions_info()[0].connected


def test_takeover_311_closes_old_without_disconnect_and_publishes_will() -> None:
    h = Harness()
    watcher = h.connect("w", V311)
    watcher.subscribe("status", qos=1)
    old = h.connect("same", V311, will=Will("status", b"lost", qos=1))
    h.connect("same", V311)
    assert old.closed and not only(old.all(), Disconnect)
    assert [p.payload for p in watcher.publishes()] == [b"lost"]


def test_takeover_cancels_delayed_will_when_session_continues() -> None:
    h = Harness()
    watcher = h.connect("w", V5)
    watcher.subscribe("status", qos=1)
    will = Will("status", b"lost", properties=props(will_delay_interval=10))
    h.connect("same", V5, clean=False, expiry=100, will=will)
    h.connect("same", V5, clean=False, expiry=100)
    h.advance(20)
    assert watcher.publishes() == []


def test_takeover_with_clean_start_publishes_delayed_will() -> None:
    h = Harness()
    watcher = h.connect("w", V5)
    watcher.subscribe("status", qos=1)
    will = Will("status", b"lost", properties=props(will_delay_interval=10))
    h.connect("same", V5, clean=False, expiry=100, will=will)
    h.connect("same", V5, clean=True, expiry=100)
    assert [p.payload for p in watcher.publishes()] == [b"lost"]


def test_will_acl_checked_at_connect() -> None:
    class NoWills:
        def can_publish(self, username: str | None, client_id: str, topic: str) -> bool:
            return not topic.startswith("forbidden")

        def can_receive(self, username: str | None, client_id: str, topic: str) -> bool:
            return True

        def subscribe_refusal(self, username: str | None, client_id: str, f: str) -> int:
            return 0

    h = Harness(authorizer=NoWills())
    c5 = h.connect("a", V5, will=Will("forbidden/x", b"w"))
    assert connack(c5).reason_code == 0x87 and c5.closed
    c3 = h.connect("b", V311, will=Will("forbidden/x", b"w"))
    assert connack(c3).reason_code == 5 and c3.closed
    ok = h.connect("c", V311, will=Will("fine", b"w"))
    assert connack(ok).reason_code == 0


def test_will_to_sys_refused() -> None:
    h = Harness()
    c = h.connect("a", V5, will=Will("$SYS/broker/x", b"w"))
    assert connack(c).reason_code == 0x87


def test_will_qos_above_maximum_v5_refused() -> None:
    h = Harness(BrokerSettings(max_qos=1, sys_interval=0))
    c = h.connect("a", V5, will=Will("t", b"w", qos=2))
    assert connack(c).reason_code == 0x9B


def test_packets_before_connect_close_the_connection() -> None:
    h = Harness()
    c = h.open()
    c.send(Publish("t", b"x"))
    assert c.closed


def test_connection_lost_before_connect_is_harmless() -> None:
    h = Harness()
    c = h.open()
    c.lose()
    assert h.broker.sessions_info() == []


def test_shutdown_records_persistent_sessions_disconnected() -> None:
    h = Harness()
    p = h.connect("p5", V5, clean=False, expiry=100)
    q = h.connect("p3", V311, clean=False)
    h.connect("clean", V311)
    h.broker.shutdown(h.now)
    h.flush()
    assert only(p.all(), Disconnect)[0].reason_code == 0x8B
    assert p.closed and q.closed
    assert not only(q.all(), Disconnect)
    assert h.store.sessions["p5"].disconnected_at == h.now
    assert h.store.sessions["p3"].disconnected_at == h.now
    assert set(h.store.sessions) == {"p5", "p3"}


def test_sessions_info() -> None:
    h = Harness()
    c = h.connect("a", V5, clean=False, expiry=50, username="alice")
    c.subscribe("x/#", "y", qos=1)
    info = {i.client_id: i for i in h.broker.sessions_info()}["a"]
    assert info.connected and info.persistent and info.username == "alice"
    assert info.subscriptions == ("x/#", "y")
    assert info.listener == "test" and info.peer == f"peer{c.conn_id}"
    c.lose()
    info = h.broker.sessions_info()[0]
    assert not info.connected and info.expires_at == h.now + 50


def test_subscriptions_persisted_per_filter() -> None:
    h = Harness()
    c = h.connect("p", V311, clean=False)
    c.subscribe("a", "b/+", qos=1)
    puts = [op for op in h.store.ops if isinstance(op, PutSubscription)]
    assert [op.record.topic_filter for op in puts] == ["a", "b/+"]
    c.unsubscribe("a")
    assert set(h.store.subscriptions) == {("p", "b/+")}
