"""The whole file: its top-level keys and the sections they hold."""

from __future__ import annotations

from dataclasses import dataclass, replace

from gateway.config.auth import AuthConfig, read_auth
from gateway.config.devices import DevicesConfig, check_demo_ids, read_devices
from gateway.config.limits import LimitsConfig, read_limits
from gateway.config.listeners import (
    DEFAULT_LISTENERS,
    ListenerConfig,
    check_listener_clashes,
    describe_listener,
    read_listener,
)
from gateway.config.persistence import PersistenceConfig, read_persistence
from gateway.config.reader import Map, Source, topic_prefix_problem
from gateway.config.upstream import read_upstream
from gateway.upstream.settings import UpstreamConfig

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    topic_prefix: str = "gw"
    listeners: tuple[ListenerConfig, ...] = DEFAULT_LISTENERS
    persistence: PersistenceConfig = PersistenceConfig()
    limits: LimitsConfig = LimitsConfig()
    auth: AuthConfig = AuthConfig()
    sys_interval: float = 10.0
    logging: LoggingConfig = LoggingConfig()
    devices: DevicesConfig = DevicesConfig()
    # Simulated devices (devices/demo/), added to devices.known at start-up.
    demo: bool = False
    # The admin API service (gateway/admin): requests, live updates, events.
    admin_api: bool = True
    # Least seconds between two gw/bridge/status messages (sent only when a count changed).
    admin_status_interval: float = 5.0
    # Upstream bridge connections (gateway/upstream), in config order.
    upstream: tuple[UpstreamConfig, ...] = ()


def describe_listeners(cfg: GatewayConfig) -> list[str]:
    return [describe_listener(listener) for listener in cfg.listeners]


def with_demo(cfg: GatewayConfig, source: str = "<config>") -> GatewayConfig:
    """`cfg` with demo mode on (``run --demo``); ConfigError if a declared id is the demo's."""
    check_demo_ids(Source(source, {}), cfg.devices)
    return replace(cfg, demo=True)


def read_config(src: Source, raw: object) -> GatewayConfig:
    top = Map(src, "", raw)
    top.declare(
        (
            "topic_prefix",
            "listeners",
            "persistence",
            "limits",
            "auth",
            "sys_interval",
            "logging",
            "devices",
            "demo",
            "admin_api",
            "admin_status_interval",
            "upstream",
        )
    )
    topic_prefix = top.string("topic_prefix", "gw", topic_prefix_problem)
    listener_values = top.sequence("listeners")
    if listener_values is None:
        listeners = list(DEFAULT_LISTENERS)
    else:
        if not listener_values:
            raise src.error("listeners", "expected at least one listener")
        listeners = [
            read_listener(src, f"listeners[{index}]", item)
            for index, item in enumerate(listener_values)
        ]
    check_listener_clashes(src, listeners)
    persistence = read_persistence(top.mapping("persistence"))
    limits = read_limits(src, top.mapping("limits"))
    auth = read_auth(src, top.mapping("auth"), listeners)
    sys_interval = top.number("sys_interval", 10.0, 0, 86400)
    logging_section = top.mapping("logging")
    logging = LoggingConfig(level=logging_section.choice("level", "info", LOG_LEVELS))
    logging_section.finish()
    devices = read_devices(src, top.mapping("devices"))
    demo = top.boolean("demo", False)
    admin_api = top.boolean("admin_api", True)
    admin_status_interval = top.number("admin_status_interval", 5.0, 0.5, 3600)
    upstream = read_upstream(src, top, topic_prefix)
    top.finish()
    if demo:
        check_demo_ids(src, devices)
    return GatewayConfig(
        topic_prefix=topic_prefix,
        listeners=tuple(listeners),
        persistence=persistence,
        limits=limits,
        auth=auth,
        sys_interval=sys_interval,
        logging=logging,
        devices=devices,
        demo=demo,
        admin_api=admin_api,
        admin_status_interval=admin_status_interval,
        upstream=upstream,
    )
