"""Per-session queue policy asked for by trusted clients (the device bridge's command queue)."""

from __future__ import annotations

import json

from test_broker_support import V5, V311, Client, Harness, props

from gateway.broker.effects import Identity
from gateway.broker.records import Snapshot

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
    assert h.broker._sessions["dev-thermo"].limits == h.settings.default_queue


def test_coalescing_survives_a_restart_of_the_broker() -> None:
    """The queue is durable; the policy comes again with the device's next CONNECT."""
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
