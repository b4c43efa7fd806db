"""The fake BlueZ speaks BlueZ's D-Bus types: checked on the wire, without bleak."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from fakebluez import ADAPTER_PATH, FakeBlueZ, private_bus

ADDRESS = "A4:C1:38:00:00:01"


@pytest.fixture
def bus_address(tmp_path: Path) -> Iterator[str]:
    with private_bus(tmp_path) as bus:
        yield bus.address


@pytest.fixture
async def client(bus_address: str) -> AsyncIterator[MessageBus]:
    bus = await MessageBus(bus_address=bus_address, bus_type=BusType.SYSTEM).connect()
    yield bus
    bus.disconnect()


async def call(bus: MessageBus, path: str, interface: str, member: str, **kw: Any) -> Message:
    reply = await bus.call(
        Message(destination="org.bluez", path=path, interface=interface, member=member, **kw)
    )
    assert reply is not None
    return reply


async def test_managed_objects_have_bluez_types(bus_address: str, client: MessageBus) -> None:
    async with FakeBlueZ(bus_address) as bluez:
        device = bluez.add_device(
            ADDRESS,
            "sensor",
            rssi=-71,
            service_data={"0000fcd2-0000-1000-8000-00805f9b34fb": b"\x40\x01\x64"},
            manufacturer_data={0x0969: b"\x01\x02"},
        )
        device.add_characteristic(
            "0000180f-0000-1000-8000-00805f9b34fb", "00002a19-0000-1000-8000-00805f9b34fb"
        )
        reply = await call(client, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
        assert reply.message_type == MessageType.METHOD_RETURN
        objects: dict[str, dict[str, dict[str, Variant]]] = reply.body[0]

        adapter = objects[ADAPTER_PATH]["org.bluez.Adapter1"]
        assert adapter["Powered"] == Variant("b", True)
        assert "central" in adapter["Roles"].value
        assert "org.bluez.AdvertisementMonitorManager1" in objects[ADAPTER_PATH]

        props = objects[device.path]["org.bluez.Device1"]
        signatures = {name: value.signature for name, value in props.items()}
        assert signatures["RSSI"] == "n"
        assert signatures["ServiceData"] == "a{sv}"
        assert signatures["ManufacturerData"] == "a{qv}"
        assert signatures["UUIDs"] == "as"
        assert signatures["Adapter"] == "o"
        service_data = props["ServiceData"].value
        assert service_data["0000fcd2-0000-1000-8000-00805f9b34fb"] == Variant(
            "ay", b"\x40\x01\x64"
        )
        assert props["ManufacturerData"].value[0x0969] == Variant("ay", b"\x01\x02")
        assert props["Name"].value == "sensor"

        # GATT objects hang below the device, handles in the last four hex digits.
        gatt = sorted(path for path in objects if path.startswith(device.path + "/"))
        assert gatt == [f"{device.path}/service000a", f"{device.path}/service000a/char000b"]
        char = objects[gatt[1]]["org.bluez.GattCharacteristic1"]
        assert char["Service"] == Variant("o", gatt[0])
        assert char["Flags"].signature == "as"


async def test_bluez_errors_come_back_as_dbus_errors(bus_address: str, client: MessageBus) -> None:
    async with FakeBlueZ(bus_address, passive_supported=False) as bluez:
        reply = await call(client, ADAPTER_PATH, "org.bluez.Adapter1", "StopDiscovery")
        assert reply.message_type == MessageType.ERROR
        assert reply.error_name == "org.bluez.Error.Failed"
        # Without advertisement monitors, RegisterMonitor is unknown, as on an older BlueZ.
        reply = await call(
            client,
            ADAPTER_PATH,
            "org.bluez.AdvertisementMonitorManager1",
            "RegisterMonitor",
            signature="o",
            body=["/org/test/monitor"],
        )
        assert reply.error_name == "org.freedesktop.DBus.Error.UnknownMethod"
        assert not bluez.adapter.discovering
