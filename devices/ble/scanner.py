"""The one shared BLE scanner (real bleak) and the BTHome decoder it feeds.

`BleakRadio` is the only place that scans: every consumer subscribes to it, so the adapter runs a
single discovery session however many device families are configured. A missing adapter (a
server, a container, CI) is not an error for the gateway: it is logged once and retried.

`BTHomeDecoder` is pure bookkeeping around `parse_bthome`: bind keys, packet-id de-duplication
and encryption counters per device. It takes `Advertisement`s, so it runs without bleak.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from bleak import BleakAdapter, BleakScanner
from bleak.args.bluez import BlueZAdapterArgs, BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from devices.ble.bthome import BTHomeError, BTHomeReading, parse_bthome
from devices.ble.radio import BTHOME_UUID, Advertisement, AdvertisementCallback

log = logging.getLogger(__name__)

ScanningMode = Literal["auto", "active", "passive"]

# Passive scanning (BlueZ advertisement monitors) only reports advertisements matching a pattern;
# BTHome's service data UUID (0xFCD2, little endian) is the one every configuration needs.
BTHOME_PATTERN = OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, b"\xd2\xfc")
_MAX_SEEN = 4096


class BleakRadio:
    """A `Radio` backed by one bleak `BleakScanner`, shared by every subscriber.

    `scanning_mode="auto"` tries passive scanning (no scan requests: less air time and battery
    for the devices) and falls back to active when BlueZ lacks advertisement monitors.
    `or_patterns` select what passive scanning reports; consumers that need other
    advertisements (a vendor's manufacturer data, say) add their patterns here.
    """

    def __init__(
        self,
        *,
        scanning_mode: ScanningMode = "auto",
        adapter: str | None = None,
        or_patterns: Sequence[OrPattern] = (BTHOME_PATTERN,),
        retry_interval: float = 30.0,
    ) -> None:
        self.scanning_mode = scanning_mode
        self.adapter = adapter
        self.or_patterns = list(or_patterns)
        self.retry_interval = retry_interval
        self._callbacks: list[AdvertisementCallback] = []
        # The stack's handle of every recently seen device, for connecting without a second
        # discovery session (devices.ble.link). Bounded: private addresses rotate.
        self._seen: dict[str, BLEDevice] = {}
        self._scanner: BleakScanner | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: "active" / "passive" once scanning, None while there is no adapter.
        self.active_mode: Literal["active", "passive"] | None = None

    @property
    def scanning(self) -> bool:
        return self._scanner is not None

    def ble_device(self, address: str) -> BLEDevice | None:
        """bleak's handle of a device this radio has received an advertisement from."""
        return self._seen.get(address.upper())

    async def start(self, callback: AdvertisementCallback) -> None:
        """Subscribe `callback`; the first subscription starts the scanner.

        Never raises for a missing or unusable adapter: that is logged once and retried every
        `retry_interval` seconds in the background until `stop()`. An adapter that goes away
        while scanning (unplugged, bluetoothd stopped) is noticed at the same interval.
        """
        self._callbacks.append(callback)
        async with self._lock:
            if self._supervisor is not None:
                return
            try:
                await self._start_scanner()
            except Exception as exc:
                self._announce_unavailable("no Bluetooth adapter", exc)
            self._supervisor = asyncio.create_task(self._supervise(), name="ble-adapter")

    async def stop(self) -> None:
        self._callbacks.clear()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        async with self._lock:
            await self._drop_scanner()

    def _announce_unavailable(self, what: str, exc: BaseException) -> None:
        log.warning(
            "%s: BLE devices disabled, retrying every %g s (%s)",
            what,
            self.retry_interval,
            _describe(exc),
        )

    async def _drop_scanner(self) -> None:
        scanner, self._scanner = self._scanner, None
        self.active_mode = None
        if scanner is not None:
            try:
                await scanner.stop()
            except Exception as exc:  # the adapter may be gone already
                log.debug("stopping the BLE scanner failed: %s", _describe(exc))

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(self.retry_interval)
            async with self._lock:
                if self._scanner is None:
                    try:
                        await self._start_scanner()
                    except Exception as exc:
                        # Announced once already; repeating it every interval would be noise.
                        log.debug("Bluetooth adapter still unavailable: %s", _describe(exc))
                        continue
                    log.warning(
                        "Bluetooth adapter found: BLE devices enabled (%s scanning)",
                        self.active_mode,
                    )
                    continue
                try:
                    # Public bleak API that fails once BlueZ no longer lists the adapter.
                    await BleakAdapter.get(bluez=self._adapter_args())
                except Exception as exc:
                    self._announce_unavailable("Bluetooth adapter lost", exc)
                    await self._drop_scanner()

    def _adapter_args(self) -> BlueZAdapterArgs:
        return {} if self.adapter is None else {"adapter": self.adapter}

    async def _start_scanner(self) -> None:
        modes: list[Literal["active", "passive"]] = (
            ["passive", "active"] if self.scanning_mode == "auto" else [self.scanning_mode]
        )
        error: Exception | None = None
        for mode in modes:
            bluez: BlueZScannerArgs = {}
            if self.adapter is not None:
                bluez["adapter"] = self.adapter
            if mode == "passive":
                bluez["or_patterns"] = list(self.or_patterns)
            scanner = BleakScanner(self._on_detection, scanning_mode=mode, bluez=bluez)
            try:
                await scanner.start()
            except Exception as exc:
                log.debug("%s BLE scanning unavailable: %s", mode, _describe(exc))
                error = exc
                continue
            self._scanner = scanner
            self.active_mode = mode
            log.info("BLE scanning started (%s)", mode)
            return
        assert error is not None
        raise error

    def _on_detection(self, device: BLEDevice, data: AdvertisementData) -> None:
        address = device.address.upper()
        seen = self._seen
        seen.pop(address, None)
        seen[address] = device
        if len(seen) > _MAX_SEEN:
            del seen[next(iter(seen))]
        advertisement = Advertisement(
            address=address,
            name=data.local_name,
            rssi=data.rssi,
            service_data=dict(data.service_data),
            manufacturer_data=dict(data.manufacturer_data),
            # BlueZ does not say whether an advertisement was connectable; assume it is and
            # let a connection attempt tell.
            connectable=True,
            ts=time.monotonic(),
        )
        for callback in list(self._callbacks):
            try:
                callback(advertisement)
            except Exception:
                # One consumer's bug must not silence the radio for all the others.
                log.exception("BLE advertisement callback failed")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


ReadingCallback = Callable[[str, BTHomeReading, int], None]
ErrorCallback = Callable[[str, BTHomeError], None]


@dataclass
class _DeviceState:
    last_payload: bytes | None = None
    # True when a repeat of last_payload cannot carry anything new: it had a packet id or was
    # encrypted (a repeat would only be a replay) or it failed (it would fail again).
    repeat_is_redundant: bool = False
    last_packet_id: int | None = None
    last_counter: int | None = None


class BTHomeDecoder:
    """Turns advertisements with BTHome service data into `on_reading(address, reading, rssi)`.

    Usable directly as a radio callback. `bind_keys` maps addresses to 16-byte keys (or their
    hex); a device with a key must send encrypted payloads (downgrades are rejected). Problems
    go to `on_error(address, error)` (default: a log line) once per distinct payload, never up
    into the radio.
    """

    def __init__(
        self,
        on_reading: ReadingCallback,
        *,
        bind_keys: Mapping[str, bytes | str] | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        self.on_reading = on_reading
        self.on_error = on_error if on_error is not None else _log_error
        self._bind_keys: dict[str, bytes] = {}
        for address, key in (bind_keys or {}).items():
            self.set_bind_key(address, key)
        self._devices: dict[str, _DeviceState] = {}

    def set_bind_key(self, address: str, key: bytes | str | None) -> None:
        address = address.upper()
        if key is None:
            self._bind_keys.pop(address, None)
            return
        raw = bytes.fromhex(key) if isinstance(key, str) else bytes(key)
        if len(raw) != 16:
            raise ValueError(f"bind key for {address}: 16 bytes expected, got {len(raw)}")
        self._bind_keys[address] = raw

    def last_counter(self, address: str) -> int | None:
        state = self._devices.get(address.upper())
        return None if state is None else state.last_counter

    def __call__(self, advertisement: Advertisement) -> None:
        payload = advertisement.service_data.get(BTHOME_UUID)
        if payload is None:
            return
        address = advertisement.address
        state = self._devices.get(address)
        if state is None:
            state = self._devices[address] = _DeviceState()
        elif payload == state.last_payload and state.repeat_is_redundant:
            # bluetoothd reports every repetition of an advertisement (and RSSI changes);
            # skipping them here keeps the decode cost at one per distinct packet.
            return
        state.last_payload = payload
        error: BTHomeError | None = None
        try:
            reading: BTHomeReading | None = parse_bthome(
                payload,
                mac=address,
                bind_key=self._bind_keys.get(address),
                last_counter=state.last_counter,
            )
        except BTHomeError as exc:
            error = exc
            reading = exc.partial
        if error is not None:
            state.repeat_is_redundant = True
            self.on_error(address, error)
            if reading is None:
                return
        assert reading is not None
        state.repeat_is_redundant = error is not None or (
            reading.packet_id is not None or reading.encrypted
        )
        if reading.counter is not None:
            state.last_counter = reading.counter
        if reading.packet_id is not None:
            if reading.packet_id == state.last_packet_id:
                return
            state.last_packet_id = reading.packet_id
        self.on_reading(address, reading, advertisement.rssi)


def _log_error(address: str, error: BTHomeError) -> None:
    log.warning("BTHome advertisement from %s rejected: %s", address, error)
