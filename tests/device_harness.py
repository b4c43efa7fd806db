"""A gateway in the test's event loop, restartable on the same store, for device-session tests.

Device sessions reach it over the in-process transport; commands are sent by paho-mqtt (a
real, independent client, in a worker thread because it blocks).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.app import Gateway
from gateway.client.mqtt import MQTTClient
from gateway.config import load_config
from gateway.mqtt.packets import Publish
from tests import paho_helpers
from tests.conftest import free_port, write_config


class Harness:
    """A gateway that can be restarted on the same store, and clients of it."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.config_path = write_config(tmp_path, self.port)
        self.gateway: Gateway | None = None
        self.clients: list[MQTTClient] = []

    async def start(self) -> None:
        self.gateway = Gateway(load_config(self.config_path))
        await self.gateway.start()

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
            self.gateway = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # Looked up on each call, so that sessions reach the gateway after a restart.
        assert self.gateway is not None
        return await self.gateway.server.connect_in_process()

    async def observer(self, topic_filter: str) -> list[Publish]:
        """Everything published on topic_filter from now on (retained included)."""
        seen: list[Publish] = []

        async def record(message: Publish) -> bool:
            seen.append(message)
            return True

        client = MQTTClient(self.connect, record)
        await client.connect(f"observer-{len(self.clients)}")
        await client.subscribe(topic_filter, qos=1)
        self.clients.append(client)
        return seen

    async def send_commands(self, topic: str, *payloads: bytes) -> None:
        """Publish with paho (QoS 1, waits for each PUBACK)."""

        def send() -> None:
            client = paho_helpers.Client(self.port, "commander")
            try:
                for payload in payloads:
                    client.publish(topic, payload, qos=1)
            finally:
                client.disconnect()

        await asyncio.to_thread(send)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def payloads(messages: list[Publish], topic: str) -> list[Any]:
    return [json.loads(m.payload) for m in messages if m.topic == topic]
