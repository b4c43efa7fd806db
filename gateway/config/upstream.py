"""The upstream section: bridge connections to other MQTT brokers."""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from pathlib import Path

from gateway.config.reader import (
    MISSING,
    U16,
    U32,
    ConfigError,
    Map,
    Source,
    current_user,
    existing_file,
    join,
    show,
)
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


def _near_error(src: Source, path: str, message: str) -> ConfigError:
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


def _read_protocol(section: Map) -> int:
    value = section.take("protocol")
    if value is MISSING:
        return 5
    scalar = isinstance(value, int | float | str) and not isinstance(value, bool)
    text = str(value) if scalar else ""
    if text in _PROTOCOLS:
        return _PROTOCOLS[text]
    message = f"expected 5 or 3.1.1, got {show(value)}"
    if text in ("4", "3", "3.1"):
        message += " (MQTT 3.1.1 is written 3.1.1; MQTT 3.1 is not supported)"
    raise section.error("protocol", message)


def _mqtt_string(section: Map, key: str, value: str | None) -> str | None:
    problem = None if value is None else mqtt_string_problem(value)
    if problem:
        raise section.error(key, problem)
    return value


def _read_secret_file(section: Map, path: Path) -> bytes:
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
            key,
            f"cannot read '{path}': permission denied (make it readable by user {current_user()})",
        ) from None
    except OSError as exc:
        raise section.error(key, f"cannot read '{path}': {exc.strerror or exc}") from None
    password = line.removesuffix(b"\n").removesuffix(b"\r")
    if len(password) > _MAX_PASSWORD:
        raise section.error(key, f"the first line of '{path}' is longer than {_MAX_PASSWORD} bytes")
    if not password:
        raise section.error(key, f"the first line of '{path}' is empty: expected the password")
    return password


def _read_password(section: Map, username: str | None) -> tuple[bytes | None, Path | None]:
    raw = section.take("password")
    password_file = section.optional_path("password_file")
    if raw is not MISSING and raw is not None and password_file is not None:
        raise section.error("password_file", "expected password or password_file, not both")
    password: bytes | None = None
    if password_file is not None:
        password = _read_secret_file(section, password_file)
    elif raw is not MISSING and raw is not None:
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


def _read_upstream_tls(section: Map) -> UpstreamTls | None:
    raw = section.take("tls")
    if raw is MISSING or raw is None:
        return None
    if not isinstance(raw, dict):
        raise section.error(
            "tls",
            "expected null (plain TCP) or a mapping of cafile, certfile, keyfile, insecure "
            f"({{}} = TLS checked against the system's CAs), got {show(raw)}",
        )
    tls = section.mapping("tls")
    tls.declare(("cafile", "certfile", "keyfile", "insecure"))
    cafile = tls.optional_path("cafile")
    certfile = tls.optional_path("certfile")
    keyfile = tls.optional_path("keyfile")
    insecure = tls.boolean("insecure", False)
    for key, path in (("cafile", cafile), ("certfile", certfile), ("keyfile", keyfile)):
        if path is not None:
            existing_file(tls, key, path)
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


def _read_topic_rule(src: Source, path: str, raw: object) -> TopicRule:
    if isinstance(raw, str):
        raise src.error(
            path,
            "expected a mapping such as {pattern: '#', direction: out, qos: 1, local_prefix: "
            f"'gw/', remote_prefix: 'site1/gw/'}} (Mosquitto's one-line form), got {show(raw)}",
        )
    section = Map(src, path, raw)
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


def _read_upstream_queue(section: Map) -> UpstreamQueue:
    d = UpstreamQueue()
    overflow = section.choice("overflow", d.overflow, ("drop-oldest", "reject-new"))
    queue = UpstreamQueue(
        max_messages=section.integer("max_messages", d.max_messages, 0),
        max_bytes=section.integer("max_bytes", d.max_bytes, 0),
        overflow="reject-new" if overflow == "reject-new" else "drop-oldest",
    )
    section.finish()
    return queue


def _read_upstream_names(section: Map, hostname: str) -> tuple[str, str, str]:
    """(name, client_id, notification_topic), the defaults resolved."""
    name = section.take("name")
    if name is MISSING or name is None:
        raise _near_error(section.src, section.key("name"), "every upstream needs a name")
    if not isinstance(name, str) or not UPSTREAM_NAME.match(name):
        raise section.error(
            "name", f"expected 1-64 characters of a-z, 0-9, '_' and '-', got {show(name)}"
        )
    client_id = section.take("client_id")
    if client_id is MISSING or client_id is None:
        client_id = default_client_id(name, hostname)
    elif not isinstance(client_id, str):
        raise section.error("client_id", f"expected a string or null, got {show(client_id)}")
    else:
        problem = client_id_problem(client_id)
        if problem:
            raise section.error("client_id", problem)
    topic = section.take("notification_topic")
    if topic is MISSING or topic is None:
        topic = default_notification_topic(client_id)
        if topic_name_problem(topic):
            raise section.error(
                "client_id",
                f"the default notification_topic {topic!r} is no topic name with this client "
                "id: set notification_topic",
            )
    elif not isinstance(topic, str):
        raise section.error("notification_topic", f"expected a topic name, got {show(topic)}")
    else:
        problem = topic_name_problem(topic)
        if problem:
            raise section.error("notification_topic", problem)
    return name, client_id, topic


def _read_one_upstream(src: Source, path: str, raw: object, hostname: str) -> UpstreamConfig:
    section = Map(src, path, raw)
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
    keepalive = section.integer("keepalive", 60, 0, U16)
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
        session_expiry=section.integer("session_expiry", 86_400, 0, U32),
        reconnect_min=reconnect_min,
        reconnect_max=reconnect_max,
        notification_topic=notification_topic,
        topics=tuple(rules),
        queue=_read_upstream_queue(section.mapping("queue")),
    )
    section.finish()
    return cfg


def read_upstream(src: Source, top: Map, topic_prefix: str) -> tuple[UpstreamConfig, ...]:
    hostname = socket.gethostname()
    configs: list[UpstreamConfig] = []
    for path, raw in top.items("upstream"):
        cfg = _read_one_upstream(src, path, raw, hostname)
        try:
            check_connection(cfg, topic_prefix)
        except UpstreamProblem as problem:
            raise _near_error(src, join(path, problem.key), problem.message) from None
        configs.append(cfg)
    try:
        check_connections(configs)
    except UpstreamProblem as problem:
        path = join(f"upstream[{problem.index}]", problem.key)
        raise _near_error(src, path, problem.message) from None
    return tuple(configs)
