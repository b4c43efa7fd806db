"""A paho client that keeps what the gateway publishes, for black-box device tests."""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import Callable
from typing import Any

from paho_helpers import Client


class Watcher:
    """Subscribed to some topic filters (default gw/#): the last message per topic, and all
    of them in order."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.last: dict[str, bytes] = {}
        self.all: list[tuple[str, bytes]] = []

    @classmethod
    async def start(cls, port: int, *filters: str, client_id: str = "watcher") -> Watcher:
        client = await asyncio.to_thread(Client, port, client_id)
        for topic_filter in filters or ("gw/#",):
            await asyncio.to_thread(client.subscribe, topic_filter, 1)
        return cls(client)

    def _drain(self) -> None:
        while True:
            try:
                m = self.client.messages.get_nowait()
            except queue.Empty:
                return
            self.last[m.topic] = bytes(m.payload)
            self.all.append((m.topic, bytes(m.payload)))

    async def until(self, predicate: Callable[[Watcher], bool], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._drain()
            if predicate(self):
                return
            if loop.time() > deadline:
                raise AssertionError(f"condition not met; last messages: {self.last}")
            await asyncio.sleep(0.02)

    def json(self, topic: str) -> Any:
        return json.loads(self.last[topic])

    def results(self, topic: str) -> list[dict[str, Any]]:
        self._drain()
        return [json.loads(p) for t, p in self.all if t == topic]

    def discovery(self, device_id: str) -> list[dict[str, Any]]:
        """The non-empty retained Home Assistant configs whose entity reads gw/<device_id>/..."""
        self._drain()
        found = []
        for topic, payload in self.last.items():
            if topic.startswith("homeassistant/") and topic.endswith("/config") and payload:
                config = json.loads(payload)
                if str(config.get("state_topic", "")).startswith(f"gw/{device_id}/"):
                    found.append(config)
        return found

    async def close(self) -> None:
        await asyncio.to_thread(self.client.disconnect)


def listed(w: Watcher, device_id: str) -> dict[str, Any] | None:
    if "gw/bridge/devices" not in w.last:
        return None
    return next((d for d in w.json("gw/bridge/devices") if d["id"] == device_id), None)
