"""BLE scanning through the real bleak against a fake BlueZ on a private D-Bus, into BTHome.

The fake (tests/fakebluez.py) runs in the test's own event loop on a dbus-daemon of its own;
bleak finds it through DBUS_SYSTEM_BUS_ADDRESS exactly as it would find bluetoothd. The
BTHomeDecoder unit tests at the end need no D-Bus at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from fakebluez import FakeBlueZ, FakeDevice

from devices.ble.bthome import (
    BTHomeError,
    BTHomeReading,
    DecryptionFailed,
    DowngradeRejected,
    ReplayedCounter,
    UnknownObject,
)
from devices.ble.link import BleakLink
from devices.ble.radio import BTHOME_UUID, Advertisement, Link, LinkError, Radio
from devices.ble.scanner import BleakRadio, BTHomeDecoder

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    # bleak keeps its D-Bus socket per event loop and may only drop it when the loop is gone.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

SENSOR = "A4:C1:38:00:00:01"
LOCKED = "A4:C1:38:00:00:02"
KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
OTHER_KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


# --- BTHome v2 payloads, built from the spec (https://bthome.io/format/) -----------------------


def objects(packet_id: int | None, *, temperature: float, humidity: float, battery: int) -> bytes:
    """Object ids ascending, as the spec asks: 0x00 packet id, 0x01 battery %,
    0x02 temperature (sint16, 0.01 °C), 0x03 humidity (uint16, 0.01 %)."""
    out = b"" if packet_id is None else bytes((0x00, packet_id))
    out += bytes((0x01, battery))
    out += b"\x02" + round(temperature * 100).to_bytes(2, "little", signed=True)
    out += b"\x03" + round(humidity * 100).to_bytes(2, "little")
    return out


def plain(payload: bytes) -> dict[str, bytes]:
    # Device info 0x40: BTHome version 2, not encrypted, regularly sent.
    return {BTHOME_UUID: b"\x40" + payload}


def encrypted(payload: bytes, *, key: bytes, mac: str, counter: int) -> dict[str, bytes]:
    # https://bthome.io/encryption/: nonce = MAC + UUID 0xFCD2 (LE) + device info + counter;
    # AES-CCM with a 4-byte MIC; the frame is info, ciphertext, counter, MIC.
    info = 0x41
    counter_bytes = counter.to_bytes(4, "little")
    nonce = bytes.fromhex(mac.replace(":", "")) + b"\xd2\xfc" + bytes((info,)) + counter_bytes
    sealed = AESCCM(key, tag_length=4).encrypt(nonce, payload, None)
    return {BTHOME_UUID: bytes((info,)) + sealed[:-4] + counter_bytes + sealed[-4:]}


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
async def bluez(system_bus: str, bleak_released: None) -> AsyncIterator[FakeBlueZ]:
    async with FakeBlueZ(system_bus) as fake:
        yield fake


@pytest.fixture
async def radio_factory(bleak_released: None) -> AsyncIterator[Callable[..., BleakRadio]]:
    radios: list[BleakRadio] = []

    def make(**kwargs: object) -> BleakRadio:
        radio = BleakRadio(**kwargs)  # type: ignore[arg-type]
        radios.append(radio)
        return radio

    yield make
    for radio in radios:
        await radio.stop()


class Collector:
    def __init__(self) -> None:
        self.readings: list[tuple[str, BTHomeReading, int]] = []
        self.errors: list[tuple[str, BTHomeError]] = []

    def on_reading(self, address: str, reading: BTHomeReading, rssi: int) -> None:
        self.readings.append((address, reading, rssi))

    def on_error(self, address: str, error: BTHomeError) -> None:
        self.errors.append((address, error))

    def values(self, address: str) -> list[dict[str, object]]:
        return [dict(r.values) for a, r, _ in self.readings if a == address]


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# --- real bleak + fake BlueZ ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("passive_supported", "mode", "expected"),
    [(True, "auto", "passive"), (False, "auto", "active"), (True, "active", "active")],
)
async def test_bthome_sensor_is_scanned_and_decoded(
    system_bus: str,
    bleak_released: None,
    radio_factory: Callable[..., BleakRadio],
    passive_supported: bool,
    mode: str,
    expected: str,
) -> None:
    collected = Collector()
    async with FakeBlueZ(system_bus, passive_supported=passive_supported) as bluez:
        radio = radio_factory(scanning_mode=mode)
        await radio.start(BTHomeDecoder(collected.on_reading, on_error=collected.on_error))
        assert radio.active_mode == expected
        if expected == "passive":
            assert len(bluez.monitor_manager.monitors) == 1  # type: ignore[union-attr]
            assert not bluez.adapter.discovering
        else:
            assert bluez.adapter.discovering
            assert bluez.adapter.filters[-1]["Transport"] == "le"

        bluez.add_device(
            SENSOR,
            "ATC_000001",
            rssi=-67,
            service_data=plain(objects(9, temperature=25.06, humidity=50.55, battery=93)),
        )
        await until(lambda: bool(collected.readings))
        address, reading, rssi = collected.readings[0]
        assert address == SENSOR
        assert rssi == -67
        assert reading.values == {"battery": 93, "temperature": 25.06, "humidity": 50.55}
        assert reading.units == {"battery": "%", "temperature": "°C", "humidity": "%"}
        assert reading.packet_id == 9
        assert not reading.encrypted
        assert collected.errors == []

        await radio.stop()
        assert not radio.scanning
        assert not bluez.adapter.discovering
        if bluez.monitor_manager is not None:
            assert bluez.monitor_manager.monitors == []


async def test_encrypted_sensor_right_key_decodes_wrong_key_is_an_error(
    bluez: FakeBlueZ, radio_factory: Callable[..., BleakRadio]
) -> None:
    collected = Collector()
    decoder = BTHomeDecoder(
        collected.on_reading,
        bind_keys={SENSOR: KEY, LOCKED.lower(): OTHER_KEY.hex()},
        on_error=collected.on_error,
    )
    radio = radio_factory(scanning_mode="active")
    await radio.start(decoder)

    payload = objects(1, temperature=-3.5, humidity=81.0, battery=40)
    bluez.add_device(
        LOCKED, "locked", service_data=encrypted(payload, key=KEY, mac=LOCKED, counter=7)
    )
    good = bluez.add_device(
        SENSOR, "sensor", service_data=encrypted(payload, key=KEY, mac=SENSOR, counter=7)
    )
    await until(lambda: bool(collected.readings) and bool(collected.errors))
    assert collected.values(SENSOR) == [{"battery": 40, "temperature": -3.5, "humidity": 81.0}]
    assert collected.readings[0][1].encrypted
    assert decoder.last_counter(SENSOR) == 7

    assert {address for address, _ in collected.errors} == {LOCKED}
    assert isinstance(collected.errors[0][1], DecryptionFailed)
    assert collected.values(LOCKED) == []

    # The failure stayed with that device: the radio keeps delivering, the next packet counts.
    later = objects(2, temperature=-3.0, humidity=80.0, battery=40)
    good.advertise(service_data=encrypted(later, key=KEY, mac=SENSOR, counter=8))
    await until(lambda: len(collected.readings) == 2)
    assert collected.values(SENSOR)[1]["temperature"] == -3.0
    assert decoder.last_counter(SENSOR) == 8
    # Repeats of the same bad advertisement (every 100 ms) are reported once, not each time.
    await asyncio.sleep(0.3)
    assert len(collected.errors) == 1


async def test_repeated_packet_ids_are_dropped(
    bluez: FakeBlueZ, radio_factory: Callable[..., BleakRadio]
) -> None:
    collected = Collector()
    seen: list[Advertisement] = []
    radio = radio_factory(scanning_mode="active")
    decoder = BTHomeDecoder(collected.on_reading, on_error=collected.on_error)
    await radio.start(seen.append)
    await radio.start(decoder)  # a second subscriber of the same scanner

    sensor = bluez.add_device(
        SENSOR, service_data=plain(objects(1, temperature=20.0, humidity=40.0, battery=90))
    )
    # The fake repeats the advertisement every 100 ms, like a real device.
    await until(lambda: len(seen) >= 5)
    assert len(collected.readings) == 1

    sensor.advertise(rssi=-70)  # same packet, new RSSI: still the same packet
    # Same packet id with other content: a repeat as far as BTHome is concerned.
    sensor.advertise(service_data=plain(objects(1, temperature=99.0, humidity=40.0, battery=90)))
    sensor.advertise(service_data=plain(objects(2, temperature=21.0, humidity=41.0, battery=90)))
    await until(lambda: len(collected.readings) == 2)
    count = len(seen)
    await until(lambda: len(seen) >= count + 3)
    assert [v["temperature"] for v in collected.values(SENSOR)] == [20.0, 21.0]
    # Ids need not increase: a different id is a new packet (devices restart, ids wrap).
    sensor.advertise(service_data=plain(objects(1, temperature=22.0, humidity=41.0, battery=90)))
    await until(lambda: len(collected.readings) == 3)
    assert collected.errors == []
    assert {a.address for a in seen} == {SENSOR}
    assert seen[0].name is None  # no local name advertised


@pytest.mark.parametrize("bluez_state", ["absent", "without-adapter"])
async def test_no_adapter_warns_once_and_retries_until_one_appears(
    bluez_state: str,
    system_bus: str,
    bleak_released: None,
    radio_factory: Callable[..., BleakRadio],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="devices.ble.scanner")
    collected = Collector()
    radio = radio_factory(retry_interval=0.1)
    async with contextlib.AsyncExitStack() as stack:
        bluez: FakeBlueZ | None = None
        if bluez_state == "without-adapter":
            # bluetoothd runs, but has no adapter (none plugged in, or blocked by rfkill).
            bluez = await stack.enter_async_context(FakeBlueZ(system_bus, with_adapter=False))
        # Otherwise nothing owns org.bluez on this bus: as on a server without Bluetooth.
        await radio.start(BTHomeDecoder(collected.on_reading))
        assert not radio.scanning

        def warnings() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

        def retries() -> int:
            return sum("still unavailable" in r.getMessage() for r in caplog.records)

        await until(lambda: retries() >= 3)
        assert len(warnings()) == 1
        assert warnings()[0].startswith(
            "no Bluetooth adapter: BLE devices disabled, retrying every 0.1 s"
        )

        # bluetoothd starts or an adapter is plugged in: scanning begins without a restart.
        if bluez is None:
            bluez = await stack.enter_async_context(FakeBlueZ(system_bus))
        else:
            bluez.plug_adapter()
        await until(lambda: radio.scanning)
        bluez.add_device(
            SENSOR, service_data=plain(objects(5, temperature=1.5, humidity=2.5, battery=3))
        )
        await until(lambda: bool(collected.readings))
        assert collected.values(SENSOR) == [{"battery": 3, "temperature": 1.5, "humidity": 2.5}]
        assert warnings()[1] == "Bluetooth adapter found: BLE devices enabled (passive scanning)"
        await radio.stop()


async def test_adapter_lost_while_scanning_is_noticed_and_recovered(
    bluez: FakeBlueZ,
    radio_factory: Callable[..., BleakRadio],
    caplog: pytest.LogCaptureFixture,
) -> None:
    collected = Collector()
    radio = radio_factory(scanning_mode="active", retry_interval=0.1)
    await radio.start(BTHomeDecoder(collected.on_reading))
    sensor = bluez.add_device(
        SENSOR, service_data=plain(objects(1, temperature=20.0, humidity=50.0, battery=80))
    )
    await until(lambda: len(collected.readings) == 1)

    bluez.unplug_adapter()  # USB dongle pulled
    await until(lambda: not radio.scanning)
    lost = [r.getMessage() for r in caplog.records if "adapter lost" in r.getMessage()]
    assert len(lost) == 1
    assert lost[0].startswith("Bluetooth adapter lost: BLE devices disabled, retrying every 0.1 s")

    bluez.replug_adapter()
    await until(lambda: radio.scanning)
    assert bluez.adapter.discovering
    sensor.advertise(service_data=plain(objects(2, temperature=21.0, humidity=50.0, battery=80)))
    await until(lambda: len(collected.readings) == 2)
    assert collected.values(SENSOR)[1]["temperature"] == 21.0


async def test_no_system_bus_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A container without /run/dbus: connecting fails before any BlueZ question is asked.
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'none'}")
    radio = BleakRadio(scanning_mode="active", retry_interval=60)
    await radio.start(lambda _: None)
    assert not radio.scanning
    [record] = [r for r in caplog.records if r.name == "devices.ble.scanner"]
    assert record.levelno == logging.WARNING
    assert "no Bluetooth adapter: BLE devices disabled, retrying every 60 s" in record.getMessage()
    await radio.stop()


# --- BTHomeDecoder without D-Bus --------------------------------------------------------------


def advert(service_data: dict[str, bytes], address: str = SENSOR, rssi: int = -50) -> Advertisement:
    return Advertisement(address=address, name=None, rssi=rssi, service_data=service_data)


def test_decoder_ignores_other_advertisements() -> None:
    collected = Collector()
    decoder = BTHomeDecoder(collected.on_reading, on_error=collected.on_error)
    decoder(advert({"0000fe95-0000-1000-8000-00805f9b34fb": b"\x30\x58"}))
    decoder(Advertisement(address=SENSOR, name="x", rssi=-1, manufacturer_data={0x0969: b"\x01"}))
    assert collected.readings == [] and collected.errors == []


def test_decoder_without_packet_id_reports_every_advertisement() -> None:
    # Nothing tells repeats from new measurements apart: each one is a reading.
    collected = Collector()
    decoder = BTHomeDecoder(collected.on_reading)
    data = plain(objects(None, temperature=20.0, humidity=50.0, battery=99))
    decoder(advert(data))
    decoder(advert(data))
    assert len(collected.readings) == 2


def test_decoder_rejects_replayed_counter_and_downgrade() -> None:
    collected = Collector()
    decoder = BTHomeDecoder(
        collected.on_reading, bind_keys={SENSOR: KEY}, on_error=collected.on_error
    )
    payload = objects(3, temperature=10.0, humidity=10.0, battery=10)
    decoder(advert(encrypted(payload, key=KEY, mac=SENSOR, counter=100)))
    # A genuine older packet captured and sent again later, with other content around it.
    old = objects(4, temperature=11.0, humidity=10.0, battery=10)
    decoder(advert(encrypted(old, key=KEY, mac=SENSOR, counter=99)))
    decoder(advert(plain(old)))
    assert len(collected.readings) == 1
    assert [type(e) for _, e in collected.errors] == [ReplayedCounter, DowngradeRejected]
    assert decoder.last_counter(SENSOR) == 100


def test_decoder_keeps_the_decodable_part_and_reports_the_rest() -> None:
    collected = Collector()
    decoder = BTHomeDecoder(collected.on_reading, on_error=collected.on_error)
    decoder(advert(plain(bytes((0x00, 1, 0x01, 55, 0xFE, 0x00)))))
    assert collected.values(SENSOR) == [{"battery": 55}]
    assert isinstance(collected.errors[0][1], UnknownObject)


def test_decoder_default_error_handler_logs(caplog: pytest.LogCaptureFixture) -> None:
    decoder = BTHomeDecoder(lambda *_: None, bind_keys={SENSOR: OTHER_KEY})
    decoder(
        advert(
            encrypted(
                objects(1, temperature=1, humidity=1, battery=1), key=KEY, mac=SENSOR, counter=1
            )
        )
    )
    assert f"BTHome advertisement from {SENSOR} rejected" in caplog.text


def test_bind_key_must_have_16_bytes() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        BTHomeDecoder(lambda *_: None, bind_keys={SENSOR: b"short"})


# --- GATT through BleakLink (real bleak) --------------------------------------------------------

THERMOSTAT = "00:1A:22:0C:00:01"
SERVICE = "3e135142-654f-9090-134a-a6ff5bb77046"
COMMAND = "3fa4585a-ce4a-3bad-db4b-b8df8179ea09"
STATUS = "d0e8434d-cd29-0996-af41-6c90f4e0eb2a"


@pytest.fixture
async def sleepy(
    bluez: FakeBlueZ, radio_factory: Callable[..., BleakRadio]
) -> AsyncIterator[tuple[FakeDevice, BleakLink]]:
    device = bluez.add_device(THERMOSTAT, "CC-RT-BLE", manufacturer_data={0x0000: b"\x00"})
    device.add_characteristic(SERVICE, COMMAND, flags=["write"])
    device.add_characteristic(SERVICE, STATUS, flags=["read", "notify"], value=b"\x02\x01")
    radio = radio_factory(scanning_mode="active")
    await radio.start(lambda _: None)
    await until(lambda: radio.ble_device(THERMOSTAT) is not None)
    yield device, BleakLink(radio)


async def test_link_connects_writes_and_disconnects(sleepy: tuple[FakeDevice, BleakLink]) -> None:
    device, link = sleepy
    await link.write(THERMOSTAT, COMMAND, b"\x41\x2a")
    command = device.characteristic(COMMAND)
    assert command.writes == [b"\x41\x2a"]
    assert command.write_options == [{"type": "request"}]
    assert device.connects == 1
    assert not device.connected

    async with link.connect(THERMOSTAT) as session:
        assert device.connected
        assert await session.read(STATUS) == b"\x02\x01"
        await session.write(COMMAND, b"\x03", response=False)
    assert command.writes[-1] == b"\x03"
    assert command.write_options[-1] == {"type": "command"}
    assert not device.connected


async def test_link_confirmation_by_notification(sleepy: tuple[FakeDevice, BleakLink]) -> None:
    device, link = sleepy
    status = device.characteristic(STATUS)
    # Like a thermostat answering every command with its new status.
    device.characteristic(COMMAND).on_write = lambda data: status.notify(b"\x02\x01" + data[1:])
    async with link.connect(THERMOSTAT) as session:
        replies = await session.subscribe(STATUS)
        assert status.notifying
        await session.write(COMMAND, b"\x41\x2b")
        assert await asyncio.wait_for(replies.get(), 3) == b"\x02\x01\x2b"


async def test_link_errors_have_a_kind_and_leave_no_connection(
    sleepy: tuple[FakeDevice, BleakLink],
) -> None:
    device, link = sleepy
    command = device.characteristic(COMMAND)

    command.write_errors = ["org.bluez.Error.Failed"]
    with pytest.raises(LinkError) as failed:
        await link.write(THERMOSTAT, COMMAND, b"\x41\x20")
    assert failed.value.kind == "gatt"
    assert not device.connected
    await link.write(THERMOSTAT, COMMAND, b"\x41\x21")  # the next attempt goes through
    assert command.writes == [b"\x41\x21"]

    device.connect_error = "org.bluez.Error.Failed"
    with pytest.raises(LinkError) as refused:
        await link.write(THERMOSTAT, COMMAND, b"\x41\x22")
    assert refused.value.kind == "connect_failed"
    device.connect_error = None

    async with link.connect(THERMOSTAT) as session:
        device.link_lost()  # the device went back to sleep mid-session
        await until(lambda: not session.connected)
        with pytest.raises(LinkError) as lost:
            await session.write(COMMAND, b"\x41\x23")
        assert lost.value.kind == "disconnected"

    with pytest.raises(LinkError) as unknown:
        await link.write("00:1A:22:0C:00:99", COMMAND, b"\x00")
    assert unknown.value.kind == "not_found"
    assert command.writes == [b"\x41\x21"]


def test_bleak_implementations_satisfy_the_seams() -> None:
    # Checked by mypy (structural typing); at runtime it only shows construction needs no bus.
    radio: Radio = BleakRadio()
    link: Link = BleakLink(BleakRadio())
    assert isinstance(radio, BleakRadio) and not radio.scanning
    assert isinstance(link, BleakLink)


def test_seam_and_parsers_do_not_import_bleak() -> None:
    # Device logic above the radio must be usable (and unit-testable) without a Bluetooth stack.
    code = (
        "import sys, devices.ble.radio, devices.ble.bthome; "
        "sys.exit(any(m.split('.')[0] in ('bleak', 'dbus_fast') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0
