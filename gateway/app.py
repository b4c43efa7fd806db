"""The composition root: the one place that builds and wires the gateway's components."""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from devices.ble.radio import Link, Radio
from devices.demo import DemoTimings
from devices.session import CLIENT_ID_PREFIX as DEVICE_CLIENT_ID_PREFIX
from devices.supervisor import BRIDGE_CLIENT_ID, Supervisor
from gateway.admin.service import AdminService
from gateway.auth.checks import PasswordChecks
from gateway.auth.passwords import PasswordFileError
from gateway.broker.core import VERSION, Broker
from gateway.broker.records import Snapshot
from gateway.compiled import describe as describe_build
from gateway.config import (
    ConfigError,
    DevicesConfig,
    GatewayConfig,
    KnownDeviceConfig,
    load_config,
    websocket_origins,
    with_demo,
)
from gateway.persistence import MemoryStore, SqliteStore, Store, StoreError
from gateway.reload import plan_reload
from gateway.server.server import ListenerSpec, Server
from gateway.service_loop import serve_service
from gateway.startup import StartupError, cannot_listen
from gateway.upstream.settings import LOCAL_CLIENT_ID_PREFIX as UPSTREAM_CLIENT_ID_PREFIX
from gateway.upstream.status import upstream_sys_figures
from gateway.wiring import (
    broker_settings,
    build_authenticator,
    build_authorizer,
    check_limits,
    listener_tls_context,
)

# Imported where they are used: the demo (its plug serves HTTP with aiohttp) in demo mode
# only, the upstream bridges (~0.8 MB of modules) when an upstream is configured.
if TYPE_CHECKING:
    from devices.demo.demo import Demo
    from gateway.upstream.local import LocalBroker
    from gateway.upstream.service import UpstreamService

log = logging.getLogger("gateway")

# Seconds the listeners wait for the declared devices' sessions at start-up (normally a few ms).
SERVE_WITHIN = 10.0


def listener_specs(config: GatewayConfig) -> list[ListenerSpec]:
    specs = []
    for listener in config.listeners:
        tls = listener.type in ("tls", "wss")
        specs.append(
            ListenerSpec(
                name=listener.name,
                kind=listener.type,
                host=listener.host or "",
                port=listener.port or 0,
                path=str(listener.path or ""),
                url_path=listener.url_path or "/mqtt",
                origins=websocket_origins(listener),
                allow_anonymous=listener.allow_anonymous,
                ssl_context=listener_tls_context(listener) if tls else None,
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
    `config_path`: the file `reload()` reads again (None: the config was built in code).
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        demo_timings: DemoTimings | None = None,
        config_path: Path | None = None,
    ) -> None:
        if config.demo:
            with_demo(config)  # a config built in code may not have been checked: ConfigError
        self.config = config
        self.config_path = config_path
        self._reloading = asyncio.Lock()
        self.demo_timings = demo_timings
        self.demo: Demo | None = None
        # The device and upstream bridges' client ids are refused to network clients (DESIGN §8).
        settings = replace(
            broker_settings(config),
            reserved_client_id_prefixes=(DEVICE_CLIENT_ID_PREFIX, UPSTREAM_CLIENT_ID_PREFIX),
        )
        self.store = build_store(config)
        # Outlives reloads: an attacker's back-off must not start over with a new config.
        self.password_checks = PasswordChecks(check_limits(config))
        self.authenticator = build_authenticator(config, self.password_checks)
        self.broker = Broker(settings, build_authorizer(config))
        self.server = Server(
            self.broker,
            self.store,
            self.authenticator,
            listener_specs(config),
            max_packet_size=settings.max_packet_size,
            topic_alias_maximum=settings.topic_alias_maximum,
            connect_timeout=config.limits.connect_timeout,
            max_connections=config.limits.max_connections,
            max_pending_per_address=config.limits.max_pending_per_address,
            max_pending_connections=config.limits.max_pending_connections,
            send_stall_timeout=config.limits.send_stall_timeout,
        )

        self.broker.sys_extra = self._sys_figures
        # The store measures, the broker decides what it refuses while the store is full.
        self.store.on_limit = self.broker.set_store_full
        self.supervisor: Supervisor | None = None
        self.admin: AdminService | None = None
        self.upstream: UpstreamService | None = None

    def _sys_figures(self) -> list[tuple[str, str]]:
        """Counters of the connection layer and the store, for $SYS/broker/..."""
        server, store = self.server.stats, self.store.stats
        upstreams = self.upstream.upstream_statuses() if self.upstream is not None else []
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
            *self.server.guard_figures(),
            *self.password_checks.figures(),
            ("store/full", "1" if self.broker.store_full else "0"),
            *upstream_sys_figures(upstreams),
        ]

    @property
    def _config_file(self) -> str:
        return str(self.config_path) if self.config_path is not None else "the configuration"

    async def start(self) -> None:
        """Start everything; StartupError (one line for a person) if the store cannot be
        opened or a listener cannot be bound. A failed start closes what it opened, so the
        process can exit at once (the store's thread would otherwise keep it alive)."""
        try:
            await self._start()
        except BaseException:
            await self._abandon_start()
            raise

    async def _abandon_start(self) -> None:
        for step in (self._stop_services, self.server.stop, self.store.close):
            try:
                await step()
            except Exception:
                log.debug("cleaning up after a failed start: %s failed", step, exc_info=True)
        self.password_checks.close()

    async def _open_store(self) -> Snapshot:
        try:
            return await self.store.open()
        except StoreError as exc:
            raise StartupError(f"{exc} (persistence.path in {self._config_file})") from exc

    async def _bind_listeners(self) -> None:
        try:
            await self.server.start(serve=False)
        except OSError as exc:
            # Server.start binds the listeners in order: the ones before the failure are bound.
            index = len(self.server.bound)
            if index >= len(self.config.listeners):
                raise StartupError(f"cannot listen: {exc}") from exc
            listener = self.config.listeners[index]
            raise StartupError(cannot_listen(listener, index, exc, self._config_file)) from exc

    async def _start(self) -> None:
        log.info("edge-gateway %s, %s", VERSION, describe_build())
        await self._restore()
        await self._prime_upstream()
        # Devices are clients of the broker, so they start once it serves.
        supervisor = await self._start_devices()
        await self.server.serve()
        if supervisor.idle():
            log.info(
                "no device source is active yet: running as a durable MQTT broker only "
                "(see devices: in the config)"
            )
        await self._start_upstream()
        if self.config.admin_api:
            await self._start_admin()
        else:
            log.info("admin API off (admin_api: false): no requests answered, no live updates")

    async def _restore(self) -> None:
        """The broker's state out of the store, and the listeners bound (not yet serving)."""
        started = time.monotonic()
        snapshot = await self._open_store()
        self.broker.restore(snapshot, time.time())
        self.store.over_limit()  # a store that is full already says so now (on_limit)
        # Listeners are bound now (a port in use fails at once) but take clients only once the
        # declared devices' sessions exist: a command sent at the first start must find the
        # session it is queued in.
        await self._bind_listeners()
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

    async def _start_devices(self) -> Supervisor:
        """The device bridge (and the demo's devices in demo mode). The listeners start
        serving once its sessions exist, or after SERVE_WITHIN if it is slow to come up."""
        devices = self.config.devices
        radio: Radio | None = None
        link: Link | None = None
        if self.config.demo:
            from devices.demo.demo import start_demo

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
        starting = asyncio.ensure_future(supervisor.start())
        done, _ = await asyncio.wait({starting}, timeout=SERVE_WITHIN)
        if not done:
            # A radio or mDNS stack that is slow to come up must not keep the broker away.
            log.warning("the device bridge is still starting after %g s; serving", SERVE_WITHIN)
            await self.server.serve()
        try:
            await starting
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
        return supervisor

    def _upstream_local(self) -> LocalBroker:
        """What the upstream bridges need from the broker besides their MQTT connections."""
        from gateway.upstream.local import LocalBroker, SessionFigures

        broker = self.broker
        settings = broker.settings

        def figures(client_id: str) -> SessionFigures | None:
            info = broker.session_info_of(client_id)
            if info is None:
                return None
            return SessionFigures(info.queued + info.inflight, info.dropped, info.subscriptions)

        return LocalBroker(
            connect=self.server.connect_in_process,
            figures=figures,
            packet_ids=broker.session_packet_ids,
            receive_maximum=settings.receive_maximum,
            max_inflight_out=settings.max_inflight_out,
            max_packet_size=settings.max_packet_size,
        )

    async def _prime_upstream(self) -> None:
        """The upstream bridges' local sessions, before the broker takes clients: what is
        published from then on is queued for the upstream even if it is never reachable."""
        if not self.config.upstream:
            return
        from gateway.upstream.service import UpstreamService

        upstream = UpstreamService(
            self.config.upstream, self._upstream_local(), self.config.topic_prefix
        )
        await upstream.prime()
        self.upstream = upstream

    async def _start_upstream(self) -> None:
        """The upstream bridges (gateway/upstream), once the broker serves: each connects in
        the background and retries on its own, so none holds up the start."""
        upstream = self.upstream
        if upstream is None:
            return
        try:
            await upstream.start()
        except Exception:
            log.exception("the upstream bridges failed to start; running without them")
            self.upstream = None
            await upstream.stop()

    async def _start_admin(self) -> None:
        """The admin API (gateway/admin), after the devices it reports on."""
        admin = AdminService(
            self.server,
            self.server.connect_in_process,
            lambda: self.supervisor,
            self.config.topic_prefix,
            reload=self.reload,
            store_bytes=lambda: self.store.stats.size_bytes,
            version=VERSION,
            upstreams=lambda: self.upstream,
            own_clients=(BRIDGE_CLIENT_ID,),
            status_interval=self.config.admin_status_interval,
        )
        try:
            await admin.start()
        except Exception:
            log.exception("the admin API failed to start; running without it")
            await admin.stop()
            return
        self.admin = admin

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

    async def reload(self) -> list[str]:
        """Read the config file again and apply what can change while running (see
        gateway/reload.py): auth, admin users, ACLs, connection limits, log level. Every
        connection is kept. Returns the changes applied, and logs them and the changes that
        need a restart. A bad file raises ConfigError (logged) and changes nothing."""
        async with self._reloading:
            path = self.config_path
            if path is None:
                raise ConfigError("<config>", "", "no config file to reload from")
            try:
                new = await asyncio.to_thread(load_config, path)
                if self.config.demo and not new.demo:
                    new = with_demo(new, str(path))  # `run --demo` outlives the reload
                plan = plan_reload(self.config, new)
                # Both built before anything is swapped, so a failure leaves the old in force.
                authenticator = build_authenticator(plan.config, self.password_checks)
                authorizer = build_authorizer(plan.config)
            except PasswordFileError as exc:
                error = ConfigError(str(path), "auth.password_file", str(exc))
                log.error("reload failed, the previous configuration stays in force: %s", error)
                raise error from None
            except ConfigError as exc:
                log.error("reload failed, the previous configuration stays in force: %s", exc)
                raise
            self.server.set_auth(authenticator, authorizer)
            self.authenticator = authenticator
            self.server.connect_timeout = plan.config.limits.connect_timeout
            self.server.max_connections = plan.config.limits.max_connections
            self._apply_abuse_limits(plan.config)
            if plan.config.logging != self.config.logging:  # run() set it from the config
                logging.getLogger().setLevel(plan.config.logging.level.upper())
            self.config = plan.config
            log.info(
                "reloaded %s: %d users, %d ACL rules; connections kept",
                path,
                len(authenticator.users),
                len(plan.config.auth.acl.rules),
            )
            if not plan.applied and not plan.restart_needed:
                log.info("  nothing changed")
            for change in plan.applied:
                log.info("  applied: %s", change)
            for key in plan.restart_needed:
                log.warning("  %s changed: needs a restart, the old value stays in force", key)
            for change in plan.weakened:
                log.warning("  access weakened: %s", change)
            return list(plan.applied)

    def _apply_abuse_limits(self, config: GatewayConfig) -> None:
        limits = config.limits
        self.server.max_pending_per_address = limits.max_pending_per_address
        self.server.max_pending_connections = limits.max_pending_connections
        self.server.send_stall_timeout = limits.send_stall_timeout
        self.password_checks.configure(check_limits(config))

    @property
    def outside_connections(self) -> int:
        """Network clients connected now (the gateway's own in-process clients not counted)."""
        return self.server.outside_connections

    async def stop(self) -> None:
        await self._stop_services()
        await self.server.stop()
        self.password_checks.close()
        await self.store.close()

    async def _stop_services(self) -> None:
        """The admin API, the device bridge and the demo: the broker's own clients."""
        admin, self.admin = self.admin, None
        if admin is not None:
            await admin.stop()
        # Device sessions close (and the bridge says offline) while the broker still runs.
        supervisor, self.supervisor = self.supervisor, None
        if supervisor is not None:
            try:
                await supervisor.stop()
            except Exception:
                log.exception("stopping the device supervisor failed")
        await self._stop_demo()
        # Last: what the devices said on their way out can still go up.
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            try:
                await upstream.stop()
            except Exception:
                log.exception("stopping the upstream bridges failed")


# The broker allocates many short-lived objects per message but creates few cycles:
# CPython's default generation-0 threshold (700) made collections a large share of CPU under
# load (bench/), so `run` collects less often.
GC_THRESHOLD = (50_000, 20, 20)
_STARTING_GC_THRESHOLD = (700, 10, 10)  # CPython's default


class _ProcessGateway(Gateway):
    """The gateway of `edge-gateway run`, which owns its process and so its collector."""

    async def _start_devices(self) -> Supervisor:
        # Except while the device sessions start: each leaves cyclic garbage (tasks, futures,
        # streams of its first connection), and a thousand of them collected only every
        # 50,000 allocations kept ~5 MB more of RSS for good (bench/bench_rss.py).
        gc.set_threshold(*_STARTING_GC_THRESHOLD)
        try:
            return await super()._start_devices()
        finally:
            gc.collect()
            gc.set_threshold(*GC_THRESHOLD)


def _build(config: GatewayConfig, config_path: Path | None) -> Gateway:
    """The gateway, or StartupError for a file the config names that changed since it was
    checked (certificates and the password file are read again here)."""
    where = str(config_path) if config_path is not None else "the configuration"
    try:
        return _ProcessGateway(config, config_path=config_path)
    except PasswordFileError as exc:
        raise StartupError(f"{exc} (auth.password_file in {where})") from exc
    except (OSError, ssl.SSLError) as exc:
        raise StartupError(
            f"cannot load a TLS certificate or key: {exc} (listeners in {where})"
        ) from exc


async def serve(config: GatewayConfig, config_path: Path | None = None) -> None:
    await serve_service(lambda: _build(config, config_path))


def run(config: GatewayConfig, *, config_path: Path) -> int:
    """Run until SIGTERM/SIGINT; 0 once stopped. Raises StartupError if the gateway cannot
    start (its traceback is logged at debug level only)."""
    gc.set_threshold(*GC_THRESHOLD)
    logging.basicConfig(
        level=config.logging.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log.info("edge-gateway starting with %s", config_path)
    try:
        asyncio.run(serve(config, config_path))
    except StartupError:
        log.debug("the gateway could not start", exc_info=True)
        raise
    return 0
