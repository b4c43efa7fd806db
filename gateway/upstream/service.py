"""All upstream bridges of the gateway, and what they report.

Each bridge's status is published retained on ``<prefix>/bridge/upstream/<name>`` (QoS 0)
when its state changes and at most once a second while its counters move. The statuses go
through a connection of their own, not through a bridge's local session: that session is
closed while its upstream is unreachable, which is exactly when the status matters most.

The admin API reads the same statuses through :meth:`UpstreamService.upstream_statuses`
and polls :attr:`UpstreamService.version` to notice changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence

from gateway.client.mqtt import MQTTClient, MQTTClientError
from gateway.upstream.bridge import UpstreamBridge
from gateway.upstream.local import LocalBroker
from gateway.upstream.settings import LOCAL_CLIENT_ID_PREFIX, UpstreamConfig
from gateway.upstream.status import UpstreamStatus

log = logging.getLogger("gateway.upstream")

# Upstream names are [a-z0-9_-]+, so this can never be a bridge's own session.
STATUS_CLIENT_ID = LOCAL_CLIENT_ID_PREFIX + ".status"
STATUS_INTERVAL = 1.0


class UpstreamService:
    def __init__(
        self,
        configs: Sequence[UpstreamConfig],
        local: LocalBroker,
        topic_prefix: str = "gw",
        *,
        window: int = 100,
        status_interval: float = STATUS_INTERVAL,
    ) -> None:
        self._local = local
        self._topic_prefix = topic_prefix
        self._interval = status_interval
        self.bridges = [
            UpstreamBridge(c, local, topic_prefix, on_change=self._changed, window=window)
            for c in configs
        ]
        self._version = 0
        self._published: dict[str, dict[str, object]] = {}
        self._rates: dict[str, tuple[float, float]] = {}
        self._last_counts: dict[str, tuple[int, int, float]] = {}
        self._client: MQTTClient | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._dirty: set[str] = set()
        self._flush_scheduled = False

    # --- UpstreamLayer (gateway/admin) ------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    def upstream_statuses(self) -> list[UpstreamStatus]:
        return [self._status(b) for b in self.bridges]

    # --- life cycle -------------------------------------------------------------------------

    async def prime(self) -> None:
        """Create the bridges' local sessions: before the broker takes clients, so that
        nothing published from then on misses the queue of an upstream."""
        for bridge in self.bridges:
            try:
                await bridge.prime()
            except Exception:
                log.exception("upstream %s: could not set up its local session", bridge.name)

    async def start(self) -> None:
        """Connect every bridge (in the background; each retries on its own)."""
        await self._connect_status_client()
        for bridge in self.bridges:
            bridge.start()
            log.info(
                "upstream %s: bridging to %s:%d (MQTT %s%s) as %r, %d topic rule(s)",
                bridge.name,
                bridge.config.host,
                bridge.config.port,
                "5" if bridge.config.protocol == 5 else "3.1.1",
                ", TLS" if bridge.config.tls is not None else "",
                bridge.client_id,
                len(bridge.config.topics),
            )
        self._publish_all(force=True)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        await asyncio.gather(*(b.stop() for b in self.bridges), return_exceptions=True)
        self._publish_all(force=True)
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(MQTTClientError):
                await client.disconnect()

    # --- statuses ---------------------------------------------------------------------------

    def _status(self, bridge: UpstreamBridge) -> UpstreamStatus:
        rate_out, rate_in = self._rates.get(bridge.name, (0.0, 0.0))
        return bridge.status(rate_out, rate_in)

    def _changed(self, bridge: UpstreamBridge) -> None:
        """A bridge's state changed: publish it now (at the end of this loop turn)."""
        self._dirty.add(bridge.name)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_dirty)

    def _flush_dirty(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for bridge in self.bridges:
            if bridge.name in dirty:
                self._publish(bridge, force=False)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._measure_rates()
            if self._client is None or not self._client.connected:
                await self._connect_status_client()
            self._publish_all(force=False)

    def _measure_rates(self) -> None:
        now = time.monotonic()
        for bridge in self.bridges:
            c = bridge.counters
            last = self._last_counts.get(bridge.name)
            self._last_counts[bridge.name] = (c.forwarded, c.received, now)
            if last is None or now <= last[2]:
                continue
            elapsed = now - last[2]
            self._rates[bridge.name] = (
                (c.forwarded - last[0]) / elapsed,
                (c.received - last[1]) / elapsed,
            )

    def _publish_all(self, force: bool) -> None:
        for bridge in self.bridges:
            self._publish(bridge, force)

    def _publish(self, bridge: UpstreamBridge, force: bool) -> None:
        body = self._status(bridge).as_json()
        if not force and body == self._published.get(bridge.name):
            return
        self._published[bridge.name] = body
        self._version += 1
        client = self._client
        if client is None or not client.connected:
            return  # published with the next tick once the client is back
        topic = f"{self._topic_prefix}/bridge/upstream/{bridge.name}"
        payload = json.dumps(body, separators=(",", ":")).encode()
        asyncio.get_running_loop().create_task(_publish_quietly(client, topic, payload))

    async def _connect_status_client(self) -> None:
        client = MQTTClient(self._local.connect)
        try:
            await client.connect(STATUS_CLIENT_ID, clean_start=True, keep_alive=0)
        except MQTTClientError as exc:
            log.warning("upstream status publisher could not connect: %s", exc)
            return
        self._client = client
        self._published.clear()  # publish everything again on this connection


async def _publish_quietly(client: MQTTClient, topic: str, payload: bytes) -> None:
    try:
        await client.publish(topic, payload, 0, True)
    except MQTTClientError as exc:  # the next tick publishes again on a new connection
        log.debug("upstream status not published: %s", exc)
