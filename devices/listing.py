"""How devices are listed: the retained ``<prefix>/bridge/devices`` list (kind, session policy,
link) that the bridge keeps current, and the admin API's entry for one device.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
from collections.abc import Callable
from typing import Protocol

from devices.model import Device
from devices.registry import LinkState, SessionRegistry
from devices.session import DeviceSession
from gateway.client.mqtt import MQTTClientError

log = logging.getLogger(__name__)


def bridge_listing(registry: SessionRegistry) -> list[dict[str, object]]:
    """The retained device list: id, kind, session kind and link of every listed device."""
    listing: list[dict[str, object]] = []
    for device_id, session, known in registry.listed():
        if session is not None:
            kind, policy = session.device.kind, session.device.policy
        else:
            assert known is not None
            kind, policy = known.kind, known.policy
        listing.append(
            {"id": device_id, "kind": kind, "session": policy.session,
             "link": registry.links[device_id]}
        )  # fmt: skip
    return listing


def admin_entry(
    device: Device,
    session: DeviceSession | None,
    link: LinkState,
    *,
    rssi: int | None,
    pending: int | None,
    policy_from: dict[str, str],
) -> dict[str, object]:
    """One device as the admin API lists it (gateway/admin): ``pending`` is the count of
    commands waiting as far as the device layer knows it, None when only the broker knows."""
    last_seen = None
    if session is not None and link != "unknown":
        last_seen = round(session.last_seen, 3)
    observed = None if session is None else session.observed_interval
    return {
        "id": device.id,
        "kind": device.kind,
        "name": device.name or device.id,
        "policy": dataclasses.asdict(device.policy),
        "link": link,
        "last_seen": last_seen,
        "address": device.address,
        "rssi": rssi,
        "wake_interval": device.policy.wake_interval,
        # Seconds between its last two wake-ups or reports, as heard.
        "wake_observed": None if observed is None else round(observed, 1),
        # Where each policy key's value comes from: the TUI's policy form.
        "policy_from": policy_from,
        "pending": pending,
        # What a command may be (gateway/commands/schema.py): the TUI checks with it before
        # sending; None for a device that takes no commands.
        "schema": _schema_data(device.schema.text) if device.schema is not None else None,
    }


@functools.lru_cache(maxsize=64)
def _schema_data(text: str) -> dict[str, object]:
    """One parsed copy per schema, shared by every device that has it: the admin API keeps
    its latest listing, and a copy per thermostat was ~3 KB each. Nobody may change it."""
    data = json.loads(text)
    assert isinstance(data, dict)
    return data


class Publishes(Protocol):
    """The bridge session, as far as the publisher needs it (gateway/client/mqtt.py)."""

    @property
    def connected(self) -> bool: ...

    async def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> object: ...


class ListingPublisher:
    """One task publishes the newest list, retained: a burst of changes becomes one or two
    publishes. The admin listing changes far more often (pending counts, last seen) than this
    list, so it is published only when it differs from the last one sent."""

    def __init__(
        self,
        build: Callable[[], list[dict[str, object]]],
        bridge: Callable[[], Publishes | None],
        topic: str,
    ) -> None:
        self._build = build
        self._bridge = bridge
        self.topic = topic
        self._changed = asyncio.Event()
        self._sent: bytes | None = None
        self._task: asyncio.Task[None] | None = None

    def changed(self) -> None:
        self._changed.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bridge-devices")
        self._changed.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def publish_once(self) -> bool:
        """Publish the list if the bridge is up and it is news; True if it was sent."""
        bridge = self._bridge()
        if bridge is None or not bridge.connected:
            return False
        payload = json.dumps(self._build(), separators=(",", ":")).encode()
        if payload == self._sent:
            return False
        try:
            await bridge.publish(self.topic, payload, qos=1, retain=True)
        except MQTTClientError as exc:
            log.warning("bridge: device list not published: %s", exc)
            return False
        self._sent = payload
        return True

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self.publish_once()
