"""Devices on the LAN (Shelly Gen2, WLED): one driver, state poller and device session each.

Declared by host in config.yaml, or found by mDNS (devices/lan/discovery.py); a found device
that moves is dropped and added again, one that leaves goes offline. Reachability comes from
the poller; a command the device did not carry out is retried through a short sleep/wake cycle
of its session (see ``_retry``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from devices.discovery_publisher import DiscoveryPublisher
from devices.homeassistant import DeviceFacts
from devices.model import Device, DevicePolicy
from devices.registry import SessionRegistry
from devices.session import DeviceSession
from devices.views import LanView
from gateway.client.mqtt import Connector, MQTTClientError

# The drivers bring in aiohttp (several MB of RSS): imported once a LAN device is added.
if TYPE_CHECKING:
    from devices.lan.discovery import LanDeviceInfo
    from devices.lan.managed import LanDevice
    from devices.lan.shelly import ShellyGen2
    from devices.lan.wled import Wled

log = logging.getLogger(__name__)

PolicyFor = Callable[[str, str, str | None, str | None], DevicePolicy]


class LanDevices:
    def __init__(
        self,
        config: LanView,
        connector: Connector,
        prefix: str,
        *,
        registry: SessionRegistry,
        ha: DiscoveryPublisher,
        policy_for: PolicyFor,
        add_session: Callable[[DeviceSession], None],
        ensure_bridge: Callable[[], Awaitable[None]],
        running: Callable[[], bool],
    ) -> None:
        self.config = config
        self.connector = connector
        self.prefix = prefix
        self.registry = registry
        self.ha = ha
        self._policy_for = policy_for
        self._add_session = add_session
        self._ensure_bridge = ensure_bridge
        self._running = running
        self.entries: dict[str, LanDevice] = {}
        self._retries: set[asyncio.Task[None]] = set()

    def lock_of(self, device_id: str) -> asyncio.Lock | None:
        """What serialises a LAN device's session changes (None: not a LAN device)."""
        entry = self.entries.get(device_id)
        return entry.lock if entry is not None else None

    async def stop(self) -> None:
        """Stop every poller and driver and the pending retries (the sessions are the
        supervisor's to close)."""
        for entry in self.entries.values():
            await self._stop(entry)
        for task in self._retries:
            task.cancel()
        await asyncio.gather(*self._retries, return_exceptions=True)

    async def found(self, info: LanDeviceInfo) -> None:
        if not self._running():
            return
        # A device declared by host keeps its declared id; mDNS only confirms it.
        for other in self.entries.values():
            if other.known and (other.host, other.port) == (info.host, info.port):
                return
        entry = self.entries.get(info.id)
        if entry is not None:
            if (entry.host, entry.port) == (info.host, info.port):
                entry.poller.poll_soon()
                return
            log.info("LAN: %s moved to %s:%d", info.id, info.host, info.port)
            await self.drop(info.id)
        policy = self._policy_for(info.kind, info.id, None, info.name)
        await self.add(info.id, info.kind, info.name, info.host, info.port, policy)

    async def lost(self, info: LanDeviceInfo) -> None:
        entry = self.entries.get(info.id)
        if entry is None or entry.known:
            return
        await self.drop(info.id)
        async with entry.lock:
            await entry.session.go_offline()
        self.registry.set_link(info.id, "offline")

    async def drop(self, device_id: str) -> None:
        entry = self.entries.pop(device_id)
        if entry.retry is not None:
            entry.retry.cancel()
        await self._stop(entry)

    @staticmethod
    async def _stop(entry: LanDevice) -> None:
        await entry.poller.stop()
        await entry.driver.close()

    async def _retry(self, entry: LanDevice) -> None:
        """A command the device did not carry out stays unacknowledged, and the broker sends
        a session's next command only after it (receive maximum 1). A sleeping BLE device gets
        it again at its next wake; a LAN device that stays reachable is put through a short
        sleep/wake cycle instead, after a pause, so the command is retried (and ends up
        ``failed`` after the policy's max_attempts) rather than blocking its queue for ever."""
        await asyncio.sleep(self.config.poll_interval)
        # The redelivered command may fail again while this task is still waking the
        # session: that failure must be able to schedule the next retry.
        entry.retry = None
        async with entry.lock:
            if not entry.session.awake or entry.poller.reachable is not True:
                return  # it comes again when the device is back
            try:
                await entry.session.sleep()
                await entry.session.wake()
            except MQTTClientError as exc:
                log.warning("LAN %s: retry not started: %s", entry.session.device.id, exc)

    async def add(
        self,
        device_id: str,
        kind: str,
        name: str,
        host: str,
        port: int,
        policy: DevicePolicy,
        *,
        known: bool = False,
    ) -> None:
        from devices.lan.managed import DriverAdapter, LanDevice, StateSource
        from devices.lan.poller import StatePoller
        from devices.lan.static import make_driver

        await self._ensure_bridge()
        driver = make_driver(kind, host, port, timeout=self.config.timeout)
        adapter = DriverAdapter(driver)
        session = self.registry.sessions.get(device_id)
        if session is None:
            device = Device(device_id, kind, name or device_id, host, policy, driver.schema)
            session = DeviceSession(device, adapter, self.connector, self.prefix)
            self._add_session(session)
        else:
            session.adapter = adapter
        # The poller reports to its entry, which holds the poller: tied up once both exist.
        holder: list[LanDevice] = []
        poller = StatePoller(
            StateSource(driver),
            interval=self.config.poll_interval,
            on_state=lambda state: self._on_state(holder[0], state),
            on_reachable=lambda up: self._on_reachable(holder[0], up),
        )
        adapter.poller = poller
        entry = LanDevice(session, driver, poller, host, port, known)
        holder.append(entry)
        adapter.on_failure = lambda: self._retry_later(entry)
        self.entries[device_id] = entry
        self.registry.list_device(device_id)
        self.registry.changed()
        if policy.persistent:
            # Commands sent before the first successful poll must have a session to wait in.
            try:
                await session.prime()
            except MQTTClientError as exc:
                log.warning("LAN %s: session not prepared: %s", device_id, exc)
        await poller.start()

    async def _on_reachable(self, entry: LanDevice, up: bool) -> None:
        async with entry.lock:
            if up:
                await entry.session.wake()
            else:
                await entry.session.go_offline()
        self.registry.set_link(entry.session.device.id, "online" if up else "offline")

    async def _on_state(self, entry: LanDevice, state: dict[str, Any]) -> None:
        session = entry.session
        await session.publish_state(dict(state))
        if self.ha.facts_of(session.device.id) is None:
            facts = await self._facts(entry.driver)
            if facts is not None:
                await self.ha.set_facts(session.device, facts)
        await self.ha.announce(session.device, dict(state), merge=False)

    def _retry_later(self, entry: LanDevice) -> None:
        if self._running() and (entry.retry is None or entry.retry.done()):
            task = asyncio.get_running_loop().create_task(self._retry(entry))
            entry.retry = task
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    @staticmethod
    async def _facts(driver: ShellyGen2 | Wled) -> DeviceFacts | None:
        """Model, firmware and MAC as the device reports them (Shelly.GetDeviceInfo, WLED
        /json/info); None when it did not answer: asked again with its next new state."""
        from devices.lan.http import LanDeviceError

        try:
            details = await driver.get_info()
        except LanDeviceError as exc:
            log.warning("LAN %s: device details not read: %s", driver.label, exc)
            return None
        return DeviceFacts(
            manufacturer=details.manufacturer,
            model=details.model,
            sw_version=details.sw_version,
            mac=details.mac,
            effects=details.effects,
            presets=details.presets,
        )

    async def rejoin(self) -> None:
        """Reconnect the sessions of reachable LAN devices that lost their link to the broker
        (an administrator kicked them, or deleted them): nothing else would, as the poller
        only reports changes of reachability. Runs with the presence checks."""
        for entry in list(self.entries.values()):
            session = entry.session
            if entry.poller.reachable is not True or session.awake or entry.lock.locked():
                continue
            async with entry.lock:
                if entry.poller.reachable is True and not session.awake:
                    try:
                        await session.wake()
                        log.info("%s: session link was cut; reconnected", session.device.id)
                    except MQTTClientError as exc:
                        log.warning("%s: session not reconnected: %s", session.device.id, exc)
