"""Publishes Home Assistant MQTT discovery for the devices over the bridge's MQTT link.

devices/homeassistant/ builds the payloads (pure); this keeps what was sent: one retained
config per entity, published when a device's state first shows it and again only when it
changes; an entity whose key went away gets an empty retained config (Home Assistant removes
it). Home Assistant loses non-retained state on restart and announces itself with ``online``
on ``homeassistant/status``: `resend` then sends every config again. BTHome button and dimmer
events go to ``<prefix>/<id>/event``, not retained, so that a restart never replays a press.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable

from devices import homeassistant as ha
from devices.model import Device
from gateway.client.mqtt import MQTTClient, MQTTClientError

log = logging.getLogger(__name__)

DISCOVERY_PREFIX = "homeassistant"
DISTRIBUTION = "edge-gateway"


@functools.cache
def origin() -> ha.Origin:
    """The gateway's version, and its home page if the package declares one (Project-URL
    ``Homepage``), from the installed package's metadata."""
    from importlib import metadata  # with email and zipfile: ~1 MB, only once announcing

    try:
        meta = metadata.metadata(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return ha.Origin()
    url = None
    for entry in meta.get_all("Project-URL") or []:
        label, _, value = entry.partition(",")
        if label.strip().lower() in ("homepage", "home-page", "home") and value.strip():
            url = value.strip()
    return ha.Origin(sw_version=meta["Version"], support_url=url)


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


def shape(value: object) -> object:
    """What discovery configs are built from: keys, the kinds of values, and text values
    (events, firmware versions), recursively; numbers only as "a number"."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), shape(v)) for k, v in value.items()))
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return ("str", value)
    return type(value).__name__


class DiscoveryPublisher:
    def __init__(
        self,
        link: Callable[[], MQTTClient | None],
        prefix: str = "gw",
        discovery_prefix: str = DISCOVERY_PREFIX,
    ) -> None:
        self._link = link  # the bridge's client, when it is up
        self.prefix = prefix
        self.discovery_prefix = discovery_prefix
        # Per device: the keys its entities were built from, and what they were built from
        # (shape); per config topic: a digest of the last payload sent (only a change is sent
        # again). Not the payload: the broker keeps it retained already, and a thermostat's
        # configs are ~2 KB, the largest share of a device's memory here.
        self._keys: dict[str, dict[str, object]] = {}
        self._shapes: dict[str, tuple[Device, object, ha.DeviceFacts | None]] = {}
        self._sent: dict[str, bytes] = {}
        self._facts: dict[str, ha.DeviceFacts] = {}  # what each device said about itself
        self._lock = asyncio.Lock()

    @property
    def status_topic(self) -> str:
        return ha.status_topic(self.discovery_prefix)

    def bridge_messages(self) -> list[ha.Message]:
        return ha.bridge_messages(
            prefix=self.prefix, discovery_prefix=self.discovery_prefix, origin=origin()
        )

    def _connected(self) -> MQTTClient | None:
        bridge = self._link()
        return bridge if bridge is not None and bridge.connected else None

    async def resend(self) -> None:
        """Home Assistant came (back) online: every config again."""
        async with self._lock:
            bridge = self._connected()
            if bridge is None:
                return
            try:
                for topic, payload in [*self.bridge_messages(), *self._sent_messages()]:
                    await bridge.publish(topic, payload, qos=1, retain=True)
            except MQTTClientError as exc:
                log.warning("Home Assistant discovery not re-sent: %s", exc)

    def _sent_messages(self) -> list[ha.Message]:
        """The configs last sent, built again from what they were built from (the same
        functions give the same bytes: only those whose digest matches are sent)."""
        prefixes = {"prefix": self.prefix, "discovery_prefix": self.discovery_prefix}
        messages: list[ha.Message] = []
        for device_id, (device, _, facts) in self._shapes.items():
            keys = self._keys.get(device_id, {})
            for topic, payload in ha.discovery_messages(
                device, keys, facts=facts, origin=origin(), **prefixes
            ):
                if payload and self._sent.get(topic) == _digest(payload):
                    messages.append((topic, payload))
        return messages

    def facts_of(self, device_id: str) -> ha.DeviceFacts | None:
        return self._facts.get(device_id)

    async def set_facts(self, device: Device, facts: ha.DeviceFacts) -> None:
        """What the device told about itself (model, firmware, ...): its configs again."""
        if self._facts.get(device.id) == facts:
            return
        previous = self._facts.get(device.id)
        self._facts[device.id] = facts
        await self._publish(device, lambda known: known or {}, previous)

    async def announce(self, device: Device, state: dict[str, object], *, merge: bool) -> None:
        """Publish the configs that `state` adds or changes, remove those it drops.

        `merge`: the state is partial (a BTHome packet carries some readings, the next one
        others), so keys seen before stay; a LAN device reports its whole state every time.
        """

        def keys_of(known: dict[str, object] | None) -> dict[str, object]:
            return {**known, **state} if merge and known is not None else dict(state)

        await self._publish(device, keys_of, self._facts.get(device.id))

    async def _publish(
        self,
        device: Device,
        keys_of: Callable[[dict[str, object] | None], dict[str, object]],
        previous_facts: ha.DeviceFacts | None,
    ) -> None:
        """``keys_of`` makes the keys from those known when the lock is ours: a call that
        waited for it must not publish from keys another call has replaced meanwhile (a
        removed reading's config would come back)."""
        async with self._lock:
            bridge = self._connected()
            if bridge is None:
                return
            previous = self._keys.get(device.id)
            keys = keys_of(previous)
            facts = self._facts.get(device.id)
            # The configs depend on the keys and the kinds of their values, not on the numbers:
            # most readings change none of them, and rebuilding every config to find that out
            # was a fifth of the event loop under a stream of advertisements.
            signature = (device, shape(keys), facts)
            if self._shapes.get(device.id) == signature:
                self._keys[device.id] = keys
                return
            prefixes = {"prefix": self.prefix, "discovery_prefix": self.discovery_prefix}
            messages = ha.discovery_messages(device, keys, facts=facts, origin=origin(), **prefixes)
            if previous is not None:
                messages += ha.removal_messages(
                    device, previous, keys, facts=facts, previous_facts=previous_facts, **prefixes
                )
            try:
                for topic, payload in messages:
                    digest = _digest(payload) if payload else b""
                    if self._sent.get(topic, b"") == digest:
                        continue  # unchanged, or a removal of what was never sent
                    await bridge.publish(topic, payload, qos=1, retain=True)
                    if payload:
                        self._sent[topic] = digest
                    else:
                        self._sent.pop(topic, None)
            except MQTTClientError as exc:
                log.warning("%s: Home Assistant discovery not published: %s", device.id, exc)
                return  # the keys stay as they were: the next state tries again
            self._keys[device.id] = keys
            self._shapes[device.id] = signature

    async def events(self, device: Device, events: list[dict[str, str]]) -> None:
        bridge = self._connected()
        if bridge is None:
            return
        for event in events:
            topic, payload = ha.event_message(device, event, prefix=self.prefix)
            await bridge.publish(topic, payload, qos=1)
