"""Session ownership (DESIGN §8): a session is taken over, resumed or discarded only by the
party that owns it, and the device bridge's client ids are the gateway's alone."""

from __future__ import annotations

from test_broker_support import V5, V311, Client, Harness, only

from gateway.broker.effects import Identity
from gateway.broker.records import OWNER_GATEWAY
from gateway.broker.settings import BrokerSettings
from gateway.mqtt.packets import ConnAck, Publish
from gateway.mqtt.reason_codes import ReasonCode

DEVICE = "dev-thermostat"


def harness() -> Harness:
    return Harness(BrokerSettings(sys_interval=0, reserved_client_id_prefixes=("dev-",)))


def connack(c: Client) -> ConnAck:
    (ack,) = only(c.all(), ConnAck)
    assert isinstance(ack, ConnAck)
    return ack


def refused(c: Client) -> int:
    ack = connack(c)
    assert not ack.session_present
    return ack.reason_code


def device_with_a_queued_command(h: Harness) -> None:
    """The device's persistent session, asleep, with one command waiting."""
    dev = h.connect(DEVICE, V5, clean=False, expiry=3600, trusted=True)
    dev.subscribe("gw/thermostat/set", qos=1)
    dev.disconnect()
    h.connect("ha", V5, username="ha").publish("gw/thermostat/set", b'{"t": 21}', qos=1)
    assert len(h.broker.queue_entries(DEVICE) or []) == 1


def test_reserved_client_id_is_refused_to_network_clients_in_every_form() -> None:
    h = harness()
    device_with_a_queued_command(h)
    attackers = [
        h.connect(DEVICE, V5, clean=False, expiry=3600),  # 5.0 clean start 0
        h.connect(DEVICE, V5, clean=True),  # 5.0 clean start 1 (would wipe the queue)
        h.connect(DEVICE, V311, clean=False),  # 3.1.1 clean session 0
        h.connect(DEVICE, V311, clean=False, username="alice"),  # a verified user
        h.connect(DEVICE, V5, identity=Identity(ok=True, username="root", is_admin=True)),
        h.connect("dev-not-yet-created", V311),  # cannot be squatted before the bridge
    ]
    codes = [refused(c) for c in attackers]
    assert codes == [0x85, 0x85, 2, 2, 0x85, 2]  # 3.1.1: identifier rejected
    assert all(c.closed for c in attackers)
    assert [p for c in attackers for p in c.all() if isinstance(p, Publish)] == []
    # Nothing of the session changed: owner, queue, policy-free limits.
    assert len(h.broker.queue_entries(DEVICE) or []) == 1
    assert h.store.sessions[DEVICE].owner == OWNER_GATEWAY
    assert not h.broker.session_exists("dev-not-yet-created")
    assert h.broker.stats.refused_reserved_client_id == 6
    # The device comes back and gets its command.
    dev = h.connect(DEVICE, V5, clean=False, expiry=3600, trusted=True)
    assert connack(dev).session_present
    assert [p.payload for p in dev.publishes()] == [b'{"t": 21}']


def test_without_reserved_prefixes_the_owner_rule_still_protects_gateway_sessions() -> None:
    h = Harness()  # no reserved prefixes configured
    device_with_a_queued_command(h)
    c = h.connect(DEVICE, V311, clean=False)
    assert refused(c) == 5  # 3.1.1: not authorized
    assert len(h.broker.queue_entries(DEVICE) or []) == 1
    assert h.broker.stats.refused_session_owner == 1


def test_persistent_session_is_only_resumed_by_its_owner() -> None:
    h = Harness()
    alice = h.connect("phone", V5, clean=False, expiry=3600, username="alice")
    alice.subscribe("alice/#", qos=1)
    alice.disconnect()
    h.connect("p", V311).publish("alice/inbox", b"secret", qos=1)

    # Another user, an anonymous client, and clean start (which would delete the queue).
    for attempt, code in (
        (h.connect("phone", V5, clean=False, expiry=3600, username="bob"), 0x87),
        (h.connect("phone", V311, clean=False), 5),
        (h.connect("phone", V311, clean=True, username="bob"), 5),
    ):
        assert refused(attempt) == code
        assert attempt.publishes() == []
    assert h.store.sessions["phone"].owner == "alice"
    assert h.store.sessions["phone"].username == "alice"

    back = h.connect("phone", V5, clean=False, expiry=3600, username="alice")
    assert connack(back).session_present
    assert [p.payload for p in back.publishes()] == [b"secret"]


def test_live_connection_is_not_taken_over_by_another_user() -> None:
    h = Harness()
    alice = h.connect("phone", V5, username="alice")
    bob = h.connect("phone", V5, username="bob")
    assert refused(bob) == ReasonCode.NOT_AUTHORIZED
    assert not alice.closed
    assert h.broker.stats.takeovers == 0
    # The owner may take over its own session as always.
    again = h.connect("phone", V5, username="alice")
    assert connack(again).reason_code == 0 and alice.closed


def test_anonymous_sessions_belong_to_anonymous_clients() -> None:
    h = Harness()
    anon = h.connect("sensor", V311, clean=False)
    anon.disconnect()
    assert refused(h.connect("sensor", V311, clean=False, username="alice")) == 5
    assert connack(h.connect("sensor", V311, clean=False)).session_present


def test_expired_session_frees_its_client_id() -> None:
    h = Harness()
    c = h.connect("phone", V5, clean=False, expiry=10, username="alice")
    c.disconnect()
    h.now += 11  # expired, though its timer has not run yet
    bob = h.connect("phone", V5, clean=False, expiry=10, username="bob")
    assert connack(bob).reason_code == 0 and not connack(bob).session_present
    assert h.store.sessions["phone"].owner == "bob"


def test_the_gateway_takes_back_its_client_id_and_discards_a_squatters_session() -> None:
    h = Harness()
    c = h.connect("edge-gateway-admin", V5, clean=False, expiry=60, username="mallory")
    c.subscribe("#", qos=1)  # what a squatter would like the gateway's client to forward
    c.disconnect()
    h.connect("p", V5).publish("x", b"queued for mallory", qos=1)
    own = h.connect("edge-gateway-admin", V5, clean=False, expiry=60, trusted=True)
    assert connack(own).reason_code == 0 and not connack(own).session_present
    assert own.publishes() == []
    assert h.store.sessions["edge-gateway-admin"].owner == OWNER_GATEWAY
    assert not any(cid == "edge-gateway-admin" for cid, _ in h.store.subscriptions)
    h.connect("p2", V5).publish("y", b"later", qos=1)
    assert own.publishes() == []
    assert refused(h.connect("edge-gateway-admin", V5, username="mallory")) == 0x87


def test_owner_survives_a_restart() -> None:
    h = Harness()
    c = h.connect("phone", V5, clean=False, expiry=3600, username="alice")
    c.disconnect()
    h2 = Harness(store=h.store)
    h2.restore()
    assert refused(h2.connect("phone", V5, clean=False, expiry=3600, username="bob")) == 0x87
    assert connack(h2.connect("phone", V5, clean=False, username="alice")).session_present


def test_refusals_are_events_for_the_admin_api() -> None:
    h = harness()
    h.connect(DEVICE, V311, clean=False)
    _, events = h.broker.events_since(0)
    refusal = [e for e in events if e["type"] == "refused"]
    assert len(refusal) == 1 and refusal[0]["client_id"] == DEVICE
    assert "reserved" in str(refusal[0]["detail"])


def test_the_gateway_takes_back_a_live_connection_too() -> None:
    h = Harness()
    squatter = h.connect("edge-gateway-admin", V5, username="mallory")
    squatter.subscribe("#")
    own = h.connect("edge-gateway-admin", V5, clean=False, expiry=60, trusted=True)
    assert connack(own).reason_code == 0 and not connack(own).session_present
    assert squatter.closed
