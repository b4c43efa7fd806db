"""An eQ-3 radiator thermostat on the fake BlueZ: its GATT service, answers and sleep.

The thermostat side of the protocol (devices/ble/eq3.py `apply_command`/`encode_status`)
runs behind the fake BlueZ's D-Bus objects, so the gateway reaches it with the real bleak.
Asleep, the device is out of the adapter's object tree (bluetoothd drops a device it no
longer hears); awake, it is exported again and advertises, which is the gateway's cue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fakebluez import FakeBlueZ, FakeCharacteristic, FakeDevice

from devices.ble import eq3


@dataclass
class FakeEq3:
    bluez: FakeBlueZ
    address: str
    status: eq3.Eq3Status = field(default_factory=eq3.Eq3Status)
    device: FakeDevice | None = None
    # Everything written to the command characteristic, over every wake-up.
    writes: list[bytes] = field(default_factory=list)
    write_errors: list[str] = field(default_factory=list)  # D-Bus errors for the next writes
    wakes: int = 0

    @property
    def awake(self) -> bool:
        return self.device is not None and self.device.advertising

    def wake(self) -> FakeDevice:
        """The thermostat wakes and advertises (connectable) until `sleep()`."""
        device = self.device
        if device is None:
            # First heard: bluetoothd adds the device object (InterfacesAdded).
            device = self.bluez.add_device(self.address, "CC-RT-BLE", rssi=-71)
            command = device.add_characteristic(eq3.SERVICE_UUID, eq3.WRITE_CHAR, flags=["write"])
            notify = device.add_characteristic(eq3.SERVICE_UUID, eq3.NOTIFY_CHAR, flags=["notify"])
            command.write_errors = self.write_errors
            command.on_write = lambda data: self._written(data, notify)
            self.device = device
        device.advertising = True
        device.connect_error = None
        self.wakes += 1
        device.emit_advertisement()
        return device

    def sleep(self) -> None:
        """Radio off: no advertisements, connections fail, an open link drops."""
        device = self.device
        if device is not None:
            device.advertising = False
            device.connect_error = "org.bluez.Error.Failed"
            device.link_lost()

    def command_char(self) -> FakeCharacteristic:
        assert self.device is not None
        return self.device.characteristic(eq3.WRITE_CHAR)

    def _written(self, data: bytes, notify: FakeCharacteristic) -> None:
        self.writes.append(data)
        self.status = eq3.apply_command(self.status, data)
        if notify.notifying:
            notify.notify(eq3.encode_status(self.status))
