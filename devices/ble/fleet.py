"""The declared sleepy BLE command devices of one gateway, and what routes to them.

The supervisor hands every advertisement to :meth:`SleepyFleet.advertised` and every retained
pending list (``<prefix>/<id>/pending``, kept by the broker for each persistent device session)
to :meth:`SleepyFleet.pending_message`; the fleet finds the device and lets its
:class:`~devices.ble.sleepy.SleepyDevice` decide whether to open a wake window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterator

from devices.ble.gatt_ops import GattProfile
from devices.ble.radio import Advertisement, Link
from devices.ble.sleepy import GattAdapter, SleepyDevice, StateCallback, WakeSettings
from devices.model import Device
from devices.session import DeviceSession
from gateway.client.mqtt import Connector, MQTTClientError

log = logging.getLogger(__name__)

PENDING_SUFFIX = "/pending"


class SleepyFleet:
    def __init__(
        self,
        connector: Connector,
        link: Link,
        prefix: str = "gw",
        *,
        settings: WakeSettings | None = None,
    ) -> None:
        self.connector = connector
        self.link = link
        self.prefix = prefix
        self.settings = settings or WakeSettings()
        self._by_address: dict[str, SleepyDevice] = {}
        self._by_id: dict[str, SleepyDevice] = {}

    def __iter__(self) -> Iterator[SleepyDevice]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def device_id_of(self, address: str) -> str | None:
        sleepy = self._by_address.get(address.upper())
        return None if sleepy is None else sleepy.session.device.id

    def get(self, device_id: str) -> SleepyDevice | None:
        return self._by_id.get(device_id)

    def add(
        self,
        device: Device,
        profile: GattProfile,
        on_state: Callable[[DeviceSession], StateCallback],
    ) -> SleepyDevice:
        """A declared device: its session, adapter and wake-window logic (not connected)."""
        assert device.address is not None, "a BLE device has an address"
        adapter = GattAdapter(
            profile, self.link, device.address, connect_timeout=self.settings.connect_timeout
        )
        session = DeviceSession(device, adapter, self.connector, self.prefix)
        adapter.on_state = on_state(session)
        sleepy = SleepyDevice(session, adapter, self.settings)
        self._by_address[device.address.upper()] = sleepy
        self._by_id[device.id] = sleepy
        return sleepy

    async def prime(self) -> None:
        """Give every persistent device its broker session now: commands sent before its first
        wake must have a queue to wait in."""
        for sleepy in self._by_id.values():
            try:
                await sleepy.session.prime()
            except MQTTClientError as exc:
                log.warning("BLE %s: session not prepared: %s", sleepy.session.device.id, exc)

    def advertised(self, advertisement: Advertisement) -> asyncio.Task[None] | None:
        sleepy = self._by_address.get(advertisement.address)
        return None if sleepy is None else sleepy.advertised(advertisement)

    def pending_filter(self) -> str:
        return f"{self.prefix}/+{PENDING_SUFFIX}"

    def pending_message(self, topic: str, payload: bytes) -> bool:
        """A pending list was published; True if it was one of ours."""
        head = f"{self.prefix}/"
        if not (topic.startswith(head) and topic.endswith(PENDING_SUFFIX)):
            return False
        sleepy = self._by_id.get(topic[len(head) : -len(PENDING_SUFFIX)])
        if sleepy is None:
            return False
        try:
            entries = json.loads(payload) if payload else []
        except ValueError:
            entries = None
        if not isinstance(entries, list):
            log.warning("%s: unreadable pending list %r", topic, payload[:80])
            sleepy.pending_changed(1)  # open a window at the next wake to find out
            return True
        sleepy.pending_changed(len(entries))
        return True

    async def stop(self) -> None:
        for sleepy in self._by_id.values():
            with contextlib.suppress(Exception):
                await sleepy.stop()
