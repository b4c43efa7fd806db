"""mDNS discovery with the real zeroconf library, on 127.0.0.1 only.

Simulated devices announce themselves from their own AsyncZeroconf (as a device on the LAN
would); the gateway's LanDiscovery browses with interfaces=["127.0.0.1"]. Each test uses fresh
random MAC addresses, so announcements from other tests or processes on this machine's
loopback can't be mistaken for its devices.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from zeroconf.asyncio import AsyncZeroconf

from devices.lan import LanDeviceInfo, LanDiscovery, ShellyGen2, Wled, device_id
from devices.lan.discovery import kind_of
from tests.lan_fakes import (
    LOOPBACK,
    Announcer,
    FakeShelly,
    FakeWled,
    announcer,
    service_info,
    shelly_plus_1pm,
    shelly_service,
    wled_service,
)

INTERFACES = [LOOPBACK]


def new_mac() -> str:
    return secrets.token_hex(6).upper()


@dataclass
class Seen:
    found: list[LanDeviceInfo] = field(default_factory=list)
    lost: list[LanDeviceInfo] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_found(self, dev: LanDeviceInfo) -> None:
        self.found.append(dev)
        self.changed.set()

    def on_lost(self, dev: LanDeviceInfo) -> None:
        self.lost.append(dev)
        self.changed.set()

    def found_ids(self, *ids: str) -> list[str]:
        return [d.id for d in self.found if d.id in ids]

    def lost_ids(self, *ids: str) -> list[str]:
        return [d.id for d in self.lost if d.id in ids]

    async def until(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        async def wait() -> None:
            while not cond():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)


@pytest.fixture
async def seen() -> Seen:
    return Seen()


@pytest.fixture
async def discovery(seen: Seen) -> AsyncIterator[LanDiscovery]:
    disc = LanDiscovery(interfaces=INTERFACES, on_found=seen.on_found, on_lost=seen.on_lost)
    await disc.start()
    try:
        yield disc
    finally:
        await disc.stop()


@pytest.fixture
async def lan() -> AsyncIterator[Announcer]:
    async with announcer() as ann:
        yield ann


@pytest.fixture
async def plug() -> AsyncIterator[FakeShelly]:
    async with shelly_plus_1pm(mac=new_mac()) as fake:
        yield fake


@pytest.fixture
async def strip() -> AsyncIterator[FakeWled]:
    async with FakeWled(mac=new_mac().lower()) as fake:
        yield fake


async def test_finds_shelly_and_wled_with_kind_id_host_port(
    discovery: LanDiscovery, seen: Seen, lan: Announcer, plug: FakeShelly, strip: FakeWled
) -> None:
    await lan.register(shelly_service(plug))
    wled_name = f"wled-{strip.mac[-6:]}"
    await lan.register(wled_service(strip, instance=wled_name))
    await seen.until(lambda: len(seen.found_ids(plug.device_id, wled_name)) == 2)

    by_id = {d.id: d for d in seen.found}
    shelly = by_id[plug.device_id]
    assert shelly.id == f"shellyplus1pm-{plug.mac.lower()}"
    assert (shelly.kind, shelly.host, shelly.port) == ("shelly", LOOPBACK, plug.port)
    assert shelly.name == plug.device_id
    assert shelly.properties["gen"] == "2"
    assert shelly.properties["app"] == "Plus1PM"
    assert shelly.service_type == "_shelly._tcp.local."

    wled = by_id[wled_name]
    assert (wled.kind, wled.host, wled.port) == ("wled", LOOPBACK, strip.port)
    assert wled.properties == {"mac": strip.mac}
    assert discovery.devices.keys() >= {plug.device_id, wled_name}

    # What was found is enough to drive the device.
    async with ShellyGen2(shelly.host, shelly.port, timeout=2) as dev:
        await dev.execute({"on": True})
        assert (await dev.get_state())["on"] is True
    async with Wled(wled.host, wled.port, timeout=2) as light:
        assert (await light.get_info()).mac == strip.mac


async def test_unregister_is_lost_and_reregister_is_found_again(
    discovery: LanDiscovery, seen: Seen, lan: Announcer, plug: FakeShelly
) -> None:
    info = shelly_service(plug)
    dev = plug.device_id
    await lan.register(info)
    await seen.until(lambda: seen.found_ids(dev) == [dev])

    await lan.unregister(info)
    await seen.until(lambda: seen.lost_ids(dev) == [dev])
    assert seen.lost[-1].port == plug.port
    assert dev not in discovery.devices

    await lan.register(info)
    await seen.until(lambda: seen.found_ids(dev) == [dev, dev])
    assert discovery.devices[dev].port == plug.port


async def test_shelly_on_two_service_types_is_one_device(
    discovery: LanDiscovery, seen: Seen, lan: Announcer, plug: FakeShelly
) -> None:
    dev = plug.device_id
    specific = shelly_service(plug)
    generic = shelly_service(plug, service_type="_http._tcp.local.")
    await lan.register(specific)
    await lan.register(generic)
    await seen.until(lambda: dev in discovery.devices)
    await asyncio.sleep(0.2)  # time for the _http._tcp copy to be resolved too
    assert seen.found_ids(dev) == [dev]
    assert discovery.devices[dev].service_type == "_shelly._tcp.local."

    await lan.unregister(specific)
    await asyncio.sleep(0.2)
    assert seen.lost_ids(dev) == []  # still announced under _http._tcp
    await lan.unregister(generic)
    await seen.until(lambda: seen.lost_ids(dev) == [dev])


async def test_http_services_are_recognised_only_for_known_families(
    discovery: LanDiscovery, seen: Seen, lan: Announcer, plug: FakeShelly, strip: FakeWled
) -> None:
    http = "_http._tcp.local."
    gen1 = f"shelly1-{new_mac()}"
    printer = f"printer-{new_mac()}"
    wled_name = f"wled-{strip.mac[-6:]}"
    await lan.register(service_info(http, gen1, 80, {"arch": "esp8266", "app": "switch1"}))
    await lan.register(service_info(http, printer, 631, {}))
    await lan.register(service_info(http, wled_name, strip.port, {}))
    await lan.register(shelly_service(plug, service_type=http))
    await seen.until(lambda: len(seen.found_ids(wled_name, plug.device_id)) == 2)
    await asyncio.sleep(0.2)
    kinds = {d.id: d.kind for d in seen.found}
    assert kinds[wled_name] == "wled"
    assert kinds[plug.device_id] == "shelly"
    assert device_id(gen1) not in kinds  # Gen1 Shelly: no RPC API
    assert device_id(printer) not in kinds


async def test_changed_announcement_is_reported_again(
    discovery: LanDiscovery, seen: Seen, lan: Announcer, strip: FakeWled
) -> None:
    name = f"wled-{strip.mac[-6:]}"
    await lan.register(wled_service(strip, instance=name))
    await seen.until(lambda: seen.found_ids(name) == [name])
    moved = service_info("_wled._tcp.local.", name, strip.port + 1, {"mac": strip.mac})
    await lan.update(moved)
    await seen.until(lambda: seen.found_ids(name) == [name, name])
    assert discovery.devices[name].port == strip.port + 1


async def test_async_callbacks_and_clean_stop(lan: Announcer, plug: FakeShelly) -> None:
    got: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def found(dev: LanDeviceInfo) -> None:
        await asyncio.sleep(0)
        await got.put(("found", dev.id))

    async def lost(dev: LanDeviceInfo) -> None:
        await got.put(("lost", dev.id))

    disc = LanDiscovery(
        interfaces=INTERFACES,
        on_found=found,
        on_lost=lost,
        service_types=["_shelly._tcp.local."],
    )
    info = shelly_service(plug)
    async with disc:
        await lan.register(info)
        while (event := await asyncio.wait_for(got.get(), 5)) != ("found", plug.device_id):
            pass
    assert disc.devices == {}
    # Stopped: nothing more is reported, and starting again works.
    await lan.unregister(info)
    await asyncio.sleep(0.1)
    assert all(e[1] != plug.device_id for e in drain(got))
    async with disc:
        await lan.register(info)
        while (event := await asyncio.wait_for(got.get(), 5)) != ("found", plug.device_id):
            pass
    assert event == ("found", plug.device_id)


def drain(q: asyncio.Queue[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


async def test_a_failing_callback_does_not_stop_discovery(lan: Announcer) -> None:
    a = await _started_fake(lan)
    b = await _started_fake(lan)
    found: list[str] = []

    def on_found(dev: LanDeviceInfo) -> None:
        found.append(dev.id)
        raise RuntimeError("consumer bug")

    try:
        async with LanDiscovery(interfaces=INTERFACES, on_found=on_found, on_lost=lambda d: None):
            for _ in range(100):
                if {a.device_id, b.device_id} <= set(found):
                    break
                await asyncio.sleep(0.05)
    finally:
        await a.stop()
        await b.stop()
    assert {a.device_id, b.device_id} <= set(found)


async def _started_fake(lan: Announcer) -> FakeShelly:
    fake = shelly_plus_1pm(mac=new_mac())
    await fake.start()
    await lan.register(shelly_service(fake))
    return fake


def test_ids_are_stable_and_topic_safe() -> None:
    assert device_id("ShellyPlus1PM-A8032AB12345") == "shellyplus1pm-a8032ab12345"
    assert device_id("Living room/lamp #2") == "living-room-lamp-2"
    assert device_id("wled-abc+def") == "wled-abc-def"
    assert kind_of("_shelly._tcp.local.", "anything", {}) == "shelly"
    assert kind_of("_http._tcp.local.", "shellyplus2pm-1", {"gen": "3"}) == "shelly"
    assert kind_of("_http._tcp.local.", "shelly1-1", {"app": "switch1"}) is None
    assert kind_of("_http._tcp.local.", "WLED-kitchen", {}) == "wled"
    assert kind_of("_http._tcp.local.", "nas", {}) is None


async def test_shared_zeroconf_is_used_and_left_open(lan: Announcer, plug: FakeShelly) -> None:
    shared = AsyncZeroconf(interfaces=INTERFACES)
    seen = Seen()
    try:
        disc = LanDiscovery(
            interfaces=INTERFACES, on_found=seen.on_found, on_lost=seen.on_lost, zeroconf=shared
        )
        async with disc:
            await lan.register(shelly_service(plug))
            await seen.until(lambda: seen.found_ids(plug.device_id) == [plug.device_id])
        assert not shared.zeroconf.done  # the owner closes it, not the discovery
    finally:
        await shared.async_close()
