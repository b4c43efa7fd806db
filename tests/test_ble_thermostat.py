"""A sleeping eQ-3 thermostat and its commands, end to end: the gateway as users run it, the
real bleak, a fake BlueZ on a private D-Bus, paho as the user's client (DESIGN §3).

The gateway runs as a subprocess (so it can be killed with SIGKILL) and finds the fake BlueZ
through DBUS_SYSTEM_BUS_ADDRESS; the thermostat answers GATT writes with the status
notifications of the real protocol (tests/fake_eq3.py). The fake BlueZ lives in this test's
event loop, so the gateway is started from a thread: its BLE start-up talks to the fake.
"""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fake_eq3 import FakeEq3
from fakebluez import FakeBlueZ

from devices.ble import eq3
from tests.conftest import ProcessGateway, free_port, write_config
from tests.paho_helpers import V5, Client

ADDRESS = "00:1A:22:0A:BC:01"


class Observer:
    """A persistent paho session on gw/trv/#: it keeps receiving across gateway restarts."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[tuple[str, bytes]] = []
        self.client: Client | None = None

    async def connect(self) -> None:
        def connect() -> Client:
            client = Client(self.port, "observer", clean=False)
            client.subscribe("gw/trv/#", 1)
            return client

        self.client = await asyncio.to_thread(connect)

    def _drain(self) -> None:
        assert self.client is not None
        while True:
            try:
                m = self.client.messages.get_nowait()
            except queue.Empty:
                return
            self.messages.append((m.topic, bytes(m.payload)))

    def results(self) -> list[dict[str, Any]]:
        """Each result once: QoS 1 redelivers what was in flight when the link broke."""
        self._drain()
        unique = dict.fromkeys(p for t, p in self.messages if t == "gw/trv/result")
        return [json.loads(p) for p in unique]

    def last(self, topic: str) -> bytes | None:
        self._drain()
        return next((p for t, p in reversed(self.messages) if t == topic), None)

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"condition not met; received: {self.messages[-12:]}")
            await asyncio.sleep(0.05)

    def lost(self) -> None:
        assert self.client is not None
        self.client.drop()

    async def close(self) -> None:
        if self.client is not None:
            await asyncio.to_thread(self.client.disconnect)


async def send(port: int, *targets: float) -> None:
    def publish() -> None:
        client = Client(port, "phone")
        try:
            for target in targets:
                client.publish("gw/trv/set", json.dumps({"target_temp": target}), qos=1)
        finally:
            client.disconnect()

    await asyncio.to_thread(publish)


def thermostat_config(tmp_path: Path, port: int, **policy: Any) -> Path:
    trv = {"kind": "eq3", "address": ADDRESS, **policy}
    return write_config(
        tmp_path,
        port,
        {"devices": {"lan": {"enabled": False}, "known": {"trv": trv}}},
    )


async def test_sleeping_thermostat_gets_only_the_last_setpoint_across_a_kill(
    tmp_path: Path, system_bus: str
) -> None:
    """Five setpoints while asleep, SIGKILL and restart in between; the thermostat wakes:
    exactly one GATT write (the last setpoint), superseded 4 times then delivered once, nothing
    pending."""
    port = free_port()
    gateway = ProcessGateway(thermostat_config(tmp_path, port), port)
    observer = Observer(port)
    async with FakeBlueZ(system_bus) as bluez:
        trv = FakeEq3(bluez, ADDRESS)
        try:
            await asyncio.to_thread(gateway.start)
            await observer.connect()
            # The device session exists (primed) once it says it can take commands.
            await observer.until(lambda: observer.last("gw/trv/availability") == b"online")
            await send(port, 18, 19, 20)
            await observer.until(lambda: len(observer.results()) == 2)

            gateway.kill()
            observer.lost()
            await asyncio.to_thread(gateway.start)
            await observer.connect()  # same persistent session: results queued meanwhile
            await send(port, 21, 21.5)
            await observer.until(lambda: len(observer.results()) == 4)
            assert trv.writes == []

            trv.wake()
            await observer.until(lambda: len(observer.results()) == 5, timeout=20)
            results = observer.results()
            assert [r["result"] for r in results] == ["superseded"] * 4 + ["delivered"]
            assert [r["command"]["target_temp"] for r in results[:4]] == [18, 19, 20, 21]
            assert results[4]["command"] == {"target_temp": 21.5}
            assert trv.writes == [bytes([eq3.OP_TARGET, 43])]  # one write: 21.5 °C
            assert trv.status.target_temp == 21.5
            await observer.until(lambda: observer.last("gw/trv/pending") == b"[]")
            # The status notification that confirmed the write is the device's state.
            await observer.until(lambda: observer.last("gw/trv/state") is not None)
            state = json.loads(observer.last("gw/trv/state") or b"{}")
            assert state["target_temp"] == 21.5 and state["mode"] == "auto"
            await asyncio.sleep(0.5)
            assert len(trv.writes) == 1  # and nothing was sent again
        finally:
            trv.sleep()
            await observer.close()
            gateway.stop_if_running()


async def test_command_for_a_thermostat_that_never_wakes_expires(
    tmp_path: Path, system_bus: str
) -> None:
    port = free_port()
    gateway = ProcessGateway(thermostat_config(tmp_path, port, command_ttl=1), port)
    observer = Observer(port)
    async with FakeBlueZ(system_bus):
        try:
            await asyncio.to_thread(gateway.start)
            await observer.connect()
            await observer.until(lambda: observer.last("gw/trv/availability") == b"online")
            await send(port, 22)
            await observer.until(lambda: len(observer.results()) == 1)
            expired = observer.results()[0]
            assert expired["result"] == "expired"
            assert expired["command"] == {"target_temp": 22}
            await observer.until(lambda: observer.last("gw/trv/pending") == b"[]")
        finally:
            await observer.close()
            gateway.stop_if_running()


async def test_write_that_keeps_failing_fails_after_max_attempts(
    tmp_path: Path, system_bus: str
) -> None:
    port = free_port()
    config = write_config(
        tmp_path,
        port,
        {
            "devices": {
                "lan": {"enabled": False},
                "ble": {"retry_backoff": 0.2},
                "known": {"trv": {"kind": "eq3", "address": ADDRESS, "max_attempts": 3}},
            }
        },
    )
    gateway = ProcessGateway(config, port)
    observer = Observer(port)
    async with FakeBlueZ(system_bus) as bluez:
        trv = FakeEq3(bluez, ADDRESS, write_errors=["org.bluez.Error.Failed"] * 3)
        try:
            await asyncio.to_thread(gateway.start)
            await observer.connect()
            await observer.until(lambda: observer.last("gw/trv/availability") == b"online")
            await send(port, 19)
            trv.wake()
            # Nothing is lost before the last attempt: the command stays pending meanwhile.
            await observer.until(lambda: len(trv.write_errors) == 1, timeout=30)
            assert observer.results() == []
            assert b"19" in (observer.last("gw/trv/pending") or b"")
            await observer.until(lambda: len(observer.results()) == 1, timeout=30)
            failed = observer.results()[0]
            assert (failed["result"], failed["reason"], failed["attempts"]) == (
                "failed",
                "max_attempts",
                3,
            )
            assert trv.writes == []  # every write was refused
            # The queue is not blocked: the next command goes through.
            await send(port, 20.5)
            await observer.until(lambda: len(observer.results()) == 2, timeout=30)
            assert observer.results()[1]["result"] == "delivered"
            assert trv.writes == [bytes([eq3.OP_TARGET, 41])]
        finally:
            trv.sleep()
            await observer.close()
            gateway.stop_if_running()


async def test_thermostat_nobody_commanded_reports_its_state_when_it_wakes(
    tmp_path: Path, system_bus: str
) -> None:
    port = free_port()
    gateway = ProcessGateway(thermostat_config(tmp_path, port), port)
    observer = Observer(port)
    async with FakeBlueZ(system_bus) as bluez:
        trv = FakeEq3(bluez, ADDRESS, status=eq3.Eq3Status(target_temp=17.5, valve=12))
        try:
            await asyncio.to_thread(gateway.start)
            await observer.connect()
            await observer.until(lambda: observer.last("gw/trv/availability") == b"online")
            trv.wake()
            await observer.until(lambda: observer.last("gw/trv/state") is not None)
            state = json.loads(observer.last("gw/trv/state") or b"{}")
            assert (state["target_temp"], state["valve"]) == (17.5, 12)
            # One status request (which also set the thermostat's clock), no command.
            assert [w[0] for w in trv.writes] == [eq3.OP_STATUS_REQUEST]
            assert len(trv.writes[0]) == 7
            assert observer.results() == []
        finally:
            trv.sleep()
            await observer.close()
            gateway.stop_if_running()


async def test_command_sent_the_moment_a_new_gateway_serves_waits_for_the_device(
    tmp_path: Path, system_bus: str
) -> None:
    """At the very first start the device's session does not exist yet: the listeners take
    clients only once it does, so a command sent as soon as the port answers is queued."""
    port = free_port()
    gateway = ProcessGateway(thermostat_config(tmp_path, port), port)
    observer = Observer(port)
    async with FakeBlueZ(system_bus) as bluez:
        trv = FakeEq3(bluez, ADDRESS)
        try:
            await asyncio.to_thread(gateway.start)  # returns once the TCP port accepts
            await send(port, 19.5)
            await observer.connect()
            trv.wake()
            await observer.until(lambda: len(observer.results()) == 1, timeout=20)
            assert observer.results()[0]["result"] == "delivered"
            assert bytes([eq3.OP_TARGET, 39]) in trv.writes
        finally:
            trv.sleep()
            await observer.close()
            gateway.stop_if_running()


async def test_invalid_command_is_rejected_at_once_and_the_valid_one_is_written_at_wake(
    tmp_path: Path, system_bus: str
) -> None:
    """Issue 9 §5: {"target_temp": 99} (the eQ-3 takes 4.5-30) used to wait for the wake and
    to supersede the valid 21.5 on its way; now it is refused before it is queued, each
    publisher is told in its own protocol, and the thermostat gets 21.5."""
    port = free_port()
    gateway = ProcessGateway(thermostat_config(tmp_path, port), port)
    observer = Observer(port)
    async with FakeBlueZ(system_bus) as bluez:
        trv = FakeEq3(bluez, ADDRESS)
        try:
            await asyncio.to_thread(gateway.start)
            await observer.connect()
            await observer.until(lambda: observer.last("gw/trv/availability") == b"online")
            await send(port, 21.5)
            await observer.until(lambda: b"21.5" in (observer.last("gw/trv/pending") or b""))
            lists_before = sum(1 for t, _ in observer.messages if t == "gw/trv/pending")

            def publish_invalid() -> dict[str, Any]:
                v311 = Client(port, "phone-311")
                v5 = Client(port, "phone-5", version=V5)
                try:
                    old = v311.publish("gw/trv/set", '{"target_temp": 99}', qos=1)
                    new = v5.publish("gw/trv/set", '{"target_temp": 99}', qos=1)
                    text = v5.publish("gw/trv/set", "warmer please", qos=1)
                    return {
                        "3.1.1": int(v311.pubacks[old.mid].value),
                        "5": int(v5.pubacks[new.mid].value),
                        "5 reason": v5.puback_properties[new.mid].ReasonString,
                        "5 not JSON": int(v5.pubacks[text.mid].value),
                    }
                finally:
                    v311.disconnect()
                    v5.disconnect()

            acks = await asyncio.to_thread(publish_invalid)
            assert acks["3.1.1"] == 0  # 3.1.1 has no way to say no: the result topic tells
            assert acks["5"] == 0x83
            reason = "target_temp: expected a number 4.5-30 in steps of 0.5, got 99"
            assert acks["5 reason"] == reason
            assert acks["5 not JSON"] == 0x99
            await observer.until(lambda: len(observer.results()) == 3)
            rejected = observer.results()
            assert [(r["result"], r["reason"]) for r in rejected] == [
                ("rejected", "invalid"),
                ("rejected", "invalid"),
                ("rejected", "payload_format"),
            ]
            assert rejected[0]["command"] == {"target_temp": 99}
            assert trv.writes == []  # nothing went to the sleeping thermostat
            await asyncio.sleep(0.3)
            pending = json.loads(observer.last("gw/trv/pending") or b"[]")
            assert [p["command"] for p in pending] == [{"target_temp": 21.5}]
            assert sum(1 for t, _ in observer.messages if t == "gw/trv/pending") == lists_before

            trv.wake()
            await observer.until(lambda: len(observer.results()) == 4, timeout=20)
            delivered = observer.results()[3]
            assert delivered["result"] == "delivered"
            assert delivered["command"] == {"target_temp": 21.5}
            assert trv.writes == [bytes([eq3.OP_TARGET, 43])]  # 21.5 °C, and nothing else
        finally:
            trv.sleep()
            await observer.close()
            gateway.stop_if_running()
