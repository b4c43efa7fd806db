"""The parts the device supervisor is made of (devices/registry.py, policy_resolver.py,
presence.py, listing.py), each on its own: no broker, no radio, no LAN."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

import pytest

from devices.listing import ListingPublisher, admin_entry, bridge_listing
from devices.model import Device, DevicePolicy, PolicyError
from devices.policy_resolver import PolicyResolver, parse_overrides
from devices.presence import PresenceSchedule, presence_pause
from devices.registry import SessionRegistry
from devices.session import CLIENT_ID_PREFIX, DeviceSession
from gateway.client.mqtt import MQTTClientError


@dataclasses.dataclass(frozen=True)
class Known:
    id: str
    kind: str
    policy: DevicePolicy
    name: str = ""
    address: str | None = None
    host: str | None = None
    port: int = 80
    bind_key: str | None = None
    profile: str | None = None


class NoAdapter:
    async def execute(self, command: dict[str, object]) -> None:
        raise AssertionError("not used")


async def _no_connector() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    raise AssertionError("these tests never connect")


def session_of(device_id: str, kind: str = "bthome", **policy: object) -> DeviceSession:
    device = Device(device_id, kind, policy=DevicePolicy.for_kind(kind).with_overrides(policy))
    return DeviceSession(device, NoAdapter(), _no_connector, "gw", clock=lambda: 1000.0)


# --- registry ------------------------------------------------------------------------------------


def test_registry_counts_every_change_once_and_not_a_repeated_link() -> None:
    calls: list[int] = []
    registry = SessionRegistry([], lambda: calls.append(1))
    registry.add(session_of("a"))
    registry.list_device("a")
    registry.set_link("a", "online")
    registry.set_link("a", "online")  # no news
    assert registry.version == 2 and len(calls) == 2
    registry.list_device("a")  # already listed: its link stays
    assert registry.links == {"a": "online"}


def test_registry_lists_declared_and_met_devices_in_id_order() -> None:
    declared = Known("zeta", "shelly", DevicePolicy.for_kind("shelly"), host="10.0.0.9")
    registry = SessionRegistry([declared])
    registry.list_device("zeta")
    registry.add(session_of("alpha"))
    registry.list_device("alpha")
    registry.add(session_of("ghost"))  # has a session but is not listed (yet)
    assert [(i, s is not None, k is not None) for i, s, k in registry.listed()] == [
        ("alpha", True, False),
        ("zeta", False, True),
    ]
    assert registry.device_count() == 2


def test_registry_maps_client_ids_to_devices_and_back() -> None:
    declared = Known("heater", "eq3", DevicePolicy.for_kind("eq3"), address="AA:BB")
    registry = SessionRegistry([declared])
    registry.add(session_of("a"))
    assert registry.client_id_of("a") == CLIENT_ID_PREFIX + "a"
    assert registry.client_id_of("heater") == CLIENT_ID_PREFIX + "heater"  # no session yet
    assert registry.client_id_of("nobody") is None
    assert registry.device_of_client(CLIENT_ID_PREFIX + "a") == "a"
    assert registry.device_of_client(CLIENT_ID_PREFIX + "a.status") == "a"
    assert registry.device_of_client(CLIENT_ID_PREFIX + "heater") is None
    assert registry.device_of_client("a") is None  # someone else's client id
    assert registry.attempts("nobody", b"{}", None) == 0


# --- policies ------------------------------------------------------------------------------------


def test_overrides_apply_on_the_base_and_go_back_to_it() -> None:
    policies = PolicyResolver()
    base = DevicePolicy.for_kind("eq3")
    policies.remember_base("t", base)
    policies.remember_base("t", dataclasses.replace(base, queue_depth=99))  # first one counts
    assert policies.base("t") == base
    assert policies.update("t", {"queue_depth": 3}) is True
    assert policies.update("t", {"queue_depth": 3}) is False  # the echo of the same change
    assert policies.effective("t", base).queue_depth == 3
    assert policies.update("t", {}) is True  # empty: back to the base
    assert policies.effective("t", base) == base
    assert policies.update("t", None) is False


def test_an_override_that_no_longer_fits_is_logged_and_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policies = PolicyResolver()
    base = DevicePolicy.for_kind("eq3")
    policies.update("t", {"no_such_key": 1})
    with pytest.raises(PolicyError):
        base.with_overrides({"no_such_key": 1})
    with caplog.at_level(logging.WARNING):
        assert policies.effective("t", base) == base
    assert "stored policy" in caplog.text


def test_policy_sources_say_admin_config_or_default() -> None:
    policies = PolicyResolver()
    default = DevicePolicy.for_kind("eq3")
    config = dataclasses.replace(default, max_attempts=default.max_attempts + 1)
    policies.update("t", {"queue_depth": 2})
    sources = policies.sources("t", "eq3", config)
    assert sources["queue_depth"] == "admin"
    assert sources["max_attempts"] == "config"
    assert sources["session"] == "default"
    assert set(sources) == {f.name for f in dataclasses.fields(DevicePolicy)}
    assert set(policies.sources("t", "eq3", None).values()) == {"admin", "default"}


@pytest.mark.parametrize("payload", [b"[1]", b"not json", b"\xff\xfe", b'"text"', b"3"])
def test_unreadable_policy_messages_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        parse_overrides(payload)


def test_policy_messages_parse() -> None:
    assert parse_overrides(b"") is None
    assert parse_overrides(b'{"queue_depth": 2}') == {"queue_depth": 2}


# --- presence schedule ---------------------------------------------------------------------------


def test_presence_looks_four_times_per_shortest_wake_interval() -> None:
    assert presence_pause([], 10.0) == 10.0
    assert presence_pause([None, 300.0], 10.0) == 10.0
    assert presence_pause([20.0, None, 8.0], 10.0) == 2.0
    assert presence_pause([0.0], 10.0) == 0.05  # never a busy loop


async def test_presence_schedule_wakes_early_when_rescheduled() -> None:
    schedule = PresenceSchedule(presence_interval=3600.0)
    waiting = asyncio.create_task(schedule.wait([None]))
    await asyncio.sleep(0)
    assert not waiting.done()
    schedule.reschedule()
    await asyncio.wait_for(waiting, 5)


async def test_presence_schedule_waits_out_its_pause() -> None:
    schedule = PresenceSchedule(presence_interval=3600.0)
    await asyncio.wait_for(schedule.wait([0.0]), 5)  # 0.05 s, not an hour


# --- listing -------------------------------------------------------------------------------------


def test_bridge_listing_takes_the_session_over_the_declaration() -> None:
    declared = Known("t", "eq3", DevicePolicy.for_kind("eq3"), address="AA:BB")
    other = Known("w", "wled", DevicePolicy(session="clean"), host="10.0.0.2")
    registry = SessionRegistry([declared, other])
    for device_id in ("t", "w"):
        registry.list_device(device_id)
    registry.add(session_of("t", "eq3", session="clean"))
    registry.set_link("t", "online")
    assert bridge_listing(registry) == [
        {"id": "t", "kind": "eq3", "session": "clean", "link": "online"},
        {"id": "w", "kind": "wled", "session": "clean", "link": "unknown"},
    ]


def test_admin_entry_shows_last_seen_only_once_the_link_is_known() -> None:
    session = session_of("s")
    entry = admin_entry(session.device, session, "unknown", rssi=-60, pending=None,
                        policy_from={})  # fmt: skip
    assert entry["last_seen"] is None and entry["rssi"] == -60 and entry["name"] == "s"
    entry = admin_entry(session.device, session, "online", rssi=None, pending=2, policy_from={})
    assert entry["last_seen"] == 1000.0 and entry["pending"] == 2
    assert entry["policy"] == dataclasses.asdict(session.device.policy)
    assert entry["schema"] is None


class FakeBridge:
    def __init__(self) -> None:
        self.connected = True
        self.sent: list[tuple[str, bytes, int, bool]] = []
        self.fail = False

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if self.fail:
            raise MQTTClientError("link lost")
        self.sent.append((topic, payload, qos, retain))


async def test_listing_is_published_retained_and_only_when_it_changed() -> None:
    bridge = FakeBridge()
    listing: list[dict[str, object]] = [{"id": "a"}]
    publisher = ListingPublisher(lambda: listing, lambda: bridge, "gw/bridge/devices")
    assert await publisher.publish_once() is True
    assert await publisher.publish_once() is False  # the same list again
    listing.append({"id": "b"})
    bridge.connected = False
    assert await publisher.publish_once() is False  # sent when the bridge is back
    bridge.connected = True
    assert await publisher.publish_once() is True
    assert [(t, json.loads(p), q, r) for t, p, q, r in bridge.sent] == [
        ("gw/bridge/devices", [{"id": "a"}], 1, True),
        ("gw/bridge/devices", [{"id": "a"}, {"id": "b"}], 1, True),
    ]


async def test_a_failed_listing_publish_is_tried_again_with_the_next_change() -> None:
    bridge = FakeBridge()
    publisher = ListingPublisher(lambda: [{"id": "a"}], lambda: bridge, "gw/bridge/devices")
    bridge.fail = True
    assert await publisher.publish_once() is False
    bridge.fail = False
    assert await publisher.publish_once() is True


async def test_listing_publisher_task_coalesces_a_burst_of_changes() -> None:
    bridge = FakeBridge()
    builds: list[int] = []

    def build() -> list[dict[str, object]]:
        builds.append(1)
        return [{"n": len(builds)}]

    publisher = ListingPublisher(build, lambda: bridge, "gw/bridge/devices")
    publisher.start()
    for _ in range(50):
        publisher.changed()
    for _ in range(20):
        await asyncio.sleep(0)
    await publisher.stop()
    assert len(builds) == 1 and len(bridge.sent) == 1
