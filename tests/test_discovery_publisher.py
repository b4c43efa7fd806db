"""The discovery publisher's bookkeeping under concurrency: calls that wait for its lock
publish from what is known when they get it, not from what was known when they were made."""

from __future__ import annotations

import asyncio

from devices.discovery_publisher import DiscoveryPublisher
from devices.homeassistant import DeviceFacts
from devices.model import Device


class GatedBridge:
    """Records what is published; a publish waits while the gate is closed."""

    connected = True

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        await self.gate.wait()
        self.published.append((topic, payload))


async def test_facts_arriving_during_a_removal_do_not_bring_the_removed_entity_back() -> None:
    bridge = GatedBridge()
    publisher = DiscoveryPublisher(lambda: bridge)  # type: ignore[arg-type, return-value]
    device = Device.of_kind("plug", "shelly", name="Plug")
    await publisher.announce(device, {"on": True, "temperature": 40.5}, merge=False)
    temperature = [t for t, _ in bridge.published if t.endswith("/temperature/config")]
    assert temperature, bridge.published
    topic = temperature[0]

    bridge.gate.clear()  # the removal holds the lock while its publish waits
    removal = asyncio.create_task(publisher.announce(device, {"on": True}, merge=False))
    await asyncio.sleep(0)
    facts = asyncio.create_task(
        publisher.set_facts(device, DeviceFacts("Shelly", "SNPL-00112EU", "1.4.4"))
    )
    await asyncio.sleep(0)
    bridge.gate.set()
    await asyncio.gather(removal, facts)

    last = [payload for t, payload in bridge.published if t == topic][-1]
    assert last == b"", "the removed reading's config was published again"
    # The facts did arrive: the plug's configs name its model now.
    assert any(b"SNPL-00112EU" in payload for _, payload in bridge.published)
