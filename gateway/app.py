"""The composition root: the one place that builds and wires the gateway's components."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import time
from pathlib import Path

from devices.supervisor import Supervisor
from gateway.broker.core import Broker
from gateway.config import GatewayConfig, ListenerConfig
from gateway.persistence import MemoryStore, SqliteStore, Store
from gateway.server.server import ListenerSpec, Server

log = logging.getLogger("gateway")


def _ssl_context(listener: ListenerConfig) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert listener.certfile is not None and listener.keyfile is not None
    ctx.load_cert_chain(str(listener.certfile), str(listener.keyfile))
    if listener.cafile is not None:
        ctx.load_verify_locations(str(listener.cafile))
    if listener.require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def listener_specs(config: GatewayConfig) -> list[ListenerSpec]:
    specs = []
    for listener in config.listeners:
        specs.append(
            ListenerSpec(
                name=listener.name,
                kind=listener.type,
                host=listener.host or "",
                port=listener.port or 0,
                path=str(listener.path or ""),
                allow_anonymous=listener.allow_anonymous,
                ssl_context=_ssl_context(listener) if listener.type == "tls" else None,
            )
        )
    return specs


def build_store(config: GatewayConfig) -> Store:
    p = config.persistence
    if not p.enabled:
        return MemoryStore()
    return SqliteStore(
        p.path,
        synchronous=p.synchronous,
        group_window=p.group_commit_ms / 1000.0,
        max_size_bytes=p.max_size_mb * 1024 * 1024,
    )


class Gateway:
    """Everything that runs in the gateway process, started and stopped as one."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        settings = config.broker_settings()
        self.store = build_store(config)
        self.authenticator = config.build_authenticator()
        self.broker = Broker(settings, config.build_authorizer())
        self.server = Server(
            self.broker,
            self.store,
            self.authenticator,
            listener_specs(config),
            max_packet_size=settings.max_packet_size,
            topic_alias_maximum=settings.topic_alias_maximum,
            connect_timeout=config.limits.connect_timeout,
            max_connections=config.limits.max_connections,
        )

        self.broker.sys_extra = self._sys_figures
        self.supervisor: Supervisor | None = None

    def _sys_figures(self) -> list[tuple[str, str]]:
        """Counters of the connection layer and the store, for $SYS/broker/..."""
        server, store = self.server.stats, self.store.stats
        return [
            ("connections/refused", str(server.connections_refused)),
            ("connections/connect_timeouts", str(server.connect_timeouts)),
            ("connections/keepalive_timeouts", str(server.keepalive_timeouts)),
            ("connections/malformed_packets", str(server.malformed_packets)),
            ("publish/messages/dropped/slow_consumer", str(server.dropped_slow_consumer)),
            ("store/commits", str(store.commits)),
            ("store/commit_failures", str(store.failures)),
            ("store/commit_ms/avg", f"{store.avg_commit_ms:.2f}"),
            ("store/commit_ms/max", f"{store.max_commit_ms:.2f}"),
            ("store/size_bytes", str(store.size_bytes)),
        ]

    async def start(self) -> None:
        started = time.monotonic()
        snapshot = await self.store.open()
        self.broker.restore(snapshot, time.time())
        await self.server.start()
        # Everything restored lives as long as the process: keep it out of every future
        # garbage collection instead of rescanning it each time.
        gc.collect()
        gc.freeze()
        log.info(
            "broker ready in %.0f ms: %d persistent sessions, %d queued messages, %d retained",
            (time.monotonic() - started) * 1000,
            len(snapshot.sessions),
            len(snapshot.queue),
            len(snapshot.retained),
        )
        # Devices are clients of the broker, so they start once it serves.
        supervisor = Supervisor(
            self.config.devices, self.server.connect_in_process, self.config.topic_prefix
        )
        for line in supervisor.describe():
            log.info("%s", line)
        self.supervisor = supervisor
        try:
            await supervisor.start()
        except Exception:
            # The broker is the part other systems depend on: it keeps serving without
            # devices rather than taking them all down with it.
            log.exception("the device bridge failed to start; running without devices")
            self.supervisor = None
            try:
                await supervisor.stop()
            except Exception:
                log.exception("stopping the device bridge failed")
        if supervisor.idle():
            log.info(
                "no device source is active yet: running as a durable MQTT broker only "
                "(see devices: in the config)"
            )

    async def stop(self) -> None:
        # Device sessions close (and the bridge says offline) while the broker still runs.
        supervisor, self.supervisor = self.supervisor, None
        if supervisor is not None:
            try:
                await supervisor.stop()
            except Exception:
                log.exception("stopping the device supervisor failed")
        await self.server.stop()
        await self.store.close()


async def serve(config: GatewayConfig) -> None:
    gateway = Gateway(config)
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await gateway.stop()
    log.info("stopped")


def run(config: GatewayConfig, *, config_path: Path) -> int:
    # The broker allocates many short-lived objects per message but creates few cycles:
    # CPython's default generation-0 threshold (700) made collections a large share of
    # CPU under load (bench/), so collect less often.
    gc.set_threshold(50_000, 20, 20)
    logging.basicConfig(
        level=config.logging.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log.info("edge-gateway starting with %s", config_path)
    asyncio.run(serve(config))
    return 0
