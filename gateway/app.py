"""The composition root: the one place that builds and wires the gateway's components."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
import time
from dataclasses import replace
from pathlib import Path

from devices.ble.radio import Link, Radio
from devices.demo import DemoTimings
from devices.demo.demo import Demo, start_demo
from devices.supervisor import Supervisor
from gateway.broker.core import Broker
from gateway.config import (
    DevicesConfig,
    GatewayConfig,
    KnownDeviceConfig,
    ListenerConfig,
    with_demo,
)
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


def _demo_devices(config: DevicesConfig, demo: Demo) -> DevicesConfig:
    """The configured devices plus the demo's. Both transports are on: the demo needs them,
    and its BLE devices come from a simulated radio, not from the adapter."""
    added = tuple(
        KnownDeviceConfig(
            id=d.id,
            kind=d.kind,
            policy=config.policy_for(d.kind, d.id, d.address, d.name),
            name=d.name,
            address=d.address,
            host=d.host,
            port=d.port,
        )
        for d in demo.devices
    )
    return replace(
        config,
        ble=replace(config.ble, enabled=True),
        lan=replace(config.lan, enabled=True),
        known=(*config.known, *added),
    )


def _mqtt_flags(config: GatewayConfig) -> str:
    """The mosquitto_sub/pub options that reach this gateway ("" for the tools' default)."""
    for listener in config.listeners:
        if listener.type == "tcp":
            host = listener.host or "127.0.0.1"
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
            if host in ("127.0.0.1", "localhost") and listener.port == 1883:
                return ""
            return f"-h {host} -p {listener.port} "
        if listener.type == "unix":
            return f"--unix {listener.path} "
    return ""


class Gateway:
    """Everything that runs in the gateway process, started and stopped as one.

    `demo_timings`: how fast the demo's devices live when demo mode is on (tests speed it up).
    """

    def __init__(self, config: GatewayConfig, *, demo_timings: DemoTimings | None = None) -> None:
        if config.demo:
            with_demo(config)  # a config built in code may not have been checked: ConfigError
        self.config = config
        self.demo_timings = demo_timings
        self.demo: Demo | None = None
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
        devices = self.config.devices
        radio: Radio | None = None
        link: Link | None = None
        if self.config.demo:
            try:
                self.demo = demo = await start_demo(self.demo_timings)
            except OSError as exc:
                log.error("the demo devices did not start, running without them: %s", exc)
            else:
                devices = _demo_devices(devices, demo)
                radio, link = demo.radio, demo.link
        supervisor = Supervisor(
            devices,
            self.server.connect_in_process,
            self.config.topic_prefix,
            radio=radio,
            link=link,
        )
        for line in supervisor.describe():
            if self.demo is not None and line.startswith("BLE:"):
                line = "BLE: simulated by the demo (no Bluetooth adapter is used)"
            log.info("%s", line)
        if self.demo is not None:
            self._log_demo(self.demo)
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
            await self._stop_demo()
        if supervisor.idle():
            log.info(
                "no device source is active yet: running as a durable MQTT broker only "
                "(see devices: in the config)"
            )

    def _log_demo(self, demo: Demo) -> None:
        prefix, flags = self.config.topic_prefix, _mqtt_flags(self.config)
        log.info("DEMO MODE: simulated devices, no Bluetooth adapter or LAN device is used:")
        for line in demo.describe():
            log.info("  %s", line)
        log.info("  watch everything:   mosquitto_sub %s-t '%s/#' -v", flags, prefix)
        log.info(
            "  switch the plug on: mosquitto_pub %s-t %s/demo-plug/set -m '{\"on\": true}' -q 1",
            flags,
            prefix,
        )
        log.info(
            "  set the thermostat: mosquitto_pub %s-t %s/demo-thermostat/set "
            "-m '{\"target_temp\": 22.5}' -q 1",
            flags,
            prefix,
        )
        log.info(
            "  the thermostat's command waits in %s/demo-thermostat/pending while it sleeps; "
            "%s/demo-thermostat/result says 'delivered' once it woke up and carried it out",
            prefix,
            prefix,
        )

    async def _stop_demo(self) -> None:
        demo, self.demo = self.demo, None
        if demo is not None:
            try:
                await demo.stop()
            except Exception:
                log.exception("stopping the demo devices failed")

    async def stop(self) -> None:
        # Device sessions close (and the bridge says offline) while the broker still runs.
        supervisor, self.supervisor = self.supervisor, None
        if supervisor is not None:
            try:
                await supervisor.stop()
            except Exception:
                log.exception("stopping the device supervisor failed")
        await self._stop_demo()
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
