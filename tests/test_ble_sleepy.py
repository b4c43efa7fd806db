"""Wake windows of sleepy BLE command devices (devices/ble/sleepy.py), against the real gateway.

The GATT side is an in-memory fake of the `Link`/`GattSession` seam (the real bleak against a
fake BlueZ is exercised in tests/test_ble_thermostat.py); the broker, its persistent sessions
and the commands sent by paho are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from devices.ble.gatt_ops import CommandError, Confirmation, GattStep
from devices.ble.radio import Advertisement, LinkError, LinkErrorKind
from devices.ble.sleepy import GattAdapter, SleepyDevice, WakeSettings
from devices.model import Device
from devices.session import DeviceSession
from tests.device_harness import Harness, payloads, until

ADDRESS = "AA:BB:CC:00:00:01"
WRITE = "0000aaa1-0000-1000-8000-00805f9b34fb"
STATUS = "0000aaa2-0000-1000-8000-00805f9b34fb"
FAST = WakeSettings(connect_timeout=1.0, window=5.0, quiet=0.15, backoff_min=0.05)


class SetpointProfile:
    """A toy thermostat: 0x41 <2·t> sets the target; the device answers 0x02 <2·t>."""

    notify_chars = (STATUS,)

    def __init__(self, confirm_timeout: float = 5.0, *, can_refresh: bool = False) -> None:
        self.confirm_timeout = confirm_timeout
        self.can_refresh = can_refresh

    def plan(self, command: Mapping[str, object]) -> list[GattStep]:
        if set(command) != {"target_temp"} or not isinstance(command["target_temp"], int | float):
            raise CommandError("only target_temp (a number) is understood")
        raw = round(float(command["target_temp"]) * 2)

        def accept(data: bytes) -> bool:
            return data == bytes([0x02, raw])

        confirm = Confirmation(accept, notify=STATUS, timeout=self.confirm_timeout)
        return [GattStep(WRITE, bytes([0x41, raw]), confirm=confirm)]

    def refresh(self) -> list[GattStep]:
        """0x03 asks for the status; the toy device answers with its current setpoint."""
        if not self.can_refresh:
            return []
        confirm = Confirmation(lambda data: data[:1] == b"\x02", notify=STATUS)
        return [GattStep(WRITE, b"\x03", confirm=confirm)]

    def state(self, notification: bytes) -> dict[str, object] | None:
        if len(notification) == 2 and notification[0] == 0x02:
            return {"target_temp": notification[1] / 2}
        return None


class FakeThermostat:
    """The device end: records writes, answers each with a status notification."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.connects = 0
        self.connect_error: LinkErrorKind | None = None
        self.write_errors = 0  # the next writes fail with a GATT error
        self.silent = False  # writes succeed but nothing is notified
        self.target = 40  # 20 °C
        self.connected = False
        self.queues: dict[str, asyncio.Queue[bytes]] = {}


class FakeGatt:
    def __init__(self, device: FakeThermostat) -> None:
        self.device = device

    @property
    def connected(self) -> bool:
        return self.device.connected

    async def write(self, char_uuid: str, data: bytes, *, response: bool = True) -> None:
        if self.device.write_errors:
            self.device.write_errors -= 1
            raise LinkError("gatt", "org.bluez.Error.Failed")
        self.device.writes.append(data)
        if data[0] == 0x41:
            self.device.target = data[1]
        if not self.device.silent and STATUS in self.device.queues:
            self.device.queues[STATUS].put_nowait(bytes([0x02, self.device.target]))

    async def read(self, char_uuid: str) -> bytes:
        raise LinkError("gatt", "not readable")

    async def subscribe(self, char_uuid: str) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.device.queues[char_uuid] = queue
        return queue


class FakeLink:
    def __init__(self, device: FakeThermostat) -> None:
        self.device = device

    @contextlib.asynccontextmanager
    async def connect(self, address: str, *, timeout: float = 10.0) -> AsyncIterator[FakeGatt]:
        if self.device.connect_error is not None:
            raise LinkError(self.device.connect_error, f"{address} is not answering")
        self.device.connects += 1
        self.device.connected = True
        try:
            yield FakeGatt(self.device)
        finally:
            self.device.connected = False
            self.device.queues.clear()


def advert(connectable: bool = True) -> Advertisement:
    return Advertisement(ADDRESS, "TRV", -70, connectable=connectable)


async def make(
    harness: Harness, settings: WakeSettings = FAST, **policy: Any
) -> tuple[SleepyDevice, FakeThermostat, DeviceSession]:
    fake = FakeThermostat()
    device = Device.of_kind("trv", "thermostat", address=ADDRESS, overrides=policy)
    adapter = GattAdapter(SetpointProfile(), FakeLink(fake), ADDRESS, connect_timeout=1.0)
    session = DeviceSession(device, adapter, harness.connect)
    adapter.on_state = session.publish_state
    await session.prime()
    return SleepyDevice(session, adapter, settings), fake, session


async def window(sleepy: SleepyDevice, advertisement: Advertisement | None = None) -> None:
    task = sleepy.advertised(advertisement or advert())
    assert task is not None, "no wake window was opened"
    await task


async def test_five_setpoints_while_asleep_one_write_on_wake(harness: Harness) -> None:
    sleepy, fake, _ = await make(harness)
    results = await harness.observer("gw/trv/result")
    await harness.send_commands(
        "gw/trv/set", *(json.dumps({"target_temp": t}).encode() for t in (18, 19, 20, 21, 21.5))
    )
    await until(lambda: len(payloads(results, "gw/trv/result")) == 4)
    await window(sleepy)
    assert fake.writes == [bytes([0x41, 43])]
    await until(lambda: len(payloads(results, "gw/trv/result")) == 5)
    outcomes = [o["result"] for o in payloads(results, "gw/trv/result")]
    assert outcomes == ["superseded"] * 4 + ["delivered"]
    pending = await harness.observer("gw/trv/pending")
    await until(lambda: bool(pending))
    assert json.loads(pending[-1].payload) == []
    state = await harness.observer("gw/trv/state")  # from the status notification
    await until(lambda: bool(state))
    assert json.loads(state[-1].payload)["target_temp"] == 21.5
    assert not fake.connected and not sleepy.session.awake  # back to sleep


async def test_a_sleeping_device_holds_no_window_containers(harness: Harness) -> None:
    # One of each per declared device: empty sets and lists were 560 B a device that sleeps.
    sleepy, fake, session = await make(harness)
    adapter = sleepy.adapter
    idle = (adapter._received, adapter._pumps, adapter._publishing, session._reports)
    assert idle == (None, None, None, None)
    results = await harness.observer("gw/trv/result")
    await harness.send_commands("gw/trv/set", json.dumps({"target_temp": 20}).encode())
    await window(sleepy)
    await until(lambda: len(payloads(results, "gw/trv/result")) == 1)
    assert fake.writes == [bytes([0x41, 40])]
    assert payloads(results, "gw/trv/result")[0]["result"] == "delivered"
    # The window's notification pumps and state publications end with it.
    assert (adapter._received, adapter._pumps, adapter._publishing) == (None, None, None)
    assert not fake.connected


async def test_no_connection_when_nothing_is_pending(harness: Harness) -> None:
    sleepy, fake, _ = await make(harness)
    await window(sleepy)  # pending unknown at first: one window finds the queue empty
    assert fake.connects == 0  # the GATT link is opened for a command only
    sleepy.pending_changed(0)
    assert sleepy.advertised(advert()) is None
    sleepy.pending_changed(1)
    assert sleepy.advertised(advert(connectable=False)) is None


async def test_unreachable_device_keeps_its_command_uncounted(harness: Harness) -> None:
    sleepy, fake, session = await make(harness, max_attempts=1)
    results = await harness.observer("gw/trv/result")
    await harness.send_commands("gw/trv/set", b'{"target_temp": 20}')
    fake.connect_error = "timeout"
    for _ in range(3):
        await window(sleepy)
        assert sleepy.advertised(advert()) is None  # backing off
        await asyncio.sleep(FAST.backoff(sleepy.failures, "timeout"))
    assert sleepy.failures == 3 and session.failed_attempts == 0
    assert payloads(results, "gw/trv/result") == []  # max_attempts 1, yet not failed
    fake.connect_error = None
    await window(sleepy)
    await until(lambda: len(payloads(results, "gw/trv/result")) == 1)
    assert payloads(results, "gw/trv/result")[0]["result"] == "delivered"
    assert fake.writes == [bytes([0x41, 40])] and sleepy.failures == 0


async def test_write_that_keeps_failing_fails_after_max_attempts(harness: Harness) -> None:
    sleepy, fake, _ = await make(harness, max_attempts=3, coalesce=False)
    results = await harness.observer("gw/trv/result")
    pending = await harness.observer("gw/trv/pending")
    await harness.send_commands("gw/trv/set", b'{"target_temp": 20}', b'{"target_temp": 22}')
    fake.write_errors = 3
    for attempt in range(1, 4):
        await window(sleepy)
        assert sleepy.failures == attempt
        if attempt < 3:  # nothing lost before max_attempts: both still pending
            await until(lambda: bool(pending) and len(json.loads(pending[-1].payload)) == 2)
        await asyncio.sleep(FAST.backoff(sleepy.failures, "gatt"))
    # The failure did not block the queue: the next command went out in the same window.
    await until(lambda: len(payloads(results, "gw/trv/result")) == 2)
    failed, delivered = payloads(results, "gw/trv/result")
    assert (failed["result"], failed["reason"], failed["attempts"]) == ("failed", "max_attempts", 3)
    assert (delivered["result"], delivered["command"]) == ("delivered", {"target_temp": 22})
    assert fake.writes == [bytes([0x41, 44])]


async def test_unconfirmed_write_is_an_attempt_and_comes_again(harness: Harness) -> None:
    sleepy, fake, session = await make(harness)
    results = await harness.observer("gw/trv/result")
    await harness.send_commands("gw/trv/set", b'{"target_temp": 19.5}')
    fake.silent = True
    sleepy.adapter.profile = SetpointProfile(confirm_timeout=0.2)
    await window(sleepy)
    assert session.failed_attempts == 1 and len(fake.writes) == 1
    assert payloads(results, "gw/trv/result") == []
    fake.silent = False
    await asyncio.sleep(FAST.backoff(sleepy.failures, "timeout"))
    await window(sleepy)
    await until(lambda: len(payloads(results, "gw/trv/result")) == 1)
    delivered = payloads(results, "gw/trv/result")[0]
    assert (delivered["result"], delivered["attempts"]) == ("delivered", 2)
    assert fake.writes == [bytes([0x41, 39])] * 2


async def test_invalid_command_fails_without_touching_the_radio(harness: Harness) -> None:
    sleepy, fake, _ = await make(harness)
    results = await harness.observer("gw/trv/result")
    await harness.send_commands("gw/trv/set", b'{"colour": "red"}')
    await window(sleepy)
    await until(lambda: len(payloads(results, "gw/trv/result")) == 1)
    failed = payloads(results, "gw/trv/result")[0]
    assert (failed["result"], failed["reason"]) == ("failed", "invalid")
    assert fake.connects == 0 and sleepy.failures == 0


async def test_commands_wait_across_a_gateway_restart(harness: Harness) -> None:
    sleepy, fake, _ = await make(harness)
    await harness.send_commands("gw/trv/set", b'{"target_temp": 17}')
    await harness.restart()
    await harness.send_commands("gw/trv/set", b'{"target_temp": 23}')
    sleepy, fake, _ = await make(harness)  # the supervisor's start after a restart
    await window(sleepy)
    assert fake.writes == [bytes([0x41, 46])]


async def test_device_that_never_reported_is_asked_for_its_state(harness: Harness) -> None:
    now = [100.0]
    fake = FakeThermostat()
    device = Device.of_kind("trv", "thermostat", address=ADDRESS)
    profile = SetpointProfile(can_refresh=True)
    adapter = GattAdapter(profile, FakeLink(fake), ADDRESS)
    session = DeviceSession(device, adapter, harness.connect)
    adapter.on_state = session.publish_state
    await session.prime()
    settings = WakeSettings(quiet=0.1, refresh_interval=600)
    sleepy = SleepyDevice(session, adapter, settings, clock=lambda: now[0])
    sleepy.pending_changed(0)  # nothing to deliver
    state = await harness.observer("gw/trv/state")
    await window(sleepy)
    assert fake.writes == [b"\x03"] and not session.awake  # no MQTT wake was needed
    await until(lambda: bool(state))
    assert json.loads(state[-1].payload)["target_temp"] == 20
    now[0] += 599
    assert sleepy.advertised(advert()) is None  # fresh enough
    now[0] += 1
    await window(sleepy)
    assert fake.writes == [b"\x03", b"\x03"]


async def test_backoff_grows_and_is_capped() -> None:
    settings = WakeSettings(backoff_min=2, backoff_max=60)
    assert [settings.backoff(n, "timeout") for n in (1, 2, 3, 6)] == [2, 4, 8, 60]
    assert settings.backoff(1, "gatt") == 8
