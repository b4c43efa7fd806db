"""config.yaml: loading, validation and the typed configuration values.

Every key is optional; an absent key takes the default written in the shipped config.yaml.
Anything we do not understand stops start-up with a ConfigError naming the file, the key
path and what was expected: a gateway that silently ignores a misspelt ``allow_anonymous``
is worse than one that refuses to start.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import os
import pwd
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal, TypeVar

import yaml

from gateway.auth.acl import (
    ACTIONS,
    NOT_AUTHORIZED,
    SUBACK_FAILURE_CODES,
    AclDefault,
    AclRule,
    topic_filter_problem,
)
from gateway.auth.passwords import PasswordFileError, read_password_file
from gateway.broker.settings import BrokerSettings, Overflow, QueueLimits, QueueRule
from gateway.devicetypes.demo import clashing_ids
from gateway.devicetypes.gatt_profile import ConfiguredProfile, ProfileError, profile_from_config
from gateway.devicetypes.policy import KIND_DEFAULTS, DevicePolicy, PolicyError
from gateway.upstream.settings import (
    TopicRule,
    UpstreamConfig,
    UpstreamQueue,
    UpstreamTls,
    default_client_id,
    default_notification_topic,
)
from gateway.upstream.validate import NAME as UPSTREAM_NAME
from gateway.upstream.validate import (
    UpstreamProblem,
    check_connection,
    check_connections,
    client_id_problem,
    mqtt_string_problem,
    pattern_problem,
    prefix_problem,
    topic_name_problem,
)

_BROKER_DEFAULTS = BrokerSettings()
_QUEUE_DEFAULTS = QueueLimits()

LISTENER_TYPES = ("tcp", "tls", "unix", "ws", "wss")
SYNCHRONOUS_MODES = ("off", "normal", "full", "extra")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Longest path bind() accepts for an AF_UNIX socket on Linux (sun_path minus the NUL).
_MAX_UNIX_PATH = 107
_MAX_PACKET = 268_435_460  # 4-byte remaining length (268,435,455) plus the fixed header
_U16 = 0xFFFF
_U32 = 0xFFFFFFFF


class ConfigError(Exception):
    """A configuration problem, ready to show to a person as is."""

    def __init__(self, file: str, key_path: str, message: str, line: int | None = None) -> None:
        self.file = file
        self.key_path = key_path
        self.line = line
        self.detail = message
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {key_path}: {message}" if key_path else f"{where}: {message}")


# ---------------------------------------------------------------------------- values


ListenerType = Literal["tcp", "tls", "unix", "ws", "wss"]

# Relative paths (sockets, database, password file, certificates) are taken against the
# working directory, like every command-line tool does.
DEFAULT_SOCKET_PATH = Path("edge-gateway.sock")


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One listener. ``host``/``port`` are set for tcp, tls, ws and wss, ``path`` for unix,
    ``url_path`` for ws and wss, and the certificate fields for tls and wss only (the loader
    guarantees it)."""

    type: ListenerType = "tcp"
    name: str = "tcp:127.0.0.1:1883"
    host: str | None = "127.0.0.1"
    port: int | None = 1883  # 0 = any free port (tests)
    path: Path | None = None
    allow_anonymous: bool = True
    certfile: Path | None = None
    keyfile: Path | None = None
    cafile: Path | None = None
    require_client_cert: bool = False
    # Every client of this listener is an admin (unix only: the socket's file mode, 0660,
    # decides who can connect).
    admin: bool = False
    url_path: str | None = None  # ws, wss: the HTTP path of the WebSocket endpoint
    # ws, wss: the browser origins (Origin header) allowed; None = the default (see
    # websocket_origins); clients that send no Origin (not a browser) are never refused by it.
    origins: tuple[str, ...] | None = None


DEFAULT_LISTENERS: tuple[ListenerConfig, ...] = (
    ListenerConfig(),
    ListenerConfig(
        type="unix",
        name=f"unix:{DEFAULT_SOCKET_PATH}",
        host=None,
        port=None,
        path=DEFAULT_SOCKET_PATH,
        admin=True,  # the local terminal UI works out of the box
    ),
)


@dataclass(frozen=True, slots=True)
class PersistenceConfig:
    enabled: bool = True
    path: Path = Path("edge-gateway.db")
    synchronous: str = "full"  # SQLite PRAGMA synchronous: off | normal | full | extra
    group_commit_ms: float = 0.0
    # Database and its WAL, in MiB; 0 = unlimited. A LAN client must not be able to fill the
    # SD card: 256 MiB holds many thousands of queued commands and readings.
    max_size_mb: int = 256


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_packet_size: int = _BROKER_DEFAULTS.max_packet_size
    receive_maximum: int = _BROKER_DEFAULTS.receive_maximum
    max_inflight_messages: int = _BROKER_DEFAULTS.max_inflight_out
    max_keepalive: int = _BROKER_DEFAULTS.max_keepalive
    max_session_expiry: int = _BROKER_DEFAULTS.max_session_expiry
    v311_session_expiry: int = _BROKER_DEFAULTS.v311_session_expiry
    topic_alias_maximum: int = _BROKER_DEFAULTS.topic_alias_maximum
    connect_timeout: float = 10.0
    max_connections: int = 0  # 0 = unlimited
    max_retained_messages: int = _BROKER_DEFAULTS.max_retained_messages
    # Abuse limits before and after the CONNECT (config.yaml says why each exists).
    max_pending_per_address: int = 32  # 0 = unlimited
    max_pending_connections: int = 512  # 0 = unlimited
    send_stall_timeout: float = 60.0
    password_threads: int = 2
    password_checks_per_address: int = 2
    password_checks_waiting: int = 64
    login_backoff_max: float = 4.0  # 0 = no back-off
    max_sessions: int = _BROKER_DEFAULTS.max_sessions
    queue: QueueLimits = _QUEUE_DEFAULTS
    queue_rules: tuple[QueueRule, ...] = ()


@dataclass(frozen=True, slots=True)
class AclConfig:
    default: AclDefault = "allow"
    rules: tuple[AclRule, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthConfig:
    password_file: Path | None = None
    admin_users: tuple[str, ...] = ()
    acl: AclConfig = AclConfig()


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"


SCANNING_MODES = ("auto", "active", "passive")
# Device kinds the bridge can run from config today, and how each one is reached.
BLE_KINDS = ("bthome", "eq3", "gatt")
LAN_KINDS = ("shelly", "wled")
_POLICY_KEYS = tuple(f.name for f in fields(DevicePolicy))
_BLE_ADDRESS = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_BIND_KEY = re.compile(r"^[0-9A-Fa-f]{32}$")
_BAD_DEVICE_ID = re.compile(r"[/+#\s\x00]")


@dataclass(frozen=True, slots=True)
class BleConfig:
    enabled: bool = True
    scanning_mode: str = "auto"  # auto | active | passive
    adapter: str | None = None  # e.g. "hci0"; None = BlueZ's default adapter
    # Wake windows of sleepy command devices (devices/ble/sleepy.py), in seconds.
    connect_timeout: float = 10.0
    wake_window: float = 30.0
    retry_backoff: float = 2.0  # first pause after a failed window; doubles, at most 300 s
    state_refresh: float = 3600.0  # ask a device for its state when it is older than this


@dataclass(frozen=True, slots=True)
class LanConfig:
    enabled: bool = True
    # Interface addresses mDNS browses on; empty = no discovery (never the default
    # interfaces implicitly: that would multicast on whatever network the box is on).
    interfaces: tuple[str, ...] = ()
    poll_interval: float = 10.0
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class KnownDeviceConfig:
    """A device declared under devices.known; ``policy`` is fully resolved (kind default,
    then devices.policies.<kind>, then the device's own overrides)."""

    id: str
    kind: str
    policy: DevicePolicy
    name: str = ""
    address: str | None = None  # BLE address, upper case
    host: str | None = None
    port: int = 80
    bind_key: str | None = None  # 32 hex digits
    profile: str | None = None  # gatt devices: the name of a devices.gatt_profiles entry


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """Policy overrides for devices that are not declared one by one, matched by id, BLE
    address or name with shell-style patterns (a missing pattern matches anything)."""

    overrides: tuple[tuple[str, object], ...]
    id: str | None = None
    address: str | None = None
    name: str | None = None

    def matches(self, device_id: str, address: str | None, name: str | None) -> bool:
        return all(
            pattern is None or (value is not None and fnmatch.fnmatchcase(value, pattern))
            for pattern, value in (
                (self.id, device_id),
                (self.address, address.upper() if address else None),
                (self.name, name),
            )
        )


@dataclass(frozen=True, slots=True)
class DevicesConfig:
    ble: BleConfig = BleConfig()
    lan: LanConfig = LanConfig()
    policies: tuple[tuple[str, DevicePolicy], ...] = ()  # kind -> policy, overriding defaults
    policy_rules: tuple[PolicyRule, ...] = ()
    known: tuple[KnownDeviceConfig, ...] = ()
    gatt_profiles: tuple[tuple[str, ConfiguredProfile], ...] = ()  # name -> profile

    def gatt_profile(self, name: str) -> ConfiguredProfile:
        """The profile declared as devices.gatt_profiles.<name>; KeyError if there is none
        (cannot happen for the ``profile`` of a device under known: checked at load)."""
        for candidate, profile in self.gatt_profiles:
            if candidate == name:
                return profile
        raise KeyError(name)

    def policy_for(
        self,
        kind: str,
        device_id: str = "",
        address: str | None = None,
        name: str | None = None,
    ) -> DevicePolicy:
        """The kind's default, then devices.policies.<kind>, then the first matching rule of
        devices.policy_rules (declared devices carry their own resolved policy)."""
        policy = dict(self.policies).get(kind, DevicePolicy.for_kind(kind))
        for rule in self.policy_rules:
            if rule.matches(device_id, address, name):
                return policy.with_overrides(dict(rule.overrides))
        return policy


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


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_listener(listener: ListenerConfig) -> str:
    access = "anonymous allowed" if listener.allow_anonymous else "user name and password required"
    if listener.type == "unix":
        where = f"unix socket {listener.path}"
    elif listener.type in ("ws", "wss"):
        address = _host_port(listener.host or "", listener.port or 0)
        where = f"{listener.type}://{address}{listener.url_path} (MQTT over WebSockets)"
    else:
        where = f"{listener.type} {_host_port(listener.host or '', listener.port or 0)}"
    if listener.require_client_cert:
        access += ", client certificate required"
    if listener.admin:
        access += ", every client is an admin"
    return f"{listener.name}: {where}, {access}"


def describe_listeners(cfg: GatewayConfig) -> list[str]:
    return [describe_listener(listener) for listener in cfg.listeners]


# ---------------------------------------------------------------------------- reading

_T = TypeVar("_T")
_MISSING = object()


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class _Source:
    """The file being read: its name and the line of every key path, for messages."""

    def __init__(self, name: str, lines: dict[str, int]) -> None:
        self.name = name
        self.lines = lines

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(self.name, path, message, self.lines.get(path))


class _Map:
    """A mapping being read; records which keys were asked for so that the rest are errors."""

    def __init__(self, src: _Source, path: str, raw: object) -> None:
        self.src = src
        self.path = path
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise src.error(path, f"expected a mapping of keys, got {_show(raw)}")
        for key in raw:
            if not isinstance(key, str):
                raise src.error(path, f"keys must be strings, got {_show(key)}")
        self.raw: dict[str, object] = raw
        self.known: list[str] = []
        # Keys that belong to a sibling variant (e.g. "path" on a tcp listener): named in the
        # error so the reader sees why a real key is refused here.
        self.elsewhere: dict[str, str] = {}

    def key(self, key: str) -> str:
        return _join(self.path, key)

    def error(self, key: str, message: str) -> ConfigError:
        return self.src.error(self.key(key), message)

    def take(self, key: str) -> object:
        self.known.append(key)
        return self.raw.get(key, _MISSING)

    def read(
        self, key: str, default: _T, convert: Callable[[object], _T | None], expected: str
    ) -> _T:
        value = self.take(key)
        if value is _MISSING:
            return default
        result = convert(value)
        if result is None:
            raise self.error(key, f"expected {expected}, got {_show(value)}")
        return result

    def integer(self, key: str, default: int, low: int, high: int | None = None) -> int:
        expected = f"an integer {low}-{high}" if high is not None else f"an integer >= {low}"

        def convert(value: object) -> int | None:
            if isinstance(value, bool) or not isinstance(value, int):
                return None
            if value < low or (high is not None and value > high):
                return None
            return value

        return self.read(key, default, convert, expected)

    def number(
        self, key: str, default: float, low: float, high: float, *, low_open: bool = False
    ) -> float:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        expected = f"a number {bound} and <= {high:g}"

        def convert(value: object) -> float | None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            number = float(value)
            if number != number or number > high or number < low or (low_open and number == low):
                return None
            return number

        return self.read(key, default, convert, expected)

    def boolean(self, key: str, default: bool) -> bool:
        return self.read(
            key, default, lambda v: v if isinstance(v, bool) else None, "true or false"
        )

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        def convert(value: object) -> str | None:
            # YAML 1.1 reads a bare off/on as a boolean; a choice named "off" means that.
            if isinstance(value, bool):
                value = "on" if value else "off"
            if isinstance(value, str) and value.lower() in choices:
                return value.lower()
            return None

        return self.read(key, default, convert, "one of " + ", ".join(choices))

    def string(
        self, key: str, default: str, check: Callable[[str], str | None] | None = None
    ) -> str:
        value = self.take(key)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_show(value)}")
        problem = check(value) if check else None
        if problem:
            raise self.error(key, f"{problem}, got {_show(value)}")
        return value

    def optional_string(self, key: str) -> str | None:
        value = self.take(key)
        if value is _MISSING or value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string or null, got {_show(value)}")
        return value

    def file_path(self, key: str, default: Path) -> Path:
        return Path(os.path.expanduser(self.string(key, str(default), _path_problem)))

    def optional_path(self, key: str) -> Path | None:
        value = self.optional_string(key)
        if value is None:
            return None
        problem = _path_problem(value)
        if problem:
            raise self.error(key, f"{problem}, got {_show(value)}")
        return Path(os.path.expanduser(value))

    def mapping(self, key: str) -> _Map:
        value = self.take(key)
        return _Map(self.src, self.key(key), None if value is _MISSING else value)

    def sequence(self, key: str) -> list[object] | None:
        value = self.take(key)
        if value is _MISSING:
            return None
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {_show(value)}")
        return value

    def items(self, key: str) -> Iterator[tuple[str, object]]:
        values = self.sequence(key)
        for index, item in enumerate(values or ()):
            yield _join(self.key(key), index), item

    def declare(self, keys: tuple[str, ...]) -> None:
        """Check for unknown keys before reading: a misspelt key must be reported as such,
        not through a cross-check that its default value then fails."""
        self.known.extend(keys)
        self.finish()

    def finish(self) -> None:
        for key in self.raw:
            if key in self.known:
                continue
            if key in self.elsewhere:
                raise self.error(key, self.elsewhere[key])
            message = f"unknown key {key!r}"
            close = difflib.get_close_matches(key, self.known, n=1, cutoff=0.6)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            else:
                message += f"; valid keys here: {', '.join(sorted(set(self.known)))}"
            raise self.error(key, message)


def _path_problem(value: str) -> str | None:
    if not value:
        return "expected a non-empty path"
    if "\0" in value:
        return "expected a path without NUL characters"
    return None


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _host_problem(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if _HOSTNAME.match(value):
        return None
    return "expected an IP address or host name (0.0.0.0 or :: for every interface)"


def _topic_prefix_problem(value: str) -> str | None:
    if not value or value.startswith("/") or value.endswith("/") or "//" in value:
        return "expected one or more non-empty topic levels such as 'gw' or 'home/gw'"
    if any(ch in value for ch in "+#\0"):
        return "expected a topic prefix without wildcards"
    if value.startswith("$"):
        return "expected a topic prefix not starting with '$'"
    return None


def _url_path_problem(value: str) -> str | None:
    if not value.startswith("/") or any(ch in value for ch in "?# \t\r\n"):
        return "expected an HTTP path such as '/mqtt' (starting with '/', no spaces, '?' or '#')"
    return None


def _glob_problem(value: str) -> str | None:
    return None if value else "expected a non-empty pattern ('*' matches everything)"


# ---------------------------------------------------------------------------- sections

_LISTENER_KEYS = {
    "tcp": ("type", "name", "host", "port", "allow_anonymous"),
    "tls": (
        "type",
        "name",
        "host",
        "port",
        "allow_anonymous",
        "certfile",
        "keyfile",
        "cafile",
        "require_client_cert",
    ),
    "unix": ("type", "name", "path", "allow_anonymous", "admin"),
    "ws": ("type", "name", "host", "port", "path", "origins", "allow_anonymous"),
    "wss": (
        "type",
        "name",
        "host",
        "port",
        "path",
        "origins",
        "allow_anonymous",
        "certfile",
        "keyfile",
        "cafile",
        "require_client_cert",
    ),
}
# Default ports of the WebSocket listeners (those of EMQX; Mosquitto has none).
_DEFAULT_PORTS = {"tcp": 1883, "tls": 8883, "ws": 8083, "wss": 8084}


def _read_listener(src: _Source, path: str, raw: object) -> ListenerConfig:
    section = _Map(src, path, raw)
    kind = section.choice("type", "tcp", LISTENER_TYPES)
    if kind != "unix":
        section.elsewhere["admin"] = (
            "'admin' applies to unix listeners only (the socket file's mode decides who may "
            "connect); on tcp/tls/ws/wss listeners name admins in auth.admin_users"
        )
    for other, keys in _LISTENER_KEYS.items():
        for key in keys:
            if key not in _LISTENER_KEYS[kind] and key not in section.elsewhere:
                section.elsewhere[key] = f"{key!r} applies to {other} listeners, not {kind}"
    section.declare(_LISTENER_KEYS[kind])
    name = section.optional_string("name")
    listener: ListenerConfig
    if kind == "unix":
        sock_path = section.file_path("path", DEFAULT_SOCKET_PATH)
        if len(os.fsencode(sock_path)) > _MAX_UNIX_PATH:
            raise section.error("path", f"expected a socket path of at most {_MAX_UNIX_PATH} bytes")
        listener = ListenerConfig(
            type="unix",
            name=name or f"unix:{sock_path}",
            host=None,
            port=None,
            path=sock_path,
            allow_anonymous=section.boolean("allow_anonymous", True),
            admin=section.boolean("admin", False),
        )
    else:
        default_host = "127.0.0.1" if kind in ("tcp", "ws") else "0.0.0.0"
        host = section.string("host", default_host, _host_problem)
        port = section.integer("port", _DEFAULT_PORTS[kind], 0, 65535)
        # Anonymous access defaults to on only where nobody else can reach the port.
        loopback = is_loopback_host(host)
        allow_anonymous = section.boolean("allow_anonymous", loopback)
        if allow_anonymous and not loopback:
            raise section.error(
                "allow_anonymous",
                f"a listener on {host} can be reached from the network, so it must require "
                "user names and passwords: set allow_anonymous: false and add users with "
                "`edge-gateway passwd FILE USER` (anonymous access is only allowed on "
                "loopback addresses: 127.0.0.0/8, ::1, localhost)",
            )
        websocket = kind in ("ws", "wss")
        listener = ListenerConfig(
            type="ws" if websocket else "tcp",
            name=name or f"{kind}:{_host_port(host, port)}",
            host=host,
            port=port,
            allow_anonymous=allow_anonymous,
            url_path=section.string("path", "/mqtt", _url_path_problem) if websocket else None,
            origins=_read_origins(section) if websocket else None,
        )
        if kind in ("tls", "wss"):
            listener = _read_tls(section, listener)
    section.finish()
    return listener


def _read_origins(section: _Map) -> tuple[str, ...] | None:
    values = section.sequence("origins")
    if values is None:
        return None
    out = []
    for i, value in enumerate(values):
        if not isinstance(value, str) or not _origin_ok(value):
            raise section.error(
                f"origins[{i}]",
                f"expected a browser origin such as 'http://homeassistant.local:8123' "
                f"(scheme://host[:port], no path) or '*' for any, got {_show(value)}",
            )
        out.append(value)
    return tuple(out)


def _origin_ok(value: str) -> bool:
    if value == "*":
        return True
    scheme, sep, rest = value.partition("://")
    return bool(sep) and scheme in ("http", "https") and bool(rest) and "/" not in rest


def websocket_origins(listener: ListenerConfig) -> tuple[str, ...]:
    """The browser origins a ws/wss listener accepts besides same-origin pages; ("*",) = any.

    A web page can open a WebSocket to any address the browser reaches, and the browser
    says which page asks (Origin). By default a listener that needs passwords accepts any
    page (the page must know a password), and one that allows anonymous clients only pages
    served from its own address: otherwise any web site opened in a browser on this machine
    could publish commands to the devices. Clients that send no Origin (most that are no
    browser) or their own address as it (paho) are not affected."""
    if listener.origins is not None:
        return listener.origins
    return () if listener.allow_anonymous else ("*",)


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _existing_file(section: _Map, key: str, value: Path) -> Path:
    if not value.is_file():
        raise section.error(key, f"expected an existing file, got '{value}' (not found)")
    try:
        with open(value, "rb"):
            pass
    except PermissionError:
        # Checked here so that the message names the file: OpenSSL's error does not.
        raise section.error(
            key, f"cannot read '{value}': permission denied (make it readable by user {_user()})"
        ) from None
    except OSError as exc:
        raise section.error(key, f"cannot read '{value}': {exc.strerror or exc}") from None
    return value


def _read_tls(section: _Map, base: ListenerConfig) -> ListenerConfig:
    certfile = section.optional_path("certfile")
    keyfile = section.optional_path("keyfile")
    kind: ListenerType = "wss" if base.type == "ws" else "tls"
    if certfile is None:
        raise section.error("certfile", f"a {kind} listener needs a certificate file (PEM)")
    if keyfile is None:
        raise section.error("keyfile", f"a {kind} listener needs a private key file (PEM)")
    _existing_file(section, "certfile", certfile)
    _existing_file(section, "keyfile", keyfile)
    cafile = section.optional_path("cafile")
    if cafile is not None:
        _existing_file(section, "cafile", cafile)
    require_client_cert = section.boolean("require_client_cert", False)
    if require_client_cert and cafile is None:
        raise section.error(
            "require_client_cert", "requiring client certificates needs a cafile to check them"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise section.error("certfile", f"cannot load certificate and key: {exc}") from None
    if cafile is not None:
        try:
            context.load_verify_locations(cafile)
        except (ssl.SSLError, OSError) as exc:
            raise section.error("cafile", f"cannot load CA certificates: {exc}") from None
    return replace(
        base,
        type=kind,
        certfile=certfile,
        keyfile=keyfile,
        cafile=cafile,
        require_client_cert=require_client_cert,
    )


def _check_listener_clashes(src: _Source, listeners: list[ListenerConfig]) -> None:
    names: dict[str, int] = {}
    sockets: dict[Path, int] = {}
    ports: list[tuple[int, str, int]] = []
    for index, listener in enumerate(listeners):
        path = f"listeners[{index}]"
        if listener.name in names:
            raise src.error(
                f"{path}.name",
                f"listener name {listener.name!r} is already used by "
                f"listeners[{names[listener.name]}]",
            )
        names[listener.name] = index
        if listener.path is not None:
            resolved = Path(os.path.abspath(listener.path))
            if resolved in sockets:
                raise src.error(
                    f"{path}.path", f"socket path already used by listeners[{sockets[resolved]}]"
                )
            sockets[resolved] = index
            continue
        if listener.host is None or not listener.port:
            continue
        for other_port, other_host, other_index in ports:
            if other_port == listener.port and _hosts_overlap(other_host, listener.host):
                raise src.error(
                    f"{path}.port",
                    f"port {listener.port} on {listener.host} is already used by "
                    f"listeners[{other_index}] ({other_host})",
                )
        ports.append((listener.port, listener.host, index))


def _hosts_overlap(first: str, second: str) -> bool:
    """Could two listeners on these hosts and one port collide? Only distinct concrete
    addresses (e.g. 127.0.0.1 and ::1, or two LAN addresses) can share a port."""
    try:
        a = ipaddress.ip_address(first)
        b = ipaddress.ip_address(second)
    except ValueError:
        return True  # a host name may resolve to anything
    return a == b or a.is_unspecified or b.is_unspecified


def _read_persistence(section: _Map) -> PersistenceConfig:
    defaults = PersistenceConfig()
    result = PersistenceConfig(
        enabled=section.boolean("enabled", defaults.enabled),
        path=section.file_path("path", defaults.path),
        synchronous=section.choice("synchronous", defaults.synchronous, SYNCHRONOUS_MODES),
        group_commit_ms=section.number("group_commit_ms", defaults.group_commit_ms, 0, 1000),
        max_size_mb=section.integer("max_size_mb", defaults.max_size_mb, 0),
    )
    section.finish()
    return result


def _read_queue(section: _Map, base: QueueLimits) -> QueueLimits:
    overflow = section.choice("overflow", base.overflow.value, tuple(o.value for o in Overflow))
    return QueueLimits(
        max_messages=section.integer("max_messages", base.max_messages, 0),
        max_bytes=section.integer("max_bytes", base.max_bytes, 0),
        overflow=Overflow(overflow),
        queue_qos0=section.boolean("queue_qos0", base.queue_qos0),
    )


def _read_limits(src: _Source, section: _Map) -> LimitsConfig:
    d = LimitsConfig()
    queue_section = section.mapping("queue")
    queue = _read_queue(queue_section, d.queue)
    queue_section.finish()
    rules: list[QueueRule] = []
    for path, raw in section.items("queue_rules"):
        rule_section = _Map(src, path, raw)
        pattern = rule_section.string("client_id", "*", _glob_problem)
        # Unset fields inherit from limits.queue, so a rule names only what differs.
        rules.append(QueueRule(pattern, _read_queue(rule_section, queue)))
        rule_section.finish()
    result = LimitsConfig(
        max_packet_size=section.integer("max_packet_size", d.max_packet_size, 64, _MAX_PACKET),
        receive_maximum=section.integer("receive_maximum", d.receive_maximum, 1, _U16),
        max_inflight_messages=section.integer(
            "max_inflight_messages", d.max_inflight_messages, 1, _U16
        ),
        max_keepalive=section.integer("max_keepalive", d.max_keepalive, 0, _U16),
        max_session_expiry=section.integer("max_session_expiry", d.max_session_expiry, 0, _U32),
        v311_session_expiry=section.integer("v311_session_expiry", d.v311_session_expiry, 0, _U32),
        topic_alias_maximum=section.integer("topic_alias_maximum", d.topic_alias_maximum, 0, _U16),
        connect_timeout=section.number(
            "connect_timeout", d.connect_timeout, 0, 3600, low_open=True
        ),
        max_connections=section.integer("max_connections", d.max_connections, 0),
        max_retained_messages=section.integer("max_retained_messages", d.max_retained_messages, 0),
        max_sessions=section.integer("max_sessions", d.max_sessions, 0),
        queue=queue,
        queue_rules=tuple(rules),
        max_pending_per_address=section.integer(
            "max_pending_per_address", d.max_pending_per_address, 0
        ),
        max_pending_connections=section.integer(
            "max_pending_connections", d.max_pending_connections, 0
        ),
        send_stall_timeout=section.number(
            "send_stall_timeout", d.send_stall_timeout, 0, 86400, low_open=True
        ),
        password_threads=section.integer("password_threads", d.password_threads, 1, 64),
        password_checks_per_address=section.integer(
            "password_checks_per_address", d.password_checks_per_address, 1, 1000
        ),
        password_checks_waiting=section.integer(
            "password_checks_waiting", d.password_checks_waiting, 1, 100_000
        ),
        login_backoff_max=section.number("login_backoff_max", d.login_backoff_max, 0, 3600),
    )
    section.finish()
    return result


def _read_acl_rule(src: _Source, path: str, raw: object) -> AclRule:
    section = _Map(src, path, raw)
    user = section.string("user", "*", _glob_problem)
    client_id = section.string("client_id", "*", _glob_problem)
    topic = section.string("topic", "#", topic_filter_problem)
    actions_raw = section.take("actions")
    if actions_raw is _MISSING:
        actions = frozenset(ACTIONS)
    else:
        items = [actions_raw] if isinstance(actions_raw, str) else actions_raw
        expected = "a list of read, write, subscribe"
        if not isinstance(items, list) or not items:
            raise section.error("actions", f"expected {expected}, got {_show(actions_raw)}")
        for item in items:
            if item not in ACTIONS:
                raise section.error("actions", f"expected {expected}, got {_show(item)} in it")
        actions = frozenset(str(item) for item in items)
    allow = section.boolean("allow", True)
    value = section.take("reason_code")
    reason_code = NOT_AUTHORIZED
    if value is not _MISSING:
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value not in SUBACK_FAILURE_CODES
        ):
            codes = ", ".join(f"0x{code:02X}" for code in sorted(SUBACK_FAILURE_CODES))
            got = f"0x{value:02X}" if isinstance(value, int) else _show(value)
            raise section.error(
                "reason_code", f"expected a SUBACK failure code ({codes}), got {got}"
            )
        reason_code = value
    section.finish()
    return AclRule(
        user=user,
        client_id=client_id,
        topic=topic,
        actions=actions,
        allow=allow,
        reason_code=reason_code,
    )


def _read_auth(src: _Source, section: _Map, listeners: list[ListenerConfig]) -> AuthConfig:
    section.declare(("password_file", "admin_users", "acl"))
    password_file = section.optional_path("password_file")
    admins: list[str] = []
    for path, item in section.items("admin_users"):
        if not isinstance(item, str) or not item:
            raise src.error(path, f"expected a user name, got {_show(item)}")
        admins.append(item)
    acl_section = section.mapping("acl")
    default = acl_section.choice("default", "allow", ("allow", "deny"))
    rules = [_read_acl_rule(src, path, raw) for path, raw in acl_section.items("rules")]
    acl_section.finish()
    section.finish()

    users: dict[str, str] | None = None
    if password_file is not None:
        try:
            users = read_password_file(password_file)
        except PasswordFileError as exc:
            raise section.error("password_file", str(exc)) from None
    else:
        for index, listener in enumerate(listeners):
            if not listener.allow_anonymous:
                raise section.error(
                    "password_file",
                    f"listeners[{index}] ({listener.name}) requires user names and passwords, "
                    "so a password file is needed: create one with "
                    "`edge-gateway passwd FILE USER` and set auth.password_file",
                )
    for index, admin in enumerate(admins):
        if users is None:
            raise section.error("admin_users", "admin users need auth.password_file to log in")
        if admin not in users:
            raise src.error(
                _join(section.key("admin_users"), index),
                f"user {admin!r} is not in {password_file}; add it with "
                f"`edge-gateway passwd {password_file} {admin}`",
            )
    acl_default: AclDefault = "deny" if default == "deny" else "allow"
    return AuthConfig(
        password_file=password_file,
        admin_users=tuple(admins),
        acl=AclConfig(default=acl_default, rules=tuple(rules)),
    )


def _policy(section: _Map, base: DevicePolicy, keys: tuple[str, ...]) -> DevicePolicy:
    """``base`` with the policy keys present in ``section``; a bad value names its key."""
    overrides = {key: section.take(key) for key in keys if key in section.raw}
    try:
        return base.with_overrides(overrides)
    except PolicyError as exc:
        key, _, message = str(exc).partition(": ")
        if key not in overrides:  # pragma: no cover - every PolicyError names a key
            raise section.src.error(section.path, str(exc)) from None
        raise section.error(key, message) from None


def _interface_problem(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "expected the IP address of an interface, such as '192.168.1.10'"
    return None


# Which devices a kind-specific key of devices.known.<id> belongs to, for the error message.
_KEY_OWNERS = {
    "address": "BLE",
    "bind_key": "bthome",
    "profile": "gatt",
    "host": "LAN",
    "port": "LAN",
}


def _device_keys(kind: str) -> tuple[str, ...]:
    if kind not in BLE_KINDS:
        return ("host", "port")
    extra = {"bthome": ("bind_key",), "gatt": ("profile",)}.get(kind, ())
    return ("address", *extra)


def _read_profile_name(section: _Map, profiles: dict[str, ConfiguredProfile]) -> str:
    known = ", ".join(sorted(profiles)) or "none is declared"
    value = section.take("profile")
    if value is _MISSING or value is None:
        raise section.error(
            "profile", f"a gatt device needs the name of a devices.gatt_profiles entry ({known})"
        )
    if not isinstance(value, str) or value not in profiles:
        message = (
            f"expected the name of a devices.gatt_profiles entry ({known}), got {_show(value)}"
        )
        close = (
            difflib.get_close_matches(value, list(profiles), n=1) if isinstance(value, str) else []
        )
        if close:
            message += f" (did you mean {close[0]!r}?)"
        raise section.error("profile", message)
    return value


def _read_known_device(
    src: _Source,
    section: _Map,
    device_id: str,
    policies: dict[str, DevicePolicy],
    profiles: dict[str, ConfiguredProfile] | None = None,
) -> KnownDeviceConfig:
    kinds = BLE_KINDS + LAN_KINDS
    kind = section.choice("kind", "", kinds)
    if not kind:
        raise section.error("kind", f"expected one of {', '.join(kinds)} (every device needs one)")
    ble = kind in BLE_KINDS
    own = ("kind", "name", *_device_keys(kind))
    for key, owner in _KEY_OWNERS.items():
        if key not in own:
            section.elsewhere[key] = f"{key!r} applies to {owner} devices, not {kind}"
    section.declare(own + _POLICY_KEYS)
    name = section.optional_string("name") or ""
    policy = _policy(section, policies.get(kind, DevicePolicy.for_kind(kind)), _POLICY_KEYS)
    if ble:
        address = section.optional_string("address")
        if address is None:
            raise section.error("address", "a BLE device needs its address (AA:BB:CC:DD:EE:FF)")
        if not _BLE_ADDRESS.match(address):
            raise section.error(
                "address", f"expected a BLE address such as AA:BB:CC:DD:EE:FF, got {address!r}"
            )
        raw_key = section.take("bind_key") if kind == "bthome" else None
        bind_key = None if raw_key is _MISSING or raw_key is None else raw_key
        if bind_key is not None and not (isinstance(bind_key, str) and _BIND_KEY.match(bind_key)):
            # The value is a secret: not repeated in the message. A key of digits only is
            # read as a number by YAML, hence the hint about quotes.
            raise section.error(
                "bind_key", "expected 32 hex digits (the 16-byte BTHome key, in quotes)"
            )
        assert bind_key is None or isinstance(bind_key, str)
        result = KnownDeviceConfig(
            id=device_id,
            kind=kind,
            policy=policy,
            name=name,
            address=address.upper(),
            bind_key=bind_key.lower() if bind_key else None,
            profile=_read_profile_name(section, profiles or {}) if kind == "gatt" else None,
        )
    else:
        host = section.string("host", "", _host_problem)
        if not host:
            raise section.error("host", "a LAN device needs its host name or IP address")
        result = KnownDeviceConfig(
            id=device_id,
            kind=kind,
            policy=policy,
            name=name,
            host=host,
            port=section.integer("port", 80, 1, 65535),
        )
    section.finish()
    return result


def _profile_error(src: _Source, path: str, exc: ProfileError) -> ConfigError:
    full = _join(path, exc.path) if exc.path else path
    # A key YAML turned into something else (``on:`` into true) is not in the line table
    # under the name the profile reader gives it: the nearest enclosing key's line will do.
    probe = full
    while probe and probe not in src.lines:
        probe = probe.rpartition(".")[0]
    return ConfigError(src.name, full, exc.detail, src.lines.get(probe))


def _read_gatt_profiles(src: _Source, section: _Map) -> dict[str, ConfiguredProfile]:
    profiles: dict[str, ConfiguredProfile] = {}
    for name, raw in section.raw.items():
        path = section.key(name)
        if not name:
            raise src.error(path, "expected a profile name, got an empty string")
        try:
            profiles[name] = profile_from_config(raw)
        except ProfileError as exc:
            raise _profile_error(src, path, exc) from None
    return profiles


def _read_devices(src: _Source, section: _Map) -> DevicesConfig:
    section.declare(("ble", "lan", "policies", "policy_rules", "gatt_profiles", "known"))
    d = DevicesConfig()
    ble_section = section.mapping("ble")
    ble = BleConfig(
        enabled=ble_section.boolean("enabled", d.ble.enabled),
        scanning_mode=ble_section.choice("scanning_mode", d.ble.scanning_mode, SCANNING_MODES),
        adapter=ble_section.optional_string("adapter"),
        connect_timeout=ble_section.number(
            "connect_timeout", d.ble.connect_timeout, 0, 120, low_open=True
        ),
        wake_window=ble_section.number("wake_window", d.ble.wake_window, 0, 600, low_open=True),
        retry_backoff=ble_section.number(
            "retry_backoff", d.ble.retry_backoff, 0, 300, low_open=True
        ),
        state_refresh=ble_section.number(
            "state_refresh", d.ble.state_refresh, 0, 7 * 24 * 3600, low_open=True
        ),
    )
    ble_section.finish()
    lan_section = section.mapping("lan")
    interfaces: list[str] = []
    for path, item in lan_section.items("interfaces"):
        problem = _interface_problem(item) if isinstance(item, str) else "expected a string"
        if problem:
            raise src.error(path, f"{problem}, got {_show(item)}")
        assert isinstance(item, str)
        interfaces.append(item)
    lan = LanConfig(
        enabled=lan_section.boolean("enabled", d.lan.enabled),
        interfaces=tuple(interfaces),
        poll_interval=lan_section.number(
            "poll_interval", d.lan.poll_interval, 0, 3600, low_open=True
        ),
        timeout=lan_section.number("timeout", d.lan.timeout, 0, 60, low_open=True),
    )
    lan_section.finish()

    policies_section = section.mapping("policies")
    policies_section.declare(tuple(KIND_DEFAULTS))
    policies: dict[str, DevicePolicy] = {}
    for kind in policies_section.raw:
        policy_section = policies_section.mapping(kind)
        policy_section.declare(_POLICY_KEYS)
        policies[kind] = _policy(policy_section, DevicePolicy.for_kind(kind), _POLICY_KEYS)
    policies_section.finish()

    rules: list[PolicyRule] = []
    for path, raw in section.items("policy_rules"):
        rule_section = _Map(src, path, raw)
        matchers = ("id", "address", "name")
        rule_section.declare(matchers + _POLICY_KEYS)
        patterns = {key: rule_section.optional_string(key) for key in matchers}
        if not any(patterns.values()):
            raise src.error(path, "a rule needs at least one of id, address, name (a pattern)")
        overrides = {key: rule_section.take(key) for key in _POLICY_KEYS if key in rule_section.raw}
        _policy(rule_section, DevicePolicy(), _POLICY_KEYS)  # values checked now, not at match
        rule_section.finish()
        address = patterns["address"]
        rules.append(
            PolicyRule(
                overrides=tuple(overrides.items()),
                id=patterns["id"],
                address=address.upper() if address else None,
                name=patterns["name"],
            )
        )

    profiles = _read_gatt_profiles(src, section.mapping("gatt_profiles"))

    known_section = section.mapping("known")
    known: list[KnownDeviceConfig] = []
    addresses: dict[str, str] = {}
    for device_id in list(known_section.raw):
        path = known_section.key(device_id)
        if not device_id or _BAD_DEVICE_ID.search(device_id) or device_id.startswith("$"):
            raise src.error(
                path, "expected a device id that is one topic level: no '/', '+', '#', spaces"
            )
        device = _read_known_device(
            src, known_section.mapping(device_id), device_id, policies, profiles
        )
        where = device.address or f"{device.host}:{device.port}"
        if where in addresses:
            raise src.error(path, f"{where} is already declared as {addresses[where]!r}")
        addresses[where] = device_id
        known.append(device)
    known_section.finish()
    section.finish()
    return DevicesConfig(
        ble=ble,
        lan=lan,
        policies=tuple(sorted(policies.items())),
        policy_rules=tuple(rules),
        known=tuple(known),
        gatt_profiles=tuple(profiles.items()),
    )


def _check_demo_ids(src: _Source, devices: DevicesConfig) -> None:
    for device_id in clashing_ids(device.id for device in devices.known):
        path = f"devices.known.{device_id}"
        raise src.error(path, "demo mode uses this id; rename the device, or turn the demo off")


def with_demo(cfg: GatewayConfig, source: str = "<config>") -> GatewayConfig:
    """`cfg` with demo mode on (``run --demo``); ConfigError if a declared id is the demo's."""
    _check_demo_ids(_Source(source, {}), cfg.devices)
    return replace(cfg, demo=True)


# ---------------------------------------------------------------------------- upstream

_UPSTREAM_KEYS = (
    "name",
    "host",
    "port",
    "protocol",
    "client_id",
    "username",
    "password",
    "password_file",
    "tls",
    "keepalive",
    "session_expiry",
    "reconnect_min",
    "reconnect_max",
    "notification_topic",
    "topics",
    "queue",
)
_TOPIC_RULE_KEYS = ("pattern", "direction", "qos", "local_prefix", "remote_prefix")
# YAML reads 5 and 5.0 as numbers and 3.1.1 as a string; all arrive here as their text.
_PROTOCOLS = {"5": 5, "5.0": 5, "3.1.1": 4}
_MAX_PASSWORD = 65_535  # bytes: the length prefix of MQTT binary data
_UPSTREAM_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
)


def _near_error(src: _Source, path: str, message: str) -> ConfigError:
    """An error on ``path`` with the line of its nearest key in the file: a key that is
    missing (or came in through a YAML merge) has no line of its own."""
    probe = path
    while probe and probe not in src.lines:
        probe = probe[: max(probe.rfind("."), probe.rfind("["), 0)]
    return ConfigError(src.name, path, message, src.lines.get(probe))


def _upstream_host_problem(value: str) -> str | None:
    if "://" in value:
        return "expected a host name without a scheme (TLS is `tls: {}`, the port is `port:`)"
    if value.startswith("["):
        return "expected an IPv6 address without brackets"
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        if address.is_unspecified:
            return "expected the address of a broker (0.0.0.0 and :: are nobody's address)"
        return None
    if value.count(":") == 1 and value.rpartition(":")[2].isdigit():
        return "expected a host name without ':<port>' (the port is `port:`)"
    if _UPSTREAM_HOSTNAME.match(value):
        return None
    return "expected the host name or IP address of the upstream broker"


def _read_protocol(section: _Map) -> int:
    value = section.take("protocol")
    if value is _MISSING:
        return 5
    scalar = isinstance(value, int | float | str) and not isinstance(value, bool)
    text = str(value) if scalar else ""
    if text in _PROTOCOLS:
        return _PROTOCOLS[text]
    message = f"expected 5 or 3.1.1, got {_show(value)}"
    if text in ("4", "3", "3.1"):
        message += " (MQTT 3.1.1 is written 3.1.1; MQTT 3.1 is not supported)"
    raise section.error("protocol", message)


def _mqtt_string(section: _Map, key: str, value: str | None) -> str | None:
    problem = None if value is None else mqtt_string_problem(value)
    if problem:
        raise section.error(key, problem)
    return value


def _read_secret_file(section: _Map, path: Path) -> bytes:
    key = "password_file"
    if path.exists() and not path.is_file():
        # A FIFO or a terminal would block start-up waiting for a line.
        raise section.error(key, f"cannot read '{path}': not a regular file")
    try:
        with open(path, "rb") as handle:
            line = handle.readline(_MAX_PASSWORD + 3)
    except FileNotFoundError:
        raise section.error(key, f"cannot read '{path}': not found") from None
    except PermissionError:
        raise section.error(
            key, f"cannot read '{path}': permission denied (make it readable by user {_user()})"
        ) from None
    except OSError as exc:
        raise section.error(key, f"cannot read '{path}': {exc.strerror or exc}") from None
    password = line.removesuffix(b"\n").removesuffix(b"\r")
    if len(password) > _MAX_PASSWORD:
        raise section.error(key, f"the first line of '{path}' is longer than {_MAX_PASSWORD} bytes")
    if not password:
        raise section.error(key, f"the first line of '{path}' is empty: expected the password")
    return password


def _read_password(section: _Map, username: str | None) -> tuple[bytes | None, Path | None]:
    raw = section.take("password")
    password_file = section.optional_path("password_file")
    if raw is not _MISSING and raw is not None and password_file is not None:
        raise section.error("password_file", "expected password or password_file, not both")
    password: bytes | None = None
    if password_file is not None:
        password = _read_secret_file(section, password_file)
    elif raw is not _MISSING and raw is not None:
        if not isinstance(raw, str):
            # Never repeated: it is a secret. YAML reads 123456 or yes as no string.
            raise section.error(
                "password", "expected a string, in quotes (the value is not shown: a secret)"
            )
        try:
            password = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise section.error("password", "expected well-formed text (not shown)") from None
        if len(password) > _MAX_PASSWORD:
            raise section.error("password", f"expected at most {_MAX_PASSWORD} bytes")
    if password is not None and username is None:
        key = "password_file" if password_file is not None else "password"
        raise section.error(key, "a password needs a username (set upstream username:)")
    return password, password_file


def _no_key_password() -> bytes:
    # Without a callback OpenSSL would ask for the pass phrase on the terminal, and a service
    # would hang at start-up.
    raise ValueError("encrypted private keys are not supported")


def _read_upstream_tls(section: _Map) -> UpstreamTls | None:
    raw = section.take("tls")
    if raw is _MISSING or raw is None:
        return None
    if not isinstance(raw, dict):
        raise section.error(
            "tls",
            "expected null (plain TCP) or a mapping of cafile, certfile, keyfile, insecure "
            f"({{}} = TLS checked against the system's CAs), got {_show(raw)}",
        )
    tls = section.mapping("tls")
    tls.declare(("cafile", "certfile", "keyfile", "insecure"))
    cafile = tls.optional_path("cafile")
    certfile = tls.optional_path("certfile")
    keyfile = tls.optional_path("keyfile")
    insecure = tls.boolean("insecure", False)
    for key, path in (("cafile", cafile), ("certfile", certfile), ("keyfile", keyfile)):
        if path is not None:
            _existing_file(tls, key, path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if keyfile is not None and certfile is None:
        raise tls.error("keyfile", "a client key needs its certificate: set certfile too")
    if certfile is not None:
        try:
            context.load_cert_chain(certfile, keyfile, password=_no_key_password)
        except (ssl.SSLError, OSError, ValueError) as exc:
            key = "keyfile" if keyfile is not None else "certfile"
            raise tls.error(
                key, f"cannot load the client certificate and key (unencrypted PEM): {exc}"
            ) from None
    if cafile is not None:
        try:
            context.load_verify_locations(cafile)
        except (ssl.SSLError, OSError) as exc:
            raise tls.error("cafile", f"cannot load CA certificates (PEM): {exc}") from None
    return UpstreamTls(cafile=cafile, certfile=certfile, keyfile=keyfile, insecure=insecure)


def _read_topic_rule(src: _Source, path: str, raw: object) -> TopicRule:
    if isinstance(raw, str):
        raise src.error(
            path,
            "expected a mapping such as {pattern: '#', direction: out, qos: 1, local_prefix: "
            f"'gw/', remote_prefix: 'site1/gw/'}} (Mosquitto's one-line form), got {_show(raw)}",
        )
    section = _Map(src, path, raw)
    section.declare(_TOPIC_RULE_KEYS)
    if "pattern" not in section.raw:
        raise _near_error(
            src, section.key("pattern"), "every rule needs a pattern (a topic filter, '#' = all)"
        )
    pattern = section.string("pattern", "", pattern_problem)
    direction = section.choice("direction", "out", ("out", "in", "both"))
    qos = section.integer("qos", 1, 0, 2)
    prefixes = {key: section.string(key, "", prefix_problem) for key in _TOPIC_RULE_KEYS[3:]}
    section.finish()
    for key, prefix in prefixes.items():
        problem = mqtt_string_problem(prefix + pattern)
        if problem:
            raise section.error(key, f"{key} + pattern: {problem}")
    return TopicRule(
        pattern=pattern,
        direction="in" if direction == "in" else "both" if direction == "both" else "out",
        qos=qos,
        local_prefix=prefixes["local_prefix"],
        remote_prefix=prefixes["remote_prefix"],
    )


def _read_upstream_queue(section: _Map) -> UpstreamQueue:
    d = UpstreamQueue()
    overflow = section.choice("overflow", d.overflow, ("drop-oldest", "reject-new"))
    queue = UpstreamQueue(
        max_messages=section.integer("max_messages", d.max_messages, 0),
        max_bytes=section.integer("max_bytes", d.max_bytes, 0),
        overflow="reject-new" if overflow == "reject-new" else "drop-oldest",
    )
    section.finish()
    return queue


def _read_upstream_names(section: _Map, hostname: str) -> tuple[str, str, str]:
    """(name, client_id, notification_topic), the defaults resolved."""
    name = section.take("name")
    if name is _MISSING or name is None:
        raise _near_error(section.src, section.key("name"), "every upstream needs a name")
    if not isinstance(name, str) or not UPSTREAM_NAME.match(name):
        raise section.error(
            "name", f"expected 1-64 characters of a-z, 0-9, '_' and '-', got {_show(name)}"
        )
    client_id = section.take("client_id")
    if client_id is _MISSING or client_id is None:
        client_id = default_client_id(name, hostname)
    elif not isinstance(client_id, str):
        raise section.error("client_id", f"expected a string or null, got {_show(client_id)}")
    else:
        problem = client_id_problem(client_id)
        if problem:
            raise section.error("client_id", problem)
    topic = section.take("notification_topic")
    if topic is _MISSING or topic is None:
        topic = default_notification_topic(client_id)
        if topic_name_problem(topic):
            raise section.error(
                "client_id",
                f"the default notification_topic {topic!r} is no topic name with this client "
                "id: set notification_topic",
            )
    elif not isinstance(topic, str):
        raise section.error("notification_topic", f"expected a topic name, got {_show(topic)}")
    else:
        problem = topic_name_problem(topic)
        if problem:
            raise section.error("notification_topic", problem)
    return name, client_id, topic


def _read_one_upstream(src: _Source, path: str, raw: object, hostname: str) -> UpstreamConfig:
    section = _Map(src, path, raw)
    section.declare(_UPSTREAM_KEYS)
    name, client_id, notification_topic = _read_upstream_names(section, hostname)
    if "host" not in section.raw or section.raw["host"] in (None, ""):
        section.take("host")
        raise _near_error(
            src, section.key("host"), "every upstream needs the host name or address of its broker"
        )
    host = section.string("host", "", _upstream_host_problem)
    username = _mqtt_string(section, "username", section.optional_string("username"))
    password, password_file = _read_password(section, username)
    tls = _read_upstream_tls(section)
    keepalive = section.integer("keepalive", 60, 0, _U16)
    if keepalive == 0:
        raise section.error(
            "keepalive",
            "expected 1-65535 seconds: 0 turns keep-alive off, and an upstream that hangs "
            "without closing the connection would never be noticed",
        )
    reconnect_min = section.number("reconnect_min", 1.0, 0, 3600, low_open=True)
    reconnect_max = section.number("reconnect_max", 30.0, 0, 86400, low_open=True)
    if reconnect_max < reconnect_min:
        raise section.error(
            "reconnect_max",
            f"expected at least reconnect_min ({reconnect_min:g}), got {reconnect_max:g}",
        )
    rules = [_read_topic_rule(src, item_path, item) for item_path, item in section.items("topics")]
    if not rules:
        raise _near_error(
            src,
            section.key("topics"),
            "expected at least one rule such as {pattern: '#', direction: out, local_prefix: "
            "'gw/', remote_prefix: 'site1/gw/'}",
        )
    cfg = UpstreamConfig(
        name=name,
        host=host,
        port=section.integer("port", 1883 if tls is None else 8883, 1, 65535),
        protocol=_read_protocol(section),
        client_id=client_id,
        username=username,
        password=password,
        password_file=password_file,
        tls=tls,
        keepalive=keepalive,
        session_expiry=section.integer("session_expiry", 86_400, 0, _U32),
        reconnect_min=reconnect_min,
        reconnect_max=reconnect_max,
        notification_topic=notification_topic,
        topics=tuple(rules),
        queue=_read_upstream_queue(section.mapping("queue")),
    )
    section.finish()
    return cfg


def _read_upstream(src: _Source, top: _Map, topic_prefix: str) -> tuple[UpstreamConfig, ...]:
    hostname = socket.gethostname()
    configs: list[UpstreamConfig] = []
    for path, raw in top.items("upstream"):
        cfg = _read_one_upstream(src, path, raw, hostname)
        try:
            check_connection(cfg, topic_prefix)
        except UpstreamProblem as problem:
            raise _near_error(src, _join(path, problem.key), problem.message) from None
        configs.append(cfg)
    try:
        check_connections(configs)
    except UpstreamProblem as problem:
        path = _join(f"upstream[{problem.index}]", problem.key)
        raise _near_error(src, path, problem.message) from None
    return tuple(configs)


def _read_config(src: _Source, raw: object) -> GatewayConfig:
    top = _Map(src, "", raw)
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
    topic_prefix = top.string("topic_prefix", "gw", _topic_prefix_problem)
    listener_values = top.sequence("listeners")
    if listener_values is None:
        listeners = list(DEFAULT_LISTENERS)
    else:
        if not listener_values:
            raise src.error("listeners", "expected at least one listener")
        listeners = [
            _read_listener(src, f"listeners[{index}]", item)
            for index, item in enumerate(listener_values)
        ]
    _check_listener_clashes(src, listeners)
    persistence = _read_persistence(top.mapping("persistence"))
    limits = _read_limits(src, top.mapping("limits"))
    auth = _read_auth(src, top.mapping("auth"), listeners)
    sys_interval = top.number("sys_interval", 10.0, 0, 86400)
    logging_section = top.mapping("logging")
    logging = LoggingConfig(level=logging_section.choice("level", "info", LOG_LEVELS))
    logging_section.finish()
    devices = _read_devices(src, top.mapping("devices"))
    demo = top.boolean("demo", False)
    admin_api = top.boolean("admin_api", True)
    admin_status_interval = top.number("admin_status_interval", 5.0, 0.5, 3600)
    upstream = _read_upstream(src, top, topic_prefix)
    top.finish()
    if demo:
        _check_demo_ids(src, devices)
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


# ---------------------------------------------------------------------------- YAML


def _record_lines(src: _Source, node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            child = _join(path, key)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise ConfigError(src.name, child, "key appears twice in the same mapping", line)
            seen.add(key)
            lines.setdefault(child, line)
            _record_lines(src, value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = _join(path, index)
            lines.setdefault(child, item.start_mark.line + 1)
            _record_lines(src, item, child, lines)


# What a file without a single setting almost always is: a write cut short (disk full, power
# lost, an editor's half-saved buffer). Running on defaults would quietly drop passwords and
# ACLs, so it is refused; `{}` asks for every default on purpose.
EMPTY_CONFIG = (
    "no settings in the file (empty, or only comments: a truncated write?); restore it "
    "from the shipped config.yaml, or write {} to run with every default"
)

_CLOSERS = {"flow mapping": ("{", "}"), "flow sequence": ("[", "]")}


def _yaml_problem(exc: yaml.MarkedYAMLError) -> tuple[yaml.Mark | None, str]:
    """Where a YAML error is and what it is, in words a person editing the file can act on.

    PyYAML reports where it gave up, which for an unclosed quote or bracket is often the end of
    the file; the line that needs fixing is where the quote or bracket was opened.
    """
    context, problem = exc.context or "", exc.problem or ""
    opened, mark = exc.context_mark, exc.problem_mark or exc.context_mark
    collection = _CLOSERS.get(context.removeprefix("while parsing a "))
    if "'\\t'" in problem:
        return mark, "a tab character: indent with spaces (YAML does not allow tabs)"
    if "quoted scalar" in context and "end of stream" in problem and opened is not None:
        return opened, "the quote opened here is never closed"
    if (
        collection is not None
        and opened is not None
        and mark is not None
        and mark.line > opened.line
    ):
        opener, closer = collection
        return opened, (
            f"the '{opener}' opened here is not closed "
            f"(expected '{closer}' before line {mark.line + 1})"
        )
    if "expected <block end>" in problem:
        return mark, "bad indentation: the line does not line up with the keys above it"
    if "mapping values are not allowed here" in problem:
        return mark, (
            "unexpected ':': the line is indented too far, or a value containing ': ' needs quotes"
        )
    return mark, " ".join(part for part in (context, problem) if part) or str(exc)


def parse_config(text: str, source: str = "<config>") -> GatewayConfig:
    """Parse and validate configuration text; ``source`` names it in error messages."""
    lines: dict[str, int] = {}
    src = _Source(source, lines)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(source, "", EMPTY_CONFIG)
        _record_lines(src, node, "", lines)
        data: object = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark, problem = _yaml_problem(exc)
        if mark is None:
            raise ConfigError(source, "", f"YAML syntax error: {problem}") from None
        raise ConfigError(
            source, "", f"YAML syntax error at column {mark.column + 1}: {problem}", mark.line + 1
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "", f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    return _read_config(src, data)


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a config file. Raises ConfigError."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(name, "", "config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, "", f"cannot read config file: {exc}") from None
    return parse_config(text, name)
