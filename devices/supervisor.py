"""The device supervisor: turns what the radios and the LAN report into device sessions.

One supervisor runs inside the gateway. It owns the shared BLE radio (BTHome sensors), the
mDNS browser and one state poller per LAN device, and gives every device a
:class:`~devices.session.DeviceSession` (an MQTT client of the gateway's own broker over the
connector it is given). Its own bridge session keeps ``<prefix>/bridge/state`` (retained
``online``; ``offline`` is its will) and ``<prefix>/bridge/devices`` (retained JSON list of the
devices with kind, session policy and link state) current.

The bridge session also carries Home Assistant MQTT discovery (devices/discovery_publisher.py).
The supervisor reads its configuration through the protocols of devices/views.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from devices.ble.eq3 import Eq3Profile
from devices.ble.fleet import SleepyFleet
from devices.ble.gatt_ops import GattProfile
from devices.ble.radio import Advertisement, Link, Radio
from devices.ble.sleepy import StateCallback, WakeSettings
from devices.discovery_publisher import DiscoveryPublisher
from devices.lan_devices import LanDevices
from devices.listing import ListingPublisher, admin_entry, bridge_listing
from devices.model import Device, DevicePolicy
from devices.policy_resolver import PolicyResolver, parse_overrides
from devices.presence import PresenceSchedule
from devices.registry import LinkState, SessionRegistry
from devices.session import DISCONNECT_WITH_WILL, OFFLINE, ONLINE, DeviceSession
from devices.views import DevicesView, KnownDeviceView
from gateway.client.mqtt import Connector, MQTTClient, MQTTClientError
from gateway.commands.schema import CommandSchema
from gateway.mqtt.packets import Publish, Will

# bleak, zeroconf and aiohttp (with cryptography for BTHome) cost the gateway's RSS several
# MB each: they are imported where a transport that needs them is started, not here.
if TYPE_CHECKING:
    from devices.ble.bthome import BTHomeReading
    from devices.lan.discovery import LanDiscovery

log = logging.getLogger(__name__)

BRIDGE_CLIENT_ID = "edge-gateway-bridge"
# Declared BLE devices that take commands over GATT in their wake windows.
SLEEPY_KINDS = ("eq3", "gatt")
BLE_KINDS = ("bthome", *SLEEPY_KINDS)
# Retained <prefix>/bridge/policy/<id>: a device's policy overrides set at run time.
POLICY_TOPIC = "bridge/policy/"


# --- bookkeeping ---------------------------------------------------------------------------------


def bthome_id(address: str) -> str:
    """The id of an undeclared BTHome sensor: stable, from its address."""
    return "bthome-" + address.replace(":", "").lower()


class _NoAdapter:
    """BLE sensors only report: a command sent to one has nowhere to go."""

    async def execute(self, command: dict[str, object]) -> None:
        raise RuntimeError("this device takes no commands")


class Supervisor:
    def __init__(
        self,
        config: DevicesView,
        connector: Connector,
        prefix: str = "gw",
        *,
        radio: Radio | None = None,
        link: Link | None = None,
        wake: WakeSettings | None = None,
        ble_retry_interval: float = 30.0,
        presence_interval: float = 10.0,
    ) -> None:
        self.config = config
        self.connector = connector
        self.prefix = prefix
        self.ble_retry_interval = ble_retry_interval
        self.radio: Radio | None = radio
        self.link = link
        self.wake = wake
        self.fleet: SleepyFleet | None = None
        self._presence: asyncio.Task[None] | None = None
        self._schedule = PresenceSchedule(presence_interval)
        self.discovery: LanDiscovery | None = None
        self._listing = ListingPublisher(
            lambda: bridge_listing(self.registry), lambda: self._bridge, f"{prefix}/bridge/devices"
        )
        self.registry = SessionRegistry(config.known, self._listing.changed)
        self.policies = PolicyResolver()
        self._ble_ids = {
            d.address.upper(): d for d in config.known if d.kind == "bthome" and d.address
        }
        self._ble_pending: dict[str, dict[str, object]] = {}
        self._ble_tasks: dict[str, asyncio.Task[None]] = {}
        self._bridge: MQTTClient | None = None
        self._bridge_lock = asyncio.Lock()
        self._running = False
        self.ha = DiscoveryPublisher(lambda: self._bridge, prefix)
        self.lan = LanDevices(
            config.lan,
            connector,
            prefix,
            registry=self.registry,
            ha=self.ha,
            policy_for=config.policy_for,
            add_session=self._add_session,
            ensure_bridge=self._ensure_bridge,
            running=lambda: self._running,
        )
        self._ha_tasks: set[asyncio.Task[None]] = set()
        self._ble_events: dict[str, list[dict[str, str]]] = {}
        self._rssi: dict[str, int] = {}  # last advertisement RSSI per BLE address
        self._policy_lock = asyncio.Lock()
        self._policy_tasks: set[asyncio.Task[None]] = set()
        self._started = False

    @property
    def sessions(self) -> dict[str, DeviceSession]:
        return self.registry.sessions

    @property
    def links(self) -> dict[str, LinkState]:
        return self.registry.links

    @property
    def version(self) -> int:
        """Goes up whenever the device listing may have changed (the admin API polls it)."""
        return self.registry.version

    # --- lifecycle ------------------------------------------------------------------------------

    def describe(self) -> list[str]:
        """One honest log line per transport."""
        ble, lan = self.config.ble, self.config.lan
        sensors = len(self._ble_ids)
        if not ble.enabled:
            ble_line = "BLE: disabled (devices.ble.enabled: false)"
        else:
            ble_line = (
                f"BLE: listening for BTHome sensors ({ble.scanning_mode} scanning, "
                f"adapter {ble.adapter or 'default'}; {sensors} declared)"
            )
        hosts = sum(1 for d in self.config.known if d.host)
        if not lan.enabled:
            lan_line = "LAN: disabled (devices.lan.enabled: false)"
        else:
            mdns = (
                f"mDNS discovery on {', '.join(lan.interfaces)}"
                if lan.interfaces
                else "mDNS discovery off (devices.lan.interfaces is empty)"
            )
            lan_line = (
                f"LAN: {mdns}; {hosts} device(s) declared by host; "
                f"polling every {lan.poll_interval:g} s"
            )
        return [ble_line, lan_line]

    def idle(self) -> bool:
        """True when no device can show up right now: no BLE scan running, no mDNS browser,
        no device declared by host (the gateway is a broker only, for the moment)."""
        scanning = self.radio is not None and bool(getattr(self.radio, "scanning", True))
        return not (scanning or self.discovery is not None or self.lan.entries)

    async def start(self) -> None:
        self._running = True
        for known in self.config.known:
            self.registry.list_device(known.id)
        ble = self.config.ble
        if ble.enabled:
            self._make_radio()
            self._make_fleet()
        if self.config.known:
            await self._ensure_bridge()
        if self.fleet is not None:
            await self.fleet.prime()
        if self.config.lan.enabled:
            await self._start_lan()
        if ble.enabled and self.radio is not None:
            await self._listen(self.radio)
        self._presence = asyncio.create_task(self._check_presence(), name="device-presence")
        self._started = True

    async def _start_lan(self) -> None:
        """The devices declared by host, then mDNS discovery if interfaces are given."""
        lan = self.config.lan
        for known in self.config.known:
            if known.host is not None:
                await self.lan.add(
                    known.id, known.kind, known.name, known.host, known.port, known.policy,
                    known=True,
                )  # fmt: skip
        if lan.interfaces:
            from devices.lan.discovery import LanDiscovery

            discovery = LanDiscovery(
                interfaces=list(lan.interfaces),
                on_found=self.lan.found,
                on_lost=self.lan.lost,
            )
            try:
                await discovery.start()
            except OSError as exc:
                # An address that is not (or not yet) on this machine: the broker and
                # the declared devices are still worth running.
                log.error(
                    "LAN: mDNS discovery on %s failed, discovery off: %s",
                    ", ".join(lan.interfaces),
                    exc,
                )
                with contextlib.suppress(Exception):
                    await discovery.stop()
            else:
                self.discovery = discovery

    async def _listen(self, radio: Radio) -> None:
        """Advertisements to BTHome readings, and to the wake-ups of sleepy devices."""
        from devices.ble.scanner import BTHomeDecoder

        keys = {a: d.bind_key for a, d in self._ble_ids.items() if d.bind_key}
        decoder = BTHomeDecoder(self._on_reading, bind_keys=keys)
        fleet = self.fleet
        rssi = self._rssi

        def on_advertisement(advertisement: Advertisement) -> None:
            rssi[advertisement.address] = advertisement.rssi
            decoder(advertisement)
            if fleet is not None and fleet.advertised(advertisement) is not None:
                device_id = fleet.device_id_of(advertisement.address)
                if device_id is not None:
                    self._set_link(device_id, "online")

        # Never raises for a missing adapter: logged once, retried in the background.
        await radio.start(on_advertisement)

    def _make_radio(self) -> None:
        if self.radio is not None:
            return
        from devices.ble.scanner import BleakRadio, ScanningMode

        ble = self.config.ble
        mode: ScanningMode = "auto"
        if ble.scanning_mode in ("active", "passive"):
            mode = "active" if ble.scanning_mode == "active" else "passive"
        self.radio = BleakRadio(
            scanning_mode=mode, adapter=ble.adapter, retry_interval=self.ble_retry_interval
        )

    def _make_fleet(self) -> None:
        declared = [k for k in self.config.known if k.kind in SLEEPY_KINDS and k.address]
        if not declared:
            return
        link = self.link
        if link is None:
            from devices.ble.link import BleakLink
            from devices.ble.scanner import BleakRadio

            # Connects to the BLEDevice the scanner has just seen: no second discovery.
            radio = self.radio if isinstance(self.radio, BleakRadio) else None
            link = BleakLink(radio, adapter=self.config.ble.adapter)
        ble = self.config.ble
        settings = self.wake or WakeSettings(
            connect_timeout=ble.connect_timeout,
            window=ble.wake_window,
            backoff_min=ble.retry_backoff,
            refresh_interval=ble.state_refresh,
        )
        fleet = SleepyFleet(self.connector, link, self.prefix, settings=settings)
        for known in declared:
            assert known.address is not None
            profile = self._gatt_profile(known)
            device = Device(known.id, known.kind, known.name or known.id, known.address,
                            known.policy, profile.schema)  # fmt: skip
            sleepy = fleet.add(device, profile, self._state_publisher)
            self._add_session(sleepy.session)
        self.fleet = fleet

    def _known_schema(self, known: KnownDeviceView) -> CommandSchema | None:
        """The commands a declared device takes, before it has a session."""
        if known.kind in SLEEPY_KINDS and known.address:
            return self._gatt_profile(known).schema
        if not known.host:
            return None
        from devices.lan.static import LAN_SCHEMAS

        return LAN_SCHEMAS.get(known.kind)

    def _gatt_profile(self, known: KnownDeviceView) -> GattProfile:
        if known.kind == "eq3":
            return Eq3Profile()
        assert known.profile is not None, "config requires a profile for kind gatt"
        return self.config.gatt_profile(known.profile)

    def _state_publisher(self, session: DeviceSession) -> StateCallback:
        """Readings a sleepy device reports in its wake window (e.g. a thermostat's status)."""

        async def publish(values: dict[str, object]) -> None:
            await session.publish_state(values)
            await self.ha.announce(session.device, values, merge=True)

        return publish

    def _add_session(self, session: DeviceSession) -> None:
        device = session.device
        self.policies.remember_base(device.id, device.policy)
        policy = self.policies.effective(device.id, device.policy)
        if policy != device.policy:
            # Before the session first connects: it asks the broker for this queue at once.
            session.device = dataclasses.replace(device, policy=policy)
        self.registry.add(session)
        self._schedule.reschedule()  # its wake interval may call for closer presence checks
        self._announce_commands(session)

    def _announce_commands(self, session: DeviceSession) -> None:
        """A device that takes commands has Home Assistant entities before it first reports:
        a sleeping thermostat's climate entity (a setpoint can wait for it) and its count of
        pending commands. Only once the bridge is up; `_ensure_bridge` catches up."""
        if session.device.schema is None or self._bridge is None or not self._bridge.connected:
            return
        task = asyncio.get_running_loop().create_task(
            self.ha.announce(session.device, {}, merge=True)
        )
        self._ha_tasks.add(task)
        task.add_done_callback(self._ha_tasks.discard)

    async def _check_presence(self) -> None:
        """Devices with a wake interval that stopped being heard go ``offline`` (DESIGN §2)."""
        while True:
            intervals = [s.device.policy.wake_interval for s in self.sessions.values()]
            await self._schedule.wait(intervals)
            await self.rejoin()
            for device_id, session in list(self.sessions.items()):
                if device_id in self.lan.entries:
                    continue  # reachability comes from the poller
                try:
                    if await session.check_presence():
                        self._set_link(device_id, "offline")
                except MQTTClientError as exc:
                    log.warning("%s: availability not published: %s", device_id, exc)

    async def stop(self) -> None:
        """Stop listening, close every device session, then say the bridge is offline."""
        self._running = False
        self._started = False
        if self.discovery is not None:
            await self.discovery.stop()
            self.discovery = None
        if self.radio is not None:
            await self.radio.stop()
        if self._presence is not None:
            self._presence.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._presence
            self._presence = None
        if self.fleet is not None:
            await self.fleet.stop()
        await self.lan.stop()
        tasks = [*self._ble_tasks.values(), *self._ha_tasks, *self._policy_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for session in self.sessions.values():
            with contextlib.suppress(Exception):
                await session.close()
        self.sessions.clear()  # a second stop() (the gateway's own, after a test's) is a no-op
        self.lan.entries.clear()
        await self._listing.stop()
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            # The broker publishes the will: gw/bridge/state "offline", retained.
            await bridge.disconnect(DISCONNECT_WITH_WILL)

    # --- bridge topics --------------------------------------------------------------------------

    async def _ensure_bridge(self) -> None:
        """Bring up the bridge session with the first device.

        Until a device exists there is nothing to bridge, and a gateway without Bluetooth
        adapter or LAN devices stays what it then is: a broker, without a client of its own.
        """
        async with self._bridge_lock:
            if self._bridge is not None or not self._running:
                return
            bridge = MQTTClient(self.connector, self._on_bridge_message)
            await bridge.connect(
                BRIDGE_CLIENT_ID,
                will=Will(self._topic("bridge/state"), OFFLINE, qos=1, retain=True),
            )
            self._bridge = bridge
            await bridge.publish(self._topic("bridge/state"), ONLINE, qos=1, retain=True)
            for topic, payload in self.ha.bridge_messages():
                await bridge.publish(topic, payload, qos=1, retain=True)
            # Policies set at run time (admin API), kept as retained messages: subscribed
            # before the sessions connect, so that they ask the broker for the right queue.
            await bridge.subscribe(self._topic("bridge/policy/+"), qos=1)
            await bridge.subscribe(self.ha.status_topic, qos=1)
            if self.fleet is not None:
                # Tells each sleepy device whether its next advertisement should open a window.
                await bridge.subscribe(self.fleet.pending_filter(), qos=1)
            self._listing.start()
        for session in list(self.sessions.values()):
            self._announce_commands(session)

    def _topic(self, suffix: str) -> str:
        return f"{self.prefix}/{suffix}"

    # --- messages to the bridge ----------------------------------------------------------------

    async def _on_bridge_message(self, message: Publish) -> bool:
        if self.fleet is not None and self.fleet.pending_message(message.topic, message.payload):
            self._listing_changed()  # its pending count
            return True
        if message.topic.startswith(self._topic(POLICY_TOPIC)):
            self._policy_message(message.topic, message.payload)
            return True
        if message.topic == self.ha.status_topic and message.payload == ONLINE:
            # A task: the handler runs on the bridge's receive path, and the re-send waits
            # for PUBACKs on the same link.
            task = asyncio.get_running_loop().create_task(self.ha.resend())
            self._ha_tasks.add(task)
            task.add_done_callback(self._ha_tasks.discard)
        return True

    def devices(self) -> list[dict[str, object]]:
        """The retained device list (devices/listing.py)."""
        return bridge_listing(self.registry)

    def _set_link(self, device_id: str, link: LinkState) -> None:
        self.registry.set_link(device_id, link)

    # --- BLE ------------------------------------------------------------------------------------

    def _on_reading(self, address: str, reading: BTHomeReading, rssi: int) -> None:
        values: dict[str, object] = dict(reading.values)
        if reading.events:
            events = {event.key: event.event_type for event in reading.events}
            values.update(events)
            self._ble_events.setdefault(address, []).append(events)
        values["rssi"] = rssi
        pending = self._ble_pending.get(address)
        self._ble_pending[address] = values if pending is None else {**pending, **values}
        if address not in self._ble_tasks and self._running:
            task = asyncio.get_running_loop().create_task(self._ble_publish(address))
            self._ble_tasks[address] = task
            task.add_done_callback(lambda _: self._ble_tasks.pop(address, None))

    async def _ble_publish(self, address: str) -> None:
        # The radio calls back synchronously and often; publishing happens here, one at a
        # time per device, always with the newest values.
        while address in self._ble_pending:
            values = self._ble_pending.pop(address)
            events = self._ble_events.pop(address, [])
            try:
                await self._ensure_bridge()
                session = self.sessions.get(self._ble_device_id(address))
                if session is None:
                    session = self._ble_session(address)
                if not session.awake:
                    await session.wake()
                    self._set_link(session.device.id, "online")
                await session.publish_state(values)
                await self.ha.announce(session.device, values, merge=True)
                await self.ha.events(session.device, events)
            except (MQTTClientError, OSError) as exc:
                log.warning("BLE %s: reading not published: %s", address, exc)

    def _ble_device_id(self, address: str) -> str:
        known = self._ble_ids.get(address)
        return known.id if known is not None else bthome_id(address)

    def _ble_session(self, address: str) -> DeviceSession:
        known = self._ble_ids.get(address)
        if known is not None:
            device = Device(known.id, known.kind, known.name or known.id, address, known.policy)
        else:
            ident = bthome_id(address)
            policy = self.config.policy_for("bthome", ident, address)
            device = Device(ident, "bthome", ident, address, policy)
        session = DeviceSession(device, _NoAdapter(), self.connector, self.prefix)
        self._add_session(session)
        log.info("BLE: BTHome sensor %s is %s", address, device.id)
        return session

    # --- admin API hooks (gateway/admin) ---------------------------------------------------------

    def _listing_changed(self) -> None:
        self.registry.changed()

    async def rejoin(self) -> None:
        """Reconnect the sessions of reachable LAN devices that lost their link to the broker
        (an administrator kicked them, or deleted them). Runs with the presence checks."""
        await self.lan.rejoin()

    def device_count(self) -> int:
        """How many devices `device_listing` has, without building it."""
        return self.registry.device_count()

    def client_id_of(self, device_id: str) -> str | None:
        """The MQTT client id of a device's session; None for an unknown device."""
        return self.registry.client_id_of(device_id)

    def device_of_client(self, client_id: str) -> str | None:
        """The device a broker session belongs to (its session or its status link)."""
        return self.registry.device_of_client(client_id)

    def attempts(self, device_id: str, payload: bytes, correlation: bytes | None) -> int:
        """Failed delivery attempts of a queued command so far (held in memory)."""
        return self.registry.attempts(device_id, payload, correlation)

    def device_listing(self) -> list[dict[str, object]]:
        """Every device as the admin API lists it (devices/listing.py). ``pending`` follows
        the pending lists of sleepy BLE devices; None when only the broker knows."""
        listing: list[dict[str, object]] = []
        for device_id, session, known in self.registry.listed():
            if session is not None:
                device = session.device
            else:
                assert known is not None
                policy = self.policies.effective(device_id, known.policy)
                device = Device(device_id, known.kind, known.name or device_id,
                                known.address or known.host, policy,
                                self._known_schema(known))  # fmt: skip
            sleepy = self.fleet.get(device_id) if self.fleet is not None else None
            rssi = None
            if device.kind in BLE_KINDS and device.address:
                rssi = self._rssi.get(device.address.upper())
            listing.append(
                admin_entry(device, session, self.links[device_id], rssi=rssi,
                            pending=sleepy.pending if sleepy is not None else None,
                            policy_from=self._policy_sources(device_id, device.kind))
            )  # fmt: skip
        return listing

    def _policy_sources(self, device_id: str, kind: str) -> dict[str, str]:
        try:
            base: DevicePolicy | None = self._config_policy(device_id)
        except KeyError:
            base = None
        return self.policies.sources(device_id, kind, base)

    def _config_policy(self, device_id: str) -> DevicePolicy:
        base = self.policies.base(device_id)
        if base is not None:
            return base
        known = self.registry.known(device_id)
        if known is None or device_id not in self.links:
            raise KeyError(device_id)
        return known.policy

    async def set_policy(
        self, device_id: str, overrides: Mapping[str, object] | None
    ) -> DevicePolicy:
        """Apply a device's policy overrides (None: back to the config's policy) at once.

        The device session reconnects with the new queue policy (or renews its broker session
        while it sleeps). Raises KeyError for an unknown device, PolicyError for a bad key or
        value. Keeping it across restarts is the caller's job (retained
        ``<prefix>/bridge/policy/<id>``, which this supervisor reads back at start).
        """
        base = self._config_policy(device_id)
        policy = base.with_overrides(overrides) if overrides else base
        async with self._policy_lock:
            self.policies.update(device_id, overrides)
            session = self._replace_policy(device_id, policy)
            if session is not None:
                await self._reconnect(device_id, session)
        return policy

    def _replace_policy(self, device_id: str, policy: DevicePolicy) -> DeviceSession | None:
        """Give the device its new policy; the session if it changed (to reconnect)."""
        self._listing_changed()
        session = self.sessions.get(device_id)
        if session is None or session.device.policy == policy:
            return None
        session.device = dataclasses.replace(session.device, policy=policy)
        self._schedule.reschedule()  # the wake interval may have changed
        return session

    async def _reconnect(self, device_id: str, session: DeviceSession) -> None:
        """The broker learns a session's queue policy from its CONNECT: connect again."""
        lock = self.lan.lock_of(device_id)
        try:
            async with lock if lock is not None else contextlib.nullcontext():
                if session.awake:
                    await session.sleep()
                    await session.wake()
                elif session.device.policy.persistent:
                    await session.prime(announce=False)
        except MQTTClientError as exc:
            log.warning("%s: new policy not given to the broker yet: %s", device_id, exc)

    def _policy_message(self, topic: str, payload: bytes) -> None:
        """A retained policy (at start, or the echo of an admin change)."""
        device_id = topic[len(self._topic(POLICY_TOPIC)) :]
        try:
            overrides = parse_overrides(payload)
        except ValueError:
            log.warning("%s: unreadable policy %r ignored", topic, payload[:80])
            return
        if not self.policies.update(device_id, overrides):
            return
        try:
            base = self._config_policy(device_id)
        except KeyError:
            return  # applied when the device shows up (_add_session)
        session = self._replace_policy(device_id, self.policies.effective(device_id, base))
        # Until start() is done, it connects the sessions itself, with this policy.
        if session is not None and (self._started or session.awake):
            task = asyncio.get_running_loop().create_task(self._reconnect_later(device_id, session))
            self._policy_tasks.add(task)
            task.add_done_callback(self._policy_tasks.discard)

    async def _reconnect_later(self, device_id: str, session: DeviceSession) -> None:
        async with self._policy_lock:
            await self._reconnect(device_id, session)
