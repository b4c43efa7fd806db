"""The demo's BLE devices: a BTHome sensor and an eQ-3 thermostat, behind a fake radio and link.

`DemoRadio` and `DemoLink` implement the seam of devices/ble/radio.py, so the supervisor
drives these devices exactly as it drives real ones: the sensor's advertisements go through
the BTHome parser, the thermostat's wake windows through the sleepy-device logic and the eQ-3
command plan. Only the bytes on the air are made up here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace

from devices.ble.eq3 import NOTIFY_CHAR, WRITE_CHAR, Eq3Status, apply_command, encode_status
from devices.ble.radio import BTHOME_UUID, Advertisement, AdvertisementCallback, LinkError

# BTHome v2 object ids (https://bthome.io/format/); objects go in ascending id order.
_PACKET_ID = 0x00
_BATTERY = 0x01
_TEMPERATURE = 0x02
_HUMIDITY = 0x03
_DEVICE_INFO = 0x40  # version 2, not encrypted, sent at regular intervals


class DemoSensor:
    """A BTHome v2 thermometer: temperature wandering around 21 °C, humidity, battery."""

    def __init__(self, address: str, *, rng: random.Random | None = None) -> None:
        self.address = address
        self.name = "demo-sensor"
        self.rng = rng or random.Random()
        self.temperature = 21.0
        self.humidity = 45.0
        self.battery = 97
        self.packet_id = self.rng.randrange(256)
        self.sent = 0

    def step(self) -> None:
        """The next reading: a random walk pulled back towards its mean, so it stays near it."""
        rng = self.rng
        self.temperature += 0.2 * (21.0 - self.temperature) + rng.gauss(0.0, 0.15)
        self.humidity += 0.2 * (45.0 - self.humidity) + rng.gauss(0.0, 0.5)
        self.humidity = min(100.0, max(0.0, self.humidity))
        if self.sent and self.sent % 500 == 0 and self.battery > 5:
            self.battery -= 1
        # A new packet id per advertisement: the parser drops repeats of the same id.
        self.packet_id = (self.packet_id + 1) % 256

    def service_data(self) -> bytes:
        data = bytes((_DEVICE_INFO, _PACKET_ID, self.packet_id, _BATTERY, self.battery))
        data += bytes((_TEMPERATURE,)) + round(self.temperature * 100).to_bytes(
            2, "little", signed=True
        )
        data += bytes((_HUMIDITY,)) + round(self.humidity * 100).to_bytes(2, "little")
        return data

    def advertisement(self) -> Advertisement:
        self.step()
        self.sent += 1
        return Advertisement(
            address=self.address,
            name=self.name,
            rssi=-60 + self.rng.randint(-6, 6),
            service_data={BTHOME_UUID: self.service_data()},
            connectable=False,
            ts=time.monotonic(),
        )


class DemoThermostat:
    """An eQ-3 radiator thermostat that sleeps and wakes on a schedule.

    Every `period` seconds it wakes for `awake_for` seconds; only then does it advertise and
    accept a connection. A connected client keeps it awake until it disconnects, as the real
    one does. Writes are carried out with the thermostat's side of devices/ble/eq3.py and
    answered with a status notification.
    """

    def __init__(
        self,
        address: str,
        *,
        period: float = 30.0,
        awake_for: float = 5.0,
        latency: float = 0.02,
    ) -> None:
        if not 0 < awake_for < period:
            raise ValueError("awake_for must be positive and shorter than period")
        self.address = address
        self.name = "CC-RT-BLE"
        self.period = period
        self.awake_for = awake_for
        self.latency = latency
        self.status = Eq3Status(target_temp=19.0, comfort_temp=21.0, eco_temp=17.0)
        self.wakes = 0  # wake-ups so far; the current one while awake
        self.writes: list[tuple[int, bytes]] = []  # (wake number, bytes) of each accepted write
        self._awake = asyncio.Event()
        self._asleep = asyncio.Event()
        self._asleep.set()
        self._sessions: set[_DemoGatt] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def awake(self) -> bool:
        return self._awake.is_set()

    @property
    def connected(self) -> bool:
        return bool(self._sessions)

    async def wait_awake(self) -> None:
        await self._awake.wait()

    async def wait_asleep(self) -> None:
        await self._asleep.wait()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._cycle(), name="demo-eq3")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for session in list(self._sessions):
            session.close()
        self._set_awake(False)

    async def _cycle(self) -> None:
        while True:
            self.wakes += 1
            self._set_awake(True)
            await asyncio.sleep(self.awake_for)
            await self._idle.wait()
            self._set_awake(False)
            await asyncio.sleep(self.period - self.awake_for)

    def _set_awake(self, awake: bool) -> None:
        if awake:
            self._asleep.clear()
            self._awake.set()
        else:
            self._awake.clear()
            self._asleep.set()

    def advertisement(self) -> Advertisement:
        # The eQ-3 advertises its name only; that it can be connected is what matters.
        return Advertisement(
            address=self.address, name=self.name, rssi=-72, connectable=True, ts=time.monotonic()
        )

    def write(self, char_uuid: str, data: bytes) -> None:
        if char_uuid.lower() != WRITE_CHAR:
            raise LinkError("gatt", f"characteristic {char_uuid} is not writable")
        try:
            status = apply_command(self.status, data)
        except ValueError as exc:
            raise LinkError("gatt", str(exc)) from None
        # The valve opens further the more the setpoint lies above a room at about 20 °C;
        # boost opens it wide.
        valve = min(100, max(0, round((status.target_temp - 20.0) * 25)))
        if status.boost:
            valve = max(valve, 80)
        self.status = replace(status, valve=valve)
        self.writes.append((self.wakes, bytes(data)))
        frame = encode_status(self.status)
        for session in self._sessions:
            session.notify(NOTIFY_CHAR, frame)

    def open_session(self) -> _DemoGatt:
        if not self.awake:
            raise LinkError("not_found", f"{self.address} is asleep (not advertising)")
        session = _DemoGatt(self)
        self._sessions.add(session)
        self._idle.clear()
        return session

    def session_closed(self, session: _DemoGatt) -> None:
        self._sessions.discard(session)
        if not self._sessions:
            self._idle.set()


class _DemoGatt:
    """One connection to the demo thermostat (implements `GattSession`)."""

    def __init__(self, thermostat: DemoThermostat) -> None:
        self.thermostat = thermostat
        self._closed = False
        self._subscribers: dict[str, asyncio.Queue[bytes]] = {}

    @property
    def connected(self) -> bool:
        return not self._closed

    def _check(self) -> None:
        if self._closed:
            raise LinkError("disconnected", f"{self.thermostat.address}: not connected")

    async def write(self, char_uuid: str, data: bytes, *, response: bool = True) -> None:
        self._check()
        await asyncio.sleep(self.thermostat.latency)
        self._check()
        self.thermostat.write(char_uuid, data)

    async def read(self, char_uuid: str) -> bytes:
        self._check()
        raise LinkError("gatt", f"characteristic {char_uuid} is not readable")

    async def subscribe(self, char_uuid: str) -> asyncio.Queue[bytes]:
        self._check()
        if char_uuid.lower() != NOTIFY_CHAR:
            raise LinkError("gatt", f"characteristic {char_uuid} does not notify")
        return self._subscribers.setdefault(NOTIFY_CHAR, asyncio.Queue())

    def notify(self, char_uuid: str, data: bytes) -> None:
        queue = self._subscribers.get(char_uuid)
        if queue is not None:
            queue.put_nowait(data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.thermostat.session_closed(self)


class DemoLink:
    """Opens GATT connections to the demo thermostat (implements `Link`); every other address
    is unknown, and a sleeping thermostat cannot be reached."""

    def __init__(self, thermostat: DemoThermostat) -> None:
        self.thermostat = thermostat
        self.connects = 0

    def connect(
        self, address: str, *, timeout: float = 10.0
    ) -> AbstractAsyncContextManager[_DemoGatt]:
        return self._connect(address)

    @asynccontextmanager
    async def _connect(self, address: str) -> AsyncIterator[_DemoGatt]:
        if address.upper() != self.thermostat.address:
            raise LinkError("not_found", f"{address}: no such demo device")
        await asyncio.sleep(self.thermostat.latency)
        session = self.thermostat.open_session()
        self.connects += 1
        try:
            yield session
        finally:
            session.close()


class DemoRadio:
    """Delivers the demo sensor's advertisements every `sensor_interval` seconds and the
    thermostat's every `advert_interval` seconds while it is awake (implements `Radio`)."""

    def __init__(
        self,
        sensor: DemoSensor,
        thermostat: DemoThermostat,
        *,
        sensor_interval: float = 5.0,
        advert_interval: float = 1.0,
    ) -> None:
        self.sensor = sensor
        self.thermostat = thermostat
        self.sensor_interval = sensor_interval
        self.advert_interval = advert_interval
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def scanning(self) -> bool:
        return bool(self._tasks)

    async def start(self, callback: AdvertisementCallback) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._sensor(callback), name="demo-sensor"),
            loop.create_task(self._thermostat(callback), name="demo-eq3-adverts"),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _sensor(self, callback: AdvertisementCallback) -> None:
        while True:
            callback(self.sensor.advertisement())
            await asyncio.sleep(self.sensor_interval)

    async def _thermostat(self, callback: AdvertisementCallback) -> None:
        while True:
            await self.thermostat.wait_awake()
            callback(self.thermostat.advertisement())
            await asyncio.sleep(self.advert_interval)
