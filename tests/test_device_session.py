"""Device sessions against the real gateway: availability, state, and commands that wait in a
persistent broker session while the device sleeps (DESIGN §2-3).

Commands are sent by paho-mqtt (a real, independent client, run in a worker thread because it
blocks); the gateway runs in the test's event loop and the device session reaches it over the
in-process transport.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest

from devices.model import Device, DevicePolicy, InvalidCommand, PolicyError
from devices.session import DeviceSession
from gateway.client.mqtt import MQTTClient
from gateway.commands.schema import CommandSchema
from gateway.mqtt.packets import Properties
from tests.device_harness import Harness, payloads, until


class RecordingAdapter:
    """Confirms every command, except that the first ``fail`` attempts raise."""

    def __init__(self, fail: int = 0) -> None:
        self.executed: list[dict[str, object]] = []
        self.attempts = 0
        self.fail = fail

    async def execute(self, command: dict[str, object]) -> None:
        self.attempts += 1
        if self.fail:
            self.fail -= 1
            raise RuntimeError("GATT write not confirmed")
        self.executed.append(command)


def thermostat(device_id: str = "trv1", **overrides: Any) -> Device:
    return Device.of_kind(device_id, "thermostat", overrides=overrides)


async def test_state_and_availability_are_retained(harness: Harness) -> None:
    session = DeviceSession(Device.of_kind("temp1", "bthome"), RecordingAdapter(), harness.connect)
    await session.wake()
    await session.publish_state({"temperature": 21.5, "humidity": 40})
    seen = await harness.observer("gw/temp1/#")  # subscribes afterwards: retained only
    await until(lambda: len(seen) == 2)
    by_topic = {m.topic: m for m in seen}
    assert by_topic["gw/temp1/availability"].payload == b"online"
    assert by_topic["gw/temp1/availability"].retain
    state = json.loads(by_topic["gw/temp1/state"].payload)
    assert state["temperature"] == 21.5 and state["humidity"] == 40
    assert isinstance(state["ts"], float)
    assert by_topic["gw/temp1/state"].retain

    # Sleeping on schedule keeps the device "online" (a clean DISCONNECT drops the will) ...
    await session.sleep()
    await asyncio.sleep(0.1)
    assert [m.payload for m in seen if m.topic == "gw/temp1/availability"] == [b"online"]
    # ... a device that is gone is "offline".
    await session.go_offline()
    await until(lambda: seen[-1].payload == b"offline")
    assert seen[-1].topic == "gw/temp1/availability"


async def test_broken_link_publishes_the_will(harness: Harness) -> None:
    session = DeviceSession(thermostat(), RecordingAdapter(), harness.connect)
    await session.wake()
    seen = await harness.observer("gw/trv1/availability")
    await until(lambda: len(seen) == 1)
    client = session._client
    assert client is not None
    await client.close()  # the link breaks without DISCONNECT
    await until(lambda: len(seen) == 2)
    assert seen[1].payload == b"offline"
    assert not session.awake


async def test_commands_sent_while_asleep_are_delivered_in_order_on_wake(
    harness: Harness,
) -> None:
    adapter = RecordingAdapter()
    session = DeviceSession(thermostat(coalesce=False), adapter, harness.connect)
    await session.wake()  # first contact: creates the persistent session and subscription
    await session.sleep()
    results = await harness.observer("gw/trv1/result")

    commands = [{"target_temp": 19.0}, {"mode": "auto"}, {"target_temp": 21.5}]
    await harness.send_commands("gw/trv1/set", *(json.dumps(c).encode() for c in commands))
    await asyncio.sleep(0.1)
    assert adapter.executed == []  # asleep: nothing may reach the device

    await session.wake()
    await until(lambda: len(payloads(results, "gw/trv1/result")) == 3)
    assert adapter.executed == commands
    outcomes = payloads(results, "gw/trv1/result")
    assert [o["result"] for o in outcomes] == ["delivered"] * 3
    assert [o["command"] for o in outcomes] == commands
    assert await session.wait_quiet(0.1)
    await session.sleep()

    # All three were acknowledged: the next wake brings nothing.
    await session.wake()
    assert await session.wait_quiet(0.2)
    assert adapter.attempts == 3
    await session.sleep()


async def test_unconfirmed_command_is_redelivered_on_next_wake(harness: Harness) -> None:
    adapter = RecordingAdapter(fail=1)
    session = DeviceSession(thermostat(coalesce=False), adapter, harness.connect)
    await session.wake()
    await session.sleep()
    results = await harness.observer("gw/trv1/result")
    await harness.send_commands("gw/trv1/set", b'{"target_temp": 20}', b'{"lock": true}')

    await session.wake()
    assert await session.wait_quiet(0.2)
    # The first write failed; the second must not overtake it.
    assert adapter.attempts == 1 and adapter.executed == []
    assert session.last_error is not None and "GATT" in session.last_error
    assert payloads(results, "gw/trv1/result") == []
    await session.sleep()

    await session.wake()
    await until(lambda: len(adapter.executed) == 2)
    assert adapter.executed == [{"target_temp": 20}, {"lock": True}]
    await until(lambda: len(payloads(results, "gw/trv1/result")) == 2)
    assert [o["result"] for o in payloads(results, "gw/trv1/result")] == ["delivered"] * 2
    await session.sleep()


async def test_command_fails_for_good_after_max_attempts(harness: Harness) -> None:
    adapter = RecordingAdapter(fail=2)
    session = DeviceSession(thermostat(coalesce=False, max_attempts=2), adapter, harness.connect)
    await session.wake()
    await session.sleep()
    results = await harness.observer("gw/trv1/result")
    await harness.send_commands("gw/trv1/set", b'{"target_temp": 30}', b'{"target_temp": 21}')

    await session.wake()
    assert await session.wait_quiet(0.2)
    assert adapter.attempts == 1 and payloads(results, "gw/trv1/result") == []
    await session.sleep()

    await session.wake()  # second failure: given up, and the next command goes through
    await until(lambda: len(payloads(results, "gw/trv1/result")) == 2)
    failed, delivered = payloads(results, "gw/trv1/result")
    assert failed["result"] == "failed" and failed["reason"] == "max_attempts"
    assert failed["command"] == {"target_temp": 30} and failed["attempts"] == 2
    assert "GATT" in failed["detail"]
    assert delivered["result"] == "delivered" and delivered["command"] == {"target_temp": 21}
    assert adapter.executed == [{"target_temp": 21}]
    await session.sleep()

    await session.wake()  # the failed command is gone from the queue
    assert await session.wait_quiet(0.2)
    assert adapter.attempts == 3
    await session.sleep()


async def test_prime_creates_the_queue_without_running_commands(harness: Harness) -> None:
    adapter = RecordingAdapter()
    session = DeviceSession(thermostat(), adapter, harness.connect)
    availability = await harness.observer("gw/trv1/availability")
    assert not await session.prime()  # a new session, subscribed, and "online"
    await until(lambda: [m.payload for m in availability] == [b"online"])
    await harness.send_commands("gw/trv1/set", b'{"target_temp": 20}')
    assert await session.prime()  # existing session: the queued command is not run
    await asyncio.sleep(0.1)
    assert adapter.attempts == 0 and not session.awake
    await session.wake()
    await until(lambda: adapter.executed == [{"target_temp": 20}])
    await session.sleep()


async def test_clean_policy_device_gets_nothing_queued_while_asleep(harness: Harness) -> None:
    adapter = RecordingAdapter()
    device = Device("plug1", "sensor", policy=DevicePolicy(session="clean"))
    session = DeviceSession(device, adapter, harness.connect)
    await session.wake()
    await session.sleep()
    await harness.send_commands("gw/plug1/set", b'{"on": true}')
    await session.wake()
    await asyncio.sleep(0.2)
    assert adapter.attempts == 0
    await session.sleep()


async def test_commands_survive_a_gateway_restart(harness: Harness) -> None:
    adapter = RecordingAdapter()
    session = DeviceSession(thermostat(coalesce=False), adapter, harness.connect)
    await session.wake()
    await session.sleep()
    commands = [{"target_temp": 18}, {"target_temp": 19}, {"target_temp": 20}]
    await harness.send_commands("gw/trv1/set", *(json.dumps(c).encode() for c in commands))

    for client in harness.clients:
        await client.close()
    harness.clients.clear()
    await harness.restart()

    results = await harness.observer("gw/trv1/result")
    await session.wake()
    await until(lambda: len(payloads(results, "gw/trv1/result")) == 3)
    assert adapter.executed == commands
    await session.sleep()


async def test_sleeping_thermostat_gets_only_the_last_of_five_setpoints(
    harness: Harness,
) -> None:
    """DESIGN §3: five setpoints while asleep, the gateway restarted in between; at wake-up
    one execution with the last setpoint, results superseded x4 + delivered x1."""
    adapter = RecordingAdapter()
    session = DeviceSession(thermostat(), adapter, harness.connect)  # coalesce on by default
    await session.wake()
    await session.sleep()
    results = await harness.observer("gw/trv1/result")
    setpoints = [19.0, 19.5, 20.0]
    await harness.send_commands(
        "gw/trv1/set", *(json.dumps({"target_temp": t}).encode() for t in setpoints)
    )
    await until(lambda: len(payloads(results, "gw/trv1/result")) == 2)

    for client in harness.clients:
        await client.close()
    harness.clients.clear()
    await harness.restart()
    results = await harness.observer("gw/trv1/result")
    # The policy comes with the device session's CONNECT: until the device is heard from
    # again after the restart, commands are queued and coalesced at its next connect.
    await session.prime()
    more = [20.5, 21.5]
    await harness.send_commands(
        "gw/trv1/set", *(json.dumps({"target_temp": t}).encode() for t in more)
    )
    await until(lambda: len(payloads(results, "gw/trv1/result")) == 2)

    await session.wake()
    await until(
        lambda: any(o["result"] == "delivered" for o in payloads(results, "gw/trv1/result"))
    )
    assert await session.wait_quiet(0.2)
    assert adapter.executed == [{"target_temp": 21.5}]
    outcomes = payloads(results, "gw/trv1/result")
    assert [o["result"] for o in outcomes] == ["superseded", "superseded", "delivered"]
    pending = await harness.observer("gw/trv1/pending")  # retained: the current list
    await until(lambda: bool(pending))
    assert json.loads(pending[-1].payload) == []
    await session.sleep()


async def test_invalid_command_is_answered_and_not_retried(harness: Harness) -> None:
    adapter = RecordingAdapter()
    session = DeviceSession(thermostat(), adapter, harness.connect)
    await session.wake()
    results = await harness.observer("gw/trv1/result")
    await harness.send_commands("gw/trv1/set", b"not json", b"[1, 2]", b'{"ok": 1}')
    await until(lambda: len(payloads(results, "gw/trv1/result")) == 3)
    outcomes = payloads(results, "gw/trv1/result")
    assert [(o["result"], o.get("reason")) for o in outcomes] == [
        ("failed", "invalid"),
        ("failed", "invalid"),
        ("delivered", None),
    ]
    assert outcomes[0]["payload"] == "not json"
    assert adapter.executed == [{"ok": 1}]
    await session.sleep()
    await session.wake()
    assert await session.wait_quiet(0.2)
    assert adapter.attempts == 1
    await session.sleep()


class PickyAdapter(RecordingAdapter):
    """Refuses commands it can never express, as a device family's encoder does."""

    async def execute(self, command: dict[str, object]) -> None:
        self.attempts += 1
        if "colour" in command:
            raise InvalidCommand("'colour' is not a command key of this device")
        self.executed.append(command)


async def test_command_the_adapter_can_never_express_fails_at_once(harness: Harness) -> None:
    adapter = PickyAdapter()
    session = DeviceSession(thermostat(max_attempts=5), adapter, harness.connect)
    await session.wake()
    results = await harness.observer("gw/trv1/result")
    await harness.send_commands("gw/trv1/set", b'{"colour": "red"}', b'{"target_temp": 20}')
    await until(lambda: len(payloads(results, "gw/trv1/result")) == 2)
    failed, delivered = payloads(results, "gw/trv1/result")
    assert (failed["result"], failed["reason"]) == ("failed", "invalid")
    assert "colour" in failed["detail"]
    assert delivered["result"] == "delivered"
    assert adapter.attempts == 2  # one try each: the refused command was not retried
    await session.sleep()


SETPOINT = CommandSchema.from_data(
    {
        "type": "object",
        "properties": {"target_temp": {"type": "number", "minimum": 5, "maximum": 30}},
        "additionalProperties": False,
        "minProperties": 1,
    }
)


async def test_sleeping_device_with_a_schema_has_bad_commands_refused_before_the_queue(
    harness: Harness,
) -> None:
    adapter = RecordingAdapter()
    device = dataclasses.replace(thermostat(), schema=SETPOINT)
    session = DeviceSession(device, adapter, harness.connect)
    assert not await session.prime()  # the broker learns the schema now, not at the wake
    results = await harness.observer("gw/trv1/result")
    await harness.send_commands(
        "gw/trv1/set", b'{"target_temp": 21}', b'{"target_temp": 99}', b"hot", b'{"fan": 1}'
    )
    await until(lambda: len(payloads(results, "gw/trv1/result")) == 3)
    assert [(r["result"], r["reason"]) for r in payloads(results, "gw/trv1/result")] == [
        ("rejected", "invalid"),
        ("rejected", "payload_format"),
        ("rejected", "invalid"),
    ]
    await session.wake()
    await until(lambda: len(payloads(results, "gw/trv1/result")) == 4)
    assert adapter.executed == [{"target_temp": 21}]  # 99 did not supersede it
    await session.sleep()


async def test_clean_device_that_takes_commands_gets_them_while_connected(
    harness: Harness,
) -> None:
    adapter = RecordingAdapter()
    device = Device("plug1", "shelly", policy=DevicePolicy(session="clean"), schema=SETPOINT)
    session = DeviceSession(device, adapter, harness.connect)
    results = await harness.observer("gw/plug1/result")
    await session.wake()
    await harness.send_commands("gw/plug1/set", b'{"target_temp": 40}', b'{"target_temp": 20}')
    await until(lambda: len(payloads(results, "gw/plug1/result")) == 2)
    rejected, delivered = payloads(results, "gw/plug1/result")
    assert (rejected["result"], delivered["result"]) == ("rejected", "delivered")
    assert adapter.executed == [{"target_temp": 20}]
    # Away, it has no queue: nothing waits for it.
    await session.sleep()
    await harness.send_commands("gw/plug1/set", b'{"target_temp": 21}')
    await session.wake()
    await asyncio.sleep(0.2)
    assert adapter.executed == [{"target_temp": 20}]
    await session.sleep()


async def test_mqtt5_requester_gets_result_on_its_response_topic(harness: Harness) -> None:
    session = DeviceSession(thermostat(), RecordingAdapter(), harness.connect)
    await session.wake()
    replies = await harness.observer("app/replies")
    requester = MQTTClient(harness.connect)
    await requester.connect("requester")
    props = Properties(response_topic="app/replies", correlation_data=b"req-7")
    await requester.publish("gw/trv1/set", b'{"target_temp": 22}', qos=1, properties=props)
    await until(lambda: len(replies) == 1)
    assert json.loads(replies[0].payload)["result"] == "delivered"
    assert replies[0].properties.correlation_data == b"req-7"
    await requester.disconnect()
    await session.sleep()


async def test_missed_wakes_mark_a_sleeping_device_offline(harness: Harness) -> None:
    now = [1000.0]
    adapter = RecordingAdapter()
    session = DeviceSession(
        thermostat(wake_interval=60), adapter, harness.connect, clock=lambda: now[0]
    )
    await session.wake()
    await session.sleep()
    seen = await harness.observer("gw/trv1/availability")
    await until(lambda: len(seen) == 1)
    now[0] += 60 * 3  # exactly on the limit: still on schedule
    assert not await session.check_presence()
    now[0] += 1
    assert await session.check_presence()
    await until(lambda: len(seen) == 2)
    assert seen[1].payload == b"offline"
    late = await harness.observer("gw/trv1/availability")
    await until(lambda: len(late) == 1)
    assert late[0].payload == b"offline" and late[0].retain
    assert not await session.check_presence()  # said once

    # State published while asleep uses a separate link: no command is pulled meanwhile.
    await harness.send_commands("gw/trv1/set", b'{"target_temp": 17}')
    await session.publish_state({"temperature": 16.0})
    await until(lambda: len(seen) == 3)
    assert seen[2].payload == b"online"  # heard from again: back online
    await asyncio.sleep(0.1)
    assert adapter.attempts == 0

    await session.wake()
    await until(lambda: len(seen) == 4)
    assert seen[3].payload == b"online"
    await until(lambda: adapter.executed == [{"target_temp": 17}])
    await session.close()


async def test_silent_sensor_goes_offline_and_comes_back_with_its_next_reading(
    harness: Harness,
) -> None:
    now = [1000.0]
    sensor = Device.of_kind("t1", "bthome", overrides={"wake_interval": 60})
    session = DeviceSession(sensor, RecordingAdapter(), harness.connect, clock=lambda: now[0])
    await session.wake()  # a reporting sensor's session stays connected between readings
    await session.publish_state({"temperature": 20.0})
    seen = await harness.observer("gw/t1/availability")
    await until(lambda: len(seen) == 1)
    now[0] += 60 * 3 + 1
    assert await session.check_presence()
    await until(lambda: len(seen) == 2)
    assert seen[1].payload == b"offline" and not session.awake
    await session.wake()  # what the supervisor does with the next reading
    await until(lambda: len(seen) == 3)
    assert seen[2].payload == b"online"
    await session.close()


# --- device model -------------------------------------------------------------------------


def test_kind_defaults_and_overrides() -> None:
    sensor = Device.of_kind("t1", "bthome")
    assert sensor.policy.session == "clean" and not sensor.policy.persistent
    trv = Device.of_kind("trv", "thermostat", name="Living room")
    assert trv.policy.persistent and trv.policy.coalesce and trv.policy.wake_interval
    assert trv.name == "Living room"
    assert Device.of_kind("x", "no-such-kind").policy == DevicePolicy()
    custom = Device.of_kind("trv", "thermostat", overrides={"queue_depth": 5, "coalesce": False})
    assert custom.policy.queue_depth == 5 and not custom.policy.coalesce
    assert custom.policy.command_ttl == trv.policy.command_ttl  # the rest from the kind


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"session": "sometimes"}, "session"),
        ({"overflow": "drop-newest"}, "overflow"),
        ({"queue_depth": 0}, "queue_depth"),
        ({"max_attempts": True}, "max_attempts"),
        ({"command_ttl": "1h"}, "command_ttl"),
        ({"wake_interval": -5}, "wake_interval"),
        ({"coalesce": "yes"}, "coalesce"),
        ({"queue_size": 3}, "queue_size"),
    ],
)
def test_bad_policy_is_refused_naming_the_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(PolicyError, match=f"^{key}:"):
        DevicePolicy().with_overrides(overrides)


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#", "with space", "$sys"])
def test_device_id_must_be_one_topic_level(bad: str) -> None:
    with pytest.raises(ValueError, match="device id"):
        Device(bad, "sensor")
