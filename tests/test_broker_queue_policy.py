"""Per-session queue policy asked for by trusted clients (the device bridge's command queue)."""

from __future__ import annotations

import json

from test_broker_support import V5, V311, Client, Harness, props

from gateway.broker.effects import Identity
from gateway.broker.records import DeleteSession, PutSession, QueuePolicy, Snapshot
from gateway.broker.settings import BrokerSettings, Overflow, QueueLimits
from gateway.mqtt.packets import ConnAck

TRUSTED = Identity(ok=True, is_admin=True)
POLICY = (
    ("queue-coalesce", "json-keys"),
    ("queue-notify-topic", "gw/thermo/result"),
    ("queue-max-messages", "3"),
)


def device(
    h: Harness, policy: tuple[tuple[str, str], ...] = POLICY, trusted: bool = True
) -> Client:
    return h.connect(
        "dev-thermo",
        V5,
        clean=False,
        expiry=3600,
        properties=props(user_properties=policy),
        identity=TRUSTED if trusted else None,
    )


def asleep_with_subscription(h: Harness, **kw: object) -> None:
    d = device(h, **kw)  # type: ignore[arg-type]
    d.subscribe("gw/thermo/set", qos=1)
    d.disconnect()


def notices(c: Client) -> list[dict[str, object]]:
    return [json.loads(p.payload) for p in c.publishes() if p.topic == "gw/thermo/result"]


def test_newer_command_setting_the_same_keys_supersedes_queued_ones() -> None:
    h = Harness()
    asleep_with_subscription(h)
    watcher = h.connect("watcher", V5)
    watcher.subscribe("gw/thermo/result", qos=1)
    app = h.connect("app", V311)
    for t in (19.0, 19.5, 20.0, 20.5, 21.5):
        app.publish("gw/thermo/set", json.dumps({"target_temp": t}).encode(), qos=1)
    app.publish("gw/thermo/set", b'{"mode": "heat"}', qos=1)  # other keys: kept
    got = notices(watcher)
    assert [n["result"] for n in got] == ["superseded"] * 4
    assert [n["command"] for n in got] == [{"target_temp": t} for t in (19.0, 19.5, 20.0, 20.5)]
    awake = device(h)
    payloads = [json.loads(p.payload) for p in awake.publishes()]
    assert payloads == [{"target_temp": 21.5}, {"mode": "heat"}]


def test_a_command_in_flight_is_never_superseded() -> None:
    h = Harness()
    asleep_with_subscription(h)
    d = device(h)
    app = h.connect("app", V311)
    app.publish("gw/thermo/set", b'{"target_temp": 20}', qos=1)
    first = d.publishes()
    assert [p.payload for p in first] == [b'{"target_temp": 20}']  # sent, not yet acknowledged
    app.publish("gw/thermo/set", b'{"target_temp": 21}', qos=1)
    assert [p.payload for p in d.publishes()] == [b'{"target_temp": 21}']


def test_superset_only_and_same_topic_only() -> None:
    h = Harness()
    asleep_with_subscription(h)
    app = h.connect("app", V311)
    app.publish("gw/thermo/set", b'{"target_temp": 20, "mode": "heat"}', qos=1)
    app.publish("gw/thermo/set", b'{"target_temp": 21}', qos=1)  # fewer keys: both stay
    app.publish("gw/thermo/set", b"not json", qos=1)
    app.publish("gw/thermo/set", b"not json", qos=1)  # not JSON objects: never coalesced
    awake = device(h)
    assert len(awake.publishes()) == 3  # the window of 3 (queue-max-messages also 3)


def test_queue_depth_and_drop_notices() -> None:
    h = Harness()
    asleep_with_subscription(h)
    watcher = h.connect("watcher", V5)
    watcher.subscribe("gw/thermo/result", qos=1)
    app = h.connect("app", V311)
    for i in range(5):
        app.publish("gw/thermo/set", json.dumps({f"k{i}": i}).encode(), qos=1)
    got = notices(watcher)
    assert [(n["result"], n["reason"], n["command"]) for n in got] == [
        ("dropped", "queue_full", {"k0": 0}),
        ("dropped", "queue_full", {"k1": 1}),
    ]


def test_default_expiry_for_commands_without_one() -> None:
    h = Harness()
    asleep_with_subscription(h, policy=(*POLICY, ("queue-default-expiry", "60")))
    watcher = h.connect("watcher", V5)
    watcher.subscribe("gw/thermo/result", qos=1)
    app = h.connect("app", V311)
    app.publish("gw/thermo/set", b'{"target_temp": 20}', qos=1)
    h.advance(61)
    assert [n["result"] for n in notices(watcher)] == ["expired"]
    assert device(h).publishes() == []


def test_untrusted_clients_cannot_choose_a_queue_policy() -> None:
    h = Harness()
    asleep_with_subscription(h, trusted=False)
    watcher = h.connect("watcher", V5)
    watcher.subscribe("gw/thermo/result", qos=1)
    app = h.connect("app", V311)
    for t in (19, 20, 21, 22):
        app.publish("gw/thermo/set", json.dumps({"target_temp": t}).encode(), qos=1)
    assert notices(watcher) == []
    awake = device(h, trusted=False)
    assert len(awake.publishes()) == 4


def test_bad_policy_values_are_ignored_not_fatal() -> None:
    h = Harness()
    d = device(h, policy=(("queue-max-messages", "-1"), ("queue-overflow", "sideways")))
    assert not d.closed
    assert h.broker.sessions["dev-thermo"].limits == h.settings.default_queue


def test_coalescing_survives_a_restart_of_the_broker() -> None:
    """The queue is durable, and so is the policy; the device's next CONNECT sets it again."""
    h = Harness()
    asleep_with_subscription(h)
    app = h.connect("app", V311)
    app.publish("gw/thermo/set", b'{"target_temp": 20}', qos=1)
    snapshot: Snapshot = h.store.snapshot()
    h2 = Harness(store=h.store)
    h2.restore(snapshot)
    d = device(h2)
    assert [p.payload for p in d.publishes()] == [b'{"target_temp": 20}']


def test_unconfirmed_command_can_still_be_superseded_after_the_link_drops() -> None:
    """The device got the command but never confirmed it (no PUBACK) and went to sleep: a
    newer command for the same keys replaces it, instead of both running at the next wake."""
    h = Harness()
    asleep_with_subscription(h)
    watcher = h.connect("watcher", V5)
    watcher.subscribe("gw/thermo/result", qos=1)
    d = device(h)
    app = h.connect("app", V311)
    app.publish("gw/thermo/set", b'{"target_temp": 20}', qos=1)
    assert [p.payload for p in d.publishes()] == [b'{"target_temp": 20}']  # not acknowledged
    d.disconnect()
    app.publish("gw/thermo/set", b'{"target_temp": 22}', qos=1)
    assert [n["result"] for n in notices(watcher)] == ["superseded"]
    awake = device(h)
    assert [p.payload for p in awake.publishes()] == [b'{"target_temp": 22}']


def test_unconfirmed_command_is_sent_again_when_nothing_supersedes_it() -> None:
    h = Harness()
    asleep_with_subscription(h)
    d = device(h)
    app = h.connect("app", V311)
    app.publish("gw/thermo/set", b'{"target_temp": 20}', qos=1)
    assert len(d.publishes()) == 1
    d.lose()
    again = device(h)
    assert [p.payload for p in again.publishes()] == [b'{"target_temp": 20}']


def test_pending_list_is_kept_current_and_retained() -> None:
    h = Harness()
    policy = (*POLICY, ("queue-pending-topic", "gw/thermo/pending"))
    asleep_with_subscription(h, policy=policy)
    app = h.connect("app", V311)
    app.publish("gw/thermo/set", b'{"target_temp": 20}', qos=1)
    app.publish("gw/thermo/set", b'{"mode": "heat"}', qos=1)
    app.publish("gw/thermo/set", b'{"target_temp": 21}', qos=1)  # supersedes the first

    def pending() -> list[dict[str, object]]:
        late = h.connect("late", V5)
        late.subscribe("gw/thermo/pending", qos=1)
        (msg,) = late.publishes()
        assert msg.retain
        late.disconnect()
        return list(json.loads(msg.payload))

    listed = pending()
    assert [(p["command"], p["state"]) for p in listed] == [
        ({"mode": "heat"}, "queued"),
        ({"target_temp": 21}, "queued"),
    ]
    d = device(h, policy=policy)
    sent = d.publishes()
    assert [p["state"] for p in pending()] == ["in_flight", "in_flight"]
    for p in sent:
        d.ack(p)
    assert pending() == []


# --- the policy is part of the durable session ---------------------------------------------

PENDING = (*POLICY, ("queue-pending-topic", "gw/thermo/pending"))
STORED = QueuePolicy(
    max_messages=3,
    coalesce=True,
    notify_topic="gw/thermo/result",
    pending_topic="gw/thermo/pending",
)


def restart(h: Harness) -> Harness:
    """A new broker rebuilt from what the old one made durable, a minute later."""
    new = Harness(h.settings, now=h.now + 60, store=h.store)
    new.next_conn = h.next_conn + 1000
    new.restore()
    return new


def pending(h: Harness) -> list[dict[str, object]]:
    late = h.connect("late", V5)
    late.subscribe("gw/thermo/pending", qos=1)
    msgs = late.publishes()
    late.disconnect()
    assert len(msgs) == 1 and msgs[0].retain
    return list(json.loads(msgs[0].payload))


def test_policy_is_durable_before_the_connack() -> None:
    h = Harness()
    device(h, policy=PENDING)
    assert h.store.sessions["dev-thermo"].queue_policy == STORED
    # The record carrying it is in the very step whose effects hold the CONNACK, and the
    # shell sends nothing of a step before its store ops are committed.
    (step,) = [
        (ops, actions)
        for ops, actions in h.batches
        if any(isinstance(getattr(a, "packet", None), ConnAck) for a in actions)
    ]
    puts = [op.record for op in step[0] if isinstance(op, PutSession)]
    assert [r.queue_policy for r in puts] == [STORED]


def test_restored_session_coalesces_reports_and_lists_before_its_device_is_back() -> None:
    h = Harness()
    asleep_with_subscription(h, policy=PENDING)
    h2 = restart(h)
    watcher = h2.connect("watcher", V5)
    watcher.subscribe("gw/thermo/result", qos=1)
    app = h2.connect("app", V311)
    for t in (20, 21, 22):
        app.publish("gw/thermo/set", json.dumps({"target_temp": t}).encode(), qos=1)
    got = notices(watcher)
    assert [(n["result"], n["command"]) for n in got] == [
        ("superseded", {"target_temp": 20}),
        ("superseded", {"target_temp": 21}),
    ]
    assert [(p["command"], p["state"]) for p in pending(h2)] == [({"target_temp": 22}, "queued")]
    # A second restart in between changes nothing: the device gets the last command only.
    h3 = restart(h2)
    assert [json.loads(p.payload) for p in device(h3, policy=PENDING).publishes()] == [
        {"target_temp": 22}
    ]


def test_restored_session_applies_its_default_expiry_and_depth() -> None:
    h = Harness()
    policy = (*POLICY, ("queue-default-expiry", "60"), ("queue-overflow", "reject-new"))
    asleep_with_subscription(h, policy=policy)
    h2 = restart(h)
    watcher = h2.connect("watcher", V5)
    watcher.subscribe("gw/thermo/result", qos=1)
    app = h2.connect("app", V311)
    for i in range(4):
        app.publish("gw/thermo/set", json.dumps({f"k{i}": i}).encode(), qos=1)
    assert [(n["result"], n["command"]) for n in notices(watcher)] == [
        ("dropped", {"k3": 3})  # queue-max-messages 3, reject-new
    ]
    h2.advance(61)
    assert [n["result"] for n in notices(watcher)] == ["expired"] * 3
    assert device(h2, policy=policy).publishes() == []


def test_restored_overrides_sit_on_the_current_config() -> None:
    """Only what the client chose is stored: the rest follows config.yaml as it is now."""
    h = Harness()
    asleep_with_subscription(h)
    changed = BrokerSettings(
        sys_interval=0, default_queue=QueueLimits(queue_qos0=True, max_bytes=99)
    )
    h2 = Harness(changed, store=h.store, now=h.now + 1)
    h2.restore()
    limits = h2.broker.sessions["dev-thermo"].limits
    assert limits == QueueLimits(max_messages=3, max_bytes=99, queue_qos0=True, coalesce=True)


def test_crash_while_connected_keeps_the_policy_and_requeues_the_unconfirmed_command() -> None:
    h = Harness()
    asleep_with_subscription(h)
    d = device(h)
    app = h.connect("app", V311)
    app.publish("gw/thermo/set", b'{"target_temp": 20}', qos=1)
    assert len(d.publishes()) == 1  # sent, never confirmed: then the gateway dies
    h2 = restart(h)
    assert h2.store.sessions["dev-thermo"].queue_policy == QueuePolicy(
        max_messages=3, coalesce=True, notify_topic="gw/thermo/result"
    )
    watcher = h2.connect("watcher", V5)
    watcher.subscribe("gw/thermo/result", qos=1)
    app = h2.connect("app", V311)
    app.publish("gw/thermo/set", b'{"target_temp": 22}', qos=1)
    assert [(n["result"], n["command"]) for n in notices(watcher)] == [
        ("superseded", {"target_temp": 20})
    ]
    assert [p.payload for p in device(h2).publishes()] == [b'{"target_temp": 22}']


def test_a_later_trusted_connect_replaces_the_policy_and_one_without_clears_it() -> None:
    h = Harness()
    asleep_with_subscription(h)
    other = (("queue-max-messages", "7"), ("queue-overflow", "reject-new"))
    device(h, policy=other).disconnect()
    assert h.store.sessions["dev-thermo"].queue_policy == QueuePolicy(
        max_messages=7, overflow=Overflow.REJECT_NEW
    )
    device(h, policy=()).disconnect()
    assert h.store.sessions["dev-thermo"].queue_policy is None
    h2 = restart(h)
    assert h2.broker.sessions["dev-thermo"].limits == h2.settings.default_queue
    app = h2.connect("app", V311)
    for t in (20, 21):
        app.publish("gw/thermo/set", json.dumps({"target_temp": t}).encode(), qos=1)
    assert len(device(h2, policy=()).publishes()) == 2  # no coalescing any more


def test_an_untrusted_client_taking_the_session_over_drops_the_policy() -> None:
    h = Harness()
    asleep_with_subscription(h, policy=PENDING)
    device(h, trusted=False).disconnect()  # same properties, but nobody we trust
    assert h.store.sessions["dev-thermo"].queue_policy is None
    session = h.broker.sessions["dev-thermo"]
    assert (session.notify_topic, session.pending_topic) == (None, None)
    h2 = restart(h)
    watcher = h2.connect("watcher", V5)
    watcher.subscribe("gw/thermo/result", qos=1)
    app = h2.connect("app", V311)
    for t in (20, 21):
        app.publish("gw/thermo/set", json.dumps({"target_temp": t}).encode(), qos=1)
    assert notices(watcher) == []


def test_ending_the_session_deletes_its_policy() -> None:
    h = Harness()
    asleep_with_subscription(h)
    h.connect("dev-thermo", V5, clean=True, identity=TRUSTED).disconnect()  # clean, expiry 0
    assert "dev-thermo" not in h.store.sessions
    assert any(isinstance(op, DeleteSession) for op in h.store.ops)
    h2 = restart(h)
    assert not h2.broker.session_exists("dev-thermo")


def test_a_held_connection_takes_nothing_into_flight() -> None:
    """queue-hold: a trusted client that connects only to set up its session (a device that
    is not awake) receives nothing, so every command stays queued and can be superseded."""
    h = Harness()
    asleep_with_subscription(h)
    app = h.connect("app", V311)
    app.publish("gw/thermo/set", b'{"target_temp": 20}', qos=1)
    held = device(h, (*POLICY, ("queue-hold", "1")))
    app.publish("gw/thermo/set", b'{"target_temp": 21}', qos=1)  # supersedes 20, queued
    app.publish("gw/thermo/set", b'{"mode": "auto"}', qos=0)  # QoS 0 waits too
    assert held.publishes() == []
    held.disconnect()
    awake = device(h)
    payloads = [json.loads(p.payload) for p in awake.publishes()]
    assert payloads == [{"target_temp": 21}, {"mode": "auto"}]


def test_only_trusted_clients_can_hold_their_queue() -> None:
    h = Harness()
    asleep_with_subscription(h)
    app = h.connect("app", V311)
    untrusted = device(h, (("queue-hold", "1"),), trusted=False)
    app.publish("gw/thermo/set", b'{"target_temp": 20}', qos=1)
    assert [p.payload for p in untrusted.publishes()] == [b'{"target_temp": 20}']
