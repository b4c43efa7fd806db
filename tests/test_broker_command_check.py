"""A device session's command schema (queue-schema): bad commands are refused before they are
queued, never supersede anything, and every kind of publisher is told in its own way."""

from __future__ import annotations

import json
import logging

import pytest
from test_broker_support import V5, V311, Client, Harness, only, props

from gateway.broker.effects import Identity
from gateway.broker.records import QueuePolicy
from gateway.commands.schema import CommandSchema
from gateway.mqtt.packets import PubAck, PubComp, PubRec, PubRel

TRUSTED = Identity(ok=True, is_admin=True)
SCHEMA = CommandSchema.from_data(
    {
        "type": "object",
        "properties": {
            "target_temp": {"type": "number", "minimum": 4.5, "maximum": 30, "multipleOf": 0.5},
            "mode": {"enum": ["auto", "manual"]},
        },
        "additionalProperties": False,
        "minProperties": 1,
    }
)
POLICY = (
    ("queue-coalesce", "json-keys"),
    ("queue-notify-topic", "gw/trv/result"),
    ("queue-pending-topic", "gw/trv/pending"),
    ("queue-schema", SCHEMA.text),
)
SET = "gw/trv/set"
PAYLOAD_FORMAT_INVALID = 0x99
IMPLEMENTATION_SPECIFIC_ERROR = 0x83


def device(h: Harness, policy: tuple[tuple[str, str], ...] = POLICY, clean: bool = False) -> Client:
    return h.connect(
        "dev-trv",
        V5,
        clean=clean,
        expiry=0 if clean else 3600,
        properties=props(user_properties=policy),
        identity=TRUSTED,
    )


def asleep(h: Harness, policy: tuple[tuple[str, str], ...] = POLICY) -> None:
    d = device(h, policy)
    d.subscribe(SET, qos=1)
    d.disconnect()


def results(c: Client) -> list[dict[str, object]]:
    return [json.loads(p.payload) for p in c.publishes() if p.topic == "gw/trv/result"]


def watcher(h: Harness) -> Client:
    w = h.connect("watcher", V5)
    w.subscribe("gw/trv/result", qos=1)
    return w


def pending(h: Harness) -> list[object]:
    late = h.connect("late", V5)
    late.subscribe("gw/trv/pending", qos=1)
    msgs = late.publishes()
    late.disconnect()
    return [] if not msgs else [e["command"] for e in json.loads(msgs[-1].payload)]


def test_an_invalid_command_never_supersedes_the_valid_one_waiting() -> None:
    """The bug of issue 9 §5: {"target_temp": 99} coalesced away a pending 21.5."""
    h = Harness()
    asleep(h)
    w = watcher(h)
    app = h.connect("app", V311)
    assert only(app.publish(SET, b'{"target_temp": 21.5}', qos=1), PubAck) == [PubAck(1)]
    # A 3.1.1 publisher cannot be told: its normal PUBACK, and the result topic.
    assert only(app.publish(SET, b'{"target_temp": 99}', qos=1), PubAck) == [PubAck(2)]
    (rejected,) = results(w)
    assert rejected["result"] == "rejected"
    assert rejected["reason"] == "invalid"
    assert rejected["detail"] == "target_temp: expected a number 4.5-30 in steps of 0.5, got 99"
    assert rejected["command"] == {"target_temp": 99}
    assert rejected["topic"] == SET and "ts" in rejected
    assert pending(h) == [{"target_temp": 21.5}]
    awake = device(h)
    assert [p.payload for p in awake.publishes()] == [b'{"target_temp": 21.5}']


@pytest.mark.parametrize(
    ("payload", "code", "reason", "words"),
    [
        (b"warm please", PAYLOAD_FORMAT_INVALID, "payload_format", "not JSON"),
        (b"[21.5]", PAYLOAD_FORMAT_INVALID, "payload_format", "a command is a JSON object"),
        (b"{}", IMPLEMENTATION_SPECIFIC_ERROR, "invalid", "empty command"),
        (b'{"fan": 2}', IMPLEMENTATION_SPECIFIC_ERROR, "invalid", "fan: unknown key"),
        (b'{"mode": 1}', IMPLEMENTATION_SPECIFIC_ERROR, "invalid", "mode: expected one of"),
    ],
)
@pytest.mark.parametrize("qos", [1, 2])
def test_mqtt5_publisher_gets_the_reason_code_and_string(
    qos: int, payload: bytes, code: int, reason: str, words: str
) -> None:
    h = Harness()
    asleep(h)
    w = watcher(h)
    app = h.connect("app", V5)
    got = app.publish(SET, payload, qos=qos)
    (ack,) = only(got, PubAck if qos == 1 else PubRec)
    assert ack.reason_code == code
    assert ack.properties.reason_string is not None and words in ack.properties.reason_string
    (rejected,) = results(w)
    assert (rejected["result"], rejected["reason"]) == ("rejected", reason)
    assert words in str(rejected["detail"])
    if qos == 2:
        # A PUBREC >= 0x80 ends the exchange: the packet id is free, nothing was kept.
        assert h.broker.sessions["app"].inbound_qos2 == set()
        assert only(app.send(PubRel(1)), PubComp) == [PubComp(1, 0x92)]
    assert pending(h) == []
    assert device(h).publishes() == []  # never delivered


def test_a_valid_command_gets_the_ordinary_acknowledgement() -> None:
    h = Harness()
    asleep(h)
    app = h.connect("app", V5)
    assert only(app.publish(SET, b'{"target_temp": 20}', qos=1), PubAck) == [PubAck(1)]
    assert only(app.publish(SET, b'{"mode": "auto"}', qos=2), PubRec) == [PubRec(2)]


def test_other_subscribers_still_get_the_message_but_the_device_does_not() -> None:
    h = Harness()
    d = device(h)
    d.subscribe(SET, qos=1)
    logger = h.connect("logger", V5)
    logger.subscribe("gw/#", qos=1)
    app = h.connect("app", V5)
    (ack,) = only(app.publish(SET, b'{"target_temp": 99}', qos=1), PubAck)
    assert ack.reason_code == IMPLEMENTATION_SPECIFIC_ERROR
    assert [p.payload for p in logger.publishes() if p.topic == SET] == [b'{"target_temp": 99}']
    assert d.publishes() == []  # connected, and still refused: checked before the fast path


def test_qos0_commands_to_a_connected_device_are_checked_too() -> None:
    h = Harness()
    d = device(h)
    d.subscribe(SET, qos=1)
    w = watcher(h)
    app = h.connect("app", V311)
    app.publish(SET, b'{"target_temp": 99}', qos=0)
    app.publish(SET, b'{"target_temp": 19}', qos=0)
    assert [p.payload for p in d.publishes()] == [b'{"target_temp": 19}']
    assert [r["result"] for r in results(w)] == ["rejected"]


def test_a_clean_device_session_checks_commands_too() -> None:
    h = Harness()
    d = device(h, (("queue-schema", SCHEMA.text), ("queue-notify-topic", "gw/trv/result")), True)
    d.subscribe(SET, qos=1)
    w = watcher(h)
    app = h.connect("app", V5)
    (ack,) = only(app.publish(SET, b"on", qos=1), PubAck)
    assert ack.reason_code == PAYLOAD_FORMAT_INVALID
    assert [r["result"] for r in results(w)] == ["rejected"]
    assert d.publishes() == []


def test_refusals_are_counted_in_sys_and_are_events() -> None:
    h = Harness()
    asleep(h)
    app = h.connect("app", V311)
    for _ in range(3):
        app.publish(SET, b'{"target_temp": 99}', qos=1)
    assert h.broker.stats.publish_rejected == 3
    sys = h.connect("sys", V311)
    sys.subscribe("$SYS/broker/publish/messages/rejected", qos=0)
    h.broker.publish_sys(h.now)
    h.flush()
    assert [p.payload for p in sys.publishes()] == [b"3"]
    _, events = h.broker.events_since(0)
    rejected = [e for e in events if e["type"] == "rejected"]
    assert len(rejected) == 3 and rejected[0]["client_id"] == "dev-trv"
    assert "target_temp: expected" in str(rejected[0]["detail"])


def test_refusals_are_logged_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    asleep(h)
    app = h.connect("app", V311)
    with caplog.at_level(logging.WARNING, logger="gateway.broker"):
        for _ in range(1500):
            app.publish(SET, b"x", qos=0)
    lines = [r for r in caplog.records if "refused a command" in r.getMessage()]
    assert len(lines) == 2  # the first, and the 1000th


def test_an_oversized_or_binary_payload_is_summarised_in_the_result() -> None:
    h = Harness()
    asleep(h)
    w = watcher(h)
    app = h.connect("app", V311)
    app.publish(SET, b"\xff" * 100_000, qos=1)
    app.publish(SET, json.dumps({"mode": "auto", "x": "y" * 60_000}).encode(), qos=1)
    app.publish(SET, b'{"target_temp": NaN}', qos=1)
    big, stuffed, nan = results(w)
    assert big["reason"] == "invalid" and "at most 65536 bytes" in str(big["detail"])
    assert isinstance(big["command"], str) and len(big["command"]) <= 200
    # A large refused command is not echoed whole to every subscriber of the result topic.
    assert stuffed["detail"].startswith("x: unknown key")  # type: ignore[union-attr]
    assert isinstance(stuffed["command"], str) and len(stuffed["command"]) <= 200
    # NaN is not JSON: the result quotes the payload as text instead.
    assert nan["command"] == '{"target_temp": NaN}'


def test_the_schema_is_part_of_the_durable_policy() -> None:
    h = Harness()
    asleep(h)
    stored = h.store.snapshot().sessions
    (rec,) = [r for r in stored if r.client_id == "dev-trv"]
    assert rec.queue_policy is not None and rec.queue_policy.command_schema == SCHEMA.text
    h2 = Harness(h.settings, now=h.now + 60, store=h.store)
    h2.next_conn = 1000
    h2.restore()
    w = watcher(h2)
    app = h2.connect("app", V5)
    app.publish(SET, b'{"target_temp": 21.5}', qos=1)
    (ack,) = only(app.publish(SET, b'{"target_temp": 99}', qos=1), PubAck)
    assert ack.reason_code == IMPLEMENTATION_SPECIFIC_ERROR  # before the device is back
    assert [r["result"] for r in results(w)] == ["rejected"]
    assert pending(h2) == [{"target_temp": 21.5}]


def test_untrusted_clients_cannot_set_a_schema() -> None:
    h = Harness()
    d = h.connect("dev-trv", V5, clean=False, expiry=3600, properties=props(user_properties=POLICY))
    d.subscribe(SET, qos=1)
    d.disconnect()
    app = h.connect("app", V5)
    assert only(app.publish(SET, b"anything", qos=1), PubAck) == [PubAck(1)]


def test_a_schema_that_does_not_compile_is_ignored_and_said_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness()
    with caplog.at_level(logging.WARNING, logger="gateway.broker"):
        asleep(h, (("queue-schema", '{"type": "array"}'),))
    assert "ignoring queue policy queue-schema" in caplog.text
    assert h.broker.sessions["dev-trv"].policy is None


def test_a_damaged_stored_schema_leaves_commands_unchecked() -> None:
    h = Harness()
    asleep(h)
    s = h.broker.sessions["dev-trv"]
    s.policy = QueuePolicy(command_schema="{not json")
    app = h.connect("app", V5)
    assert only(app.publish(SET, b"x", qos=1), PubAck) == [PubAck(1)]


def test_a_shared_subscription_member_with_a_schema_refuses_too() -> None:
    h = Harness()
    d = device(h)
    d.subscribe("$share/trvs/gw/trv/set", qos=1)
    w = watcher(h)
    app = h.connect("app", V5)
    (ack,) = only(app.publish(SET, b'{"mode": "eco"}', qos=1), PubAck)
    assert ack.reason_code == IMPLEMENTATION_SPECIFIC_ERROR
    assert d.publishes() == [] and [r["result"] for r in results(w)] == ["rejected"]
    assert only(app.publish(SET, b'{"mode": "auto"}', qos=1), PubAck) == [PubAck(2)]
    assert [p.payload for p in d.publishes()] == [b'{"mode": "auto"}']
