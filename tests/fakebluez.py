"""A fake BlueZ (`org.bluez`) on a private dbus-daemon, for driving the real bleak in tests.

Only what bleak's BlueZ backend actually calls is modelled: an adapter (`Adapter1` with
`Powered`/`Roles`, discovery methods, optionally `AdvertisementMonitorManager1` for passive
scanning) and devices (`Device1`) that "advertise" by emitting `PropertiesChanged` on a timer,
as bluetoothd does for every received advertisement while discovery is on.
"""

# No `from __future__ import annotations`: dbus-fast reads the D-Bus signatures from the
# annotations, and a postponed "None" return annotation would be mistaken for a signature.

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self

from dbus_fast import BusType, DBusError, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusBool,
    DBusBytes,
    DBusDict,
    DBusInt16,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
)
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

DBusStrList = Annotated[list[str], DBusSignature("as")]
DBusServiceData = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
DBusManufacturerData = Annotated[dict[int, Variant], DBusSignature("a{qv}")]

# D-Bus member names are CamelCase, so the methods below that implement them are too.
ADAPTER_PATH = "/org/bluez/hci0"

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@dataclass
class PrivateBus:
    address: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def private_bus(config_dir: Path) -> Iterator[PrivateBus]:
    """Run a dbus-daemon of its own for one test; its address is yielded, the daemon reaped."""
    # Unix socket paths are limited to ~107 bytes and pytest's tmp_path can be longer.
    socket_dir = tempfile.mkdtemp(prefix="fbz")
    config = config_dir / "bus.conf"
    config.write_text(_BUS_CONFIG.format(socket=os.path.join(socket_dir, "bus")))
    # The daemon's complaints (e.g. it may not raise its fd limit here) go to a file, not the
    # test output.
    with open(config_dir / "dbus-daemon.log", "wb") as stderr:
        process = subprocess.Popen(
            ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert process.stdout is not None
        address = process.stdout.readline().decode().strip()
        if not address:
            raise RuntimeError("dbus-daemon did not print its address")
        yield PrivateBus(address, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - daemon stuck
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(socket_dir, ignore_errors=True)


def _service_data_variant(service_data: dict[str, bytes]) -> dict[str, Variant]:
    return {uuid: Variant("ay", bytes(value)) for uuid, value in service_data.items()}


def _manufacturer_data_variant(data: dict[int, bytes]) -> dict[int, Variant]:
    return {company: Variant("ay", bytes(value)) for company, value in data.items()}


class FakeAdapter(ServiceInterface):
    def __init__(self, address: str = "00:1A:7D:DA:71:13") -> None:
        super().__init__("org.bluez.Adapter1")
        self._address = address
        self.discovering = False
        self.filters: list[dict[str, Any]] = []
        self.discovery_starts = 0

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return self._address

    @dbus_property(access=PropertyAccess.READ)
    def Powered(self) -> DBusBool:
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Discovering(self) -> DBusBool:
        return self.discovering

    @dbus_property(access=PropertyAccess.READ)
    def Roles(self) -> DBusStrList:
        return ["central", "peripheral"]

    @dbus_method()
    def SetDiscoveryFilter(self, properties: DBusDict) -> None:
        self.filters.append({key: value.value for key, value in properties.items()})

    @dbus_method()
    def StartDiscovery(self) -> None:
        if self.discovering:
            raise DBusError("org.bluez.Error.InProgress", "Operation already in progress")
        self.discovering = True
        self.discovery_starts += 1
        self.emit_properties_changed({"Discovering": True})

    @dbus_method()
    def StopDiscovery(self) -> None:
        if not self.discovering:
            raise DBusError("org.bluez.Error.Failed", "No discovery started")
        self.discovering = False
        self.emit_properties_changed({"Discovering": False})


class FakeMonitorManager(ServiceInterface):
    """Passive scanning: BlueZ >= 5.56 with --experimental. Registration is all bleak needs."""

    def __init__(self) -> None:
        super().__init__("org.bluez.AdvertisementMonitorManager1")
        self.monitors: list[str] = []

    @dbus_method()
    def RegisterMonitor(self, application: DBusObjectPath) -> None:
        self.monitors.append(application)

    @dbus_method()
    def UnregisterMonitor(self, application: DBusObjectPath) -> None:
        self.monitors.remove(application)


class FakeDevice(ServiceInterface):
    """A remote device as bluetoothd shows it; `advertise()` changes what it sends."""

    def __init__(
        self,
        address: str,
        local_name: str | None,
        *,
        rssi: int = -60,
        service_data: dict[str, bytes] | None = None,
        manufacturer_data: dict[int, bytes] | None = None,
    ) -> None:
        # `name` is taken by ServiceInterface (the interface name): hence `local_name`.
        super().__init__("org.bluez.Device1")
        self.address = address.upper()
        self.local_name = local_name
        self.path = f"{ADAPTER_PATH}/dev_{self.address.replace(':', '_')}"
        self.rssi = rssi
        self.service_data = dict(service_data or {})
        self.manufacturer_data = dict(manufacturer_data or {})
        self.advertising = True
        self.connected = False
        self.services_resolved = False
        self.services: list[FakeService] = []
        self._next_handle = 0x000A
        # Failure injection: a D-Bus error name raised by the next Connect calls (None: succeed).
        self.connect_error: str | None = None
        self.connects = 0
        self._bus: MessageBus | None = None

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return self.address

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        return "public"

    @dbus_property(access=PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        # bluetoothd's alias for a nameless device is the address with dashes.
        return self.local_name or self.address.replace(":", "-")

    @dbus_property(access=PropertyAccess.READ)
    def Adapter(self) -> DBusObjectPath:
        return ADAPTER_PATH

    @dbus_property(access=PropertyAccess.READ)
    def Paired(self) -> DBusBool:
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Connected(self) -> DBusBool:
        return self.connected

    @dbus_property(access=PropertyAccess.READ)
    def ServicesResolved(self) -> DBusBool:
        return self.services_resolved

    @dbus_property(access=PropertyAccess.READ)
    def RSSI(self) -> DBusInt16:
        return self.rssi

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> DBusStrList:
        return sorted(self.service_data)

    @dbus_property(access=PropertyAccess.READ)
    def ServiceData(self) -> DBusServiceData:
        return _service_data_variant(self.service_data)

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(self) -> DBusManufacturerData:
        return _manufacturer_data_variant(self.manufacturer_data)

    @dbus_method()
    def Connect(self) -> None:
        if self.connect_error is not None:
            raise DBusError(self.connect_error, "le-connection-abort-by-remote")
        self.connects += 1
        if self.connected:
            return
        self.connected = True
        self.emit_properties_changed({"Connected": True})
        # bluetoothd resolves services after the link is up; bleak waits for exactly this.
        self.services_resolved = True
        self.emit_properties_changed({"ServicesResolved": True})

    @dbus_method()
    def Disconnect(self) -> None:
        self.link_lost()

    def link_lost(self) -> None:
        """The connection ends (Disconnect, or the device went away / back to sleep)."""
        if not self.connected:
            return
        self.services_resolved = False
        self.emit_properties_changed({"ServicesResolved": False})
        self.connected = False
        self.emit_properties_changed({"Connected": False})

    def add_characteristic(
        self,
        service_uuid: str,
        char_uuid: str,
        *,
        flags: list[str] | None = None,
        value: bytes = b"",
    ) -> "FakeCharacteristic":
        """Add a characteristic (and its primary service, once) to the GATT database."""
        assert self._bus is not None, "add the device to FakeBlueZ first"
        service = next((s for s in self.services if s.uuid == service_uuid), None)
        if service is None:
            service = FakeService(service_uuid, self.path, self._handle("service"))
            self.services.append(service)
            self._bus.export(service.path, service)
        char = FakeCharacteristic(
            char_uuid,
            service.path,
            self._handle(f"{service.path[len(self.path) + 1 :]}/char"),
            flags=flags or ["read", "write"],
            value=value,
        )
        service.characteristics.append(char)
        self._bus.export(char.path, char)
        return char

    def characteristic(self, char_uuid: str) -> "FakeCharacteristic":
        return next(c for s in self.services for c in s.characteristics if c.uuid == char_uuid)

    def _handle(self, prefix: str) -> str:
        # bleak takes the handle from the last four hex digits of the object path.
        handle = self._next_handle
        self._next_handle += 1
        return f"{self.path}/{prefix}{handle:04x}"

    def advertise(
        self,
        *,
        service_data: dict[str, bytes] | None = None,
        manufacturer_data: dict[int, bytes] | None = None,
        rssi: int | None = None,
    ) -> None:
        """Change the advertised content (and send it at once, as a new advertisement)."""
        if service_data is not None:
            self.service_data = dict(service_data)
        if manufacturer_data is not None:
            self.manufacturer_data = dict(manufacturer_data)
        if rssi is not None:
            self.rssi = rssi
        self.emit_advertisement()

    def emit_advertisement(self) -> None:
        self.emit_properties_changed(
            {
                "RSSI": self.rssi,
                "ServiceData": _service_data_variant(self.service_data),
                "ManufacturerData": _manufacturer_data_variant(self.manufacturer_data),
            }
        )


class FakeService(ServiceInterface):
    def __init__(self, uuid: str, device_path: str, path: str) -> None:
        super().__init__("org.bluez.GattService1")
        self.uuid = uuid
        self.device_path = device_path
        self.path = path
        self.characteristics: list[FakeCharacteristic] = []

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Device(self) -> DBusObjectPath:
        return self.device_path

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> DBusBool:
        return True


class FakeCharacteristic(ServiceInterface):
    """A characteristic that records writes; `write_errors` makes the next writes fail."""

    def __init__(
        self, uuid: str, service_path: str, path: str, *, flags: list[str], value: bytes
    ) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self.uuid = uuid
        self.service_path = service_path
        self.path = path
        self.flags = flags
        self.value = value
        self.writes: list[bytes] = []
        self.write_options: list[dict[str, Any]] = []
        # D-Bus error names raised by the next WriteValue calls, in order.
        self.write_errors: list[str] = []
        self.notifying = False
        # What the device does with a successful write (e.g. answer on a status characteristic).
        self.on_write: Callable[[bytes], None] | None = None

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> DBusObjectPath:
        return self.service_path

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> DBusStrList:
        return self.flags

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> DBusBytes:
        return self.value

    @dbus_method()
    def ReadValue(self, options: DBusDict) -> DBusBytes:
        return self.value

    @dbus_method()
    def WriteValue(self, value: DBusBytes, options: DBusDict) -> None:
        if self.write_errors:
            raise DBusError(self.write_errors.pop(0), "write failed")
        self.writes.append(bytes(value))
        self.write_options.append({key: v.value for key, v in options.items()})
        self.value = bytes(value)
        if self.on_write is not None:
            self.on_write(bytes(value))

    @dbus_method()
    def StartNotify(self) -> None:
        self.notifying = True

    @dbus_method()
    def StopNotify(self) -> None:
        self.notifying = False

    def notify(self, value: bytes) -> None:
        """A notification from the device: bluetoothd turns it into PropertiesChanged(Value)."""
        self.value = value
        self.emit_properties_changed({"Value": value})


class FakeNamedDevice(FakeDevice):
    """bluetoothd has a `Name` property only for devices that sent a local name."""

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return self.local_name or ""


class FakeBlueZ:
    """`org.bluez` with one adapter, hci0, exported on the bus at `bus_address`."""

    def __init__(
        self,
        bus_address: str,
        *,
        passive_supported: bool = True,
        advertise_interval: float = 0.1,
        with_adapter: bool = True,
    ) -> None:
        self.bus_address = bus_address
        self.with_adapter = with_adapter
        self.adapter = FakeAdapter()
        self.monitor_manager = FakeMonitorManager() if passive_supported else None
        self.advertise_interval = advertise_interval
        self.devices: dict[str, FakeDevice] = {}
        self._bus: MessageBus | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        bus = await MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM).connect()
        self._bus = bus
        await bus.request_name("org.bluez")
        if self.with_adapter:
            self.plug_adapter()
        self._ticker = asyncio.create_task(self._advertise_periodically())

    def plug_adapter(self) -> None:
        """hci0 appears (bluetoothd without an adapter until now): InterfacesAdded."""
        assert self._bus is not None, "start() first"
        self._bus.export(ADAPTER_PATH, self.adapter)
        if self.monitor_manager is not None:
            self._bus.export(ADAPTER_PATH, self.monitor_manager)

    def unplug_adapter(self) -> None:
        """hci0 goes away: bluetoothd drops it and the devices it had seen (InterfacesRemoved)."""
        assert self._bus is not None
        for device in self.devices.values():
            self._bus.unexport(device.path)
        if self.monitor_manager is not None:
            self._bus.unexport(ADAPTER_PATH, self.monitor_manager)
            self.monitor_manager.monitors.clear()
        self._bus.unexport(ADAPTER_PATH, self.adapter)
        self.adapter.discovering = False

    def replug_adapter(self) -> None:
        """hci0 is back, and the devices around it are seen again."""
        assert self._bus is not None
        self.plug_adapter()
        for device in self.devices.values():
            device.connected = device.services_resolved = False
            self._bus.export(device.path, device)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._bus is not None:
            self._bus.disconnect()
            with contextlib.suppress(Exception):
                await self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            self._bus = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def add_device(
        self,
        address: str,
        local_name: str | None = None,
        *,
        rssi: int = -60,
        service_data: dict[str, bytes] | None = None,
        manufacturer_data: dict[int, bytes] | None = None,
    ) -> FakeDevice:
        """A device comes into range; exporting it sends InterfacesAdded."""
        assert self._bus is not None, "start() first"
        device = (FakeDevice if local_name is None else FakeNamedDevice)(
            address,
            local_name,
            rssi=rssi,
            service_data=service_data,
            manufacturer_data=manufacturer_data,
        )
        self.devices[device.address] = device
        device._bus = self._bus
        self._bus.export(device.path, device)
        return device

    def remove_device(self, address: str) -> None:
        assert self._bus is not None
        device = self.devices.pop(address.upper())
        self._bus.unexport(device.path, device)

    async def _advertise_periodically(self) -> None:
        # A real device repeats its advertisement; bluetoothd turns every one received while
        # discovering into a PropertiesChanged (RSSI at least), which is what bleak reports.
        while True:
            await asyncio.sleep(self.advertise_interval)
            if not self.adapter.discovering and not (
                self.monitor_manager is not None and self.monitor_manager.monitors
            ):
                continue
            for device in list(self.devices.values()):
                if device.advertising:
                    device.emit_advertisement()
