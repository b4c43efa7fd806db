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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self

from dbus_fast import BusType, DBusError, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusBool,
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
        return False

    @dbus_property(access=PropertyAccess.READ)
    def ServicesResolved(self) -> DBusBool:
        return False

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
