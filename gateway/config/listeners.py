"""The listeners section: where clients connect (tcp, tls, unix, ws, wss)."""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from gateway.config.reader import Map, Source, existing_file, host_problem, show, url_path_problem

LISTENER_TYPES = ("tcp", "tls", "unix", "ws", "wss")


# Longest path bind() accepts for an AF_UNIX socket on Linux (sun_path minus the NUL).
_MAX_UNIX_PATH = 107


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


def read_listener(src: Source, path: str, raw: object) -> ListenerConfig:
    section = Map(src, path, raw)
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
        host = section.string("host", default_host, host_problem)
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
            url_path=section.string("path", "/mqtt", url_path_problem) if websocket else None,
            origins=_read_origins(section) if websocket else None,
        )
        if kind in ("tls", "wss"):
            listener = _read_tls(section, listener)
    section.finish()
    return listener


def _read_origins(section: Map) -> tuple[str, ...] | None:
    values = section.sequence("origins")
    if values is None:
        return None
    out = []
    for i, value in enumerate(values):
        if not isinstance(value, str) or not _origin_ok(value):
            raise section.error(
                f"origins[{i}]",
                f"expected a browser origin such as 'http://homeassistant.local:8123' "
                f"(scheme://host[:port], no path) or '*' for any, got {show(value)}",
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


def _read_tls(section: Map, base: ListenerConfig) -> ListenerConfig:
    certfile = section.optional_path("certfile")
    keyfile = section.optional_path("keyfile")
    kind: ListenerType = "wss" if base.type == "ws" else "tls"
    if certfile is None:
        raise section.error("certfile", f"a {kind} listener needs a certificate file (PEM)")
    if keyfile is None:
        raise section.error("keyfile", f"a {kind} listener needs a private key file (PEM)")
    existing_file(section, "certfile", certfile)
    existing_file(section, "keyfile", keyfile)
    cafile = section.optional_path("cafile")
    if cafile is not None:
        existing_file(section, "cafile", cafile)
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


def check_listener_clashes(src: Source, listeners: list[ListenerConfig]) -> None:
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
