"""config.yaml loading: defaults, the shipped file, and the messages for bad values."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from devices.model import DevicePolicy
from gateway.auth.acl import AclRule, BridgeGuard
from gateway.auth.passwords import hash_password, write_password_file
from gateway.broker.settings import BrokerSettings, Overflow, QueueLimits, QueueRule
from gateway.config import (
    DEFAULT_LISTENERS,
    ConfigError,
    GatewayConfig,
    ListenerConfig,
    describe_listeners,
    is_loopback_host,
    load_config,
    parse_config,
)
from gateway.wiring import broker_settings, build_authenticator, build_authorizer

REPO = Path(__file__).resolve().parent.parent


def parse(text: str) -> GatewayConfig:
    return parse_config(textwrap.dedent(text), "test.yaml")


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


USERS = {"alice": hash_password("a"), "bob": hash_password("b")}  # hashed once: scrypt is slow


@pytest.fixture
def passwords(in_tmp: Path) -> Path:
    path = in_tmp / "users.pw"
    write_password_file(path, USERS)
    return path


def test_shipped_config_equals_defaults() -> None:
    assert load_config(REPO / "config.yaml") == GatewayConfig()


@pytest.mark.parametrize("text", ["", "\n  \n", "# nothing\n", "# edge-gateway configuration\n#"])
def test_a_file_without_settings_is_refused(text: str) -> None:
    """Empty or comments only: almost always a write cut short, which must not silently turn
    into a gateway without passwords and ACLs."""
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert caught.value.key_path == ""
    assert "truncated" in caught.value.detail and "{}" in caught.value.detail


def test_an_empty_mapping_is_all_defaults() -> None:
    assert parse("{}\n") == GatewayConfig()
    assert parse("# every default, on purpose\n{}\n") == GatewayConfig()


def test_defaults_are_what_the_issue_asks_for() -> None:
    cfg = GatewayConfig()
    tcp, unix = cfg.listeners
    assert (tcp.type, tcp.host, tcp.port, tcp.allow_anonymous) == ("tcp", "127.0.0.1", 1883, True)
    assert (unix.type, unix.path, unix.allow_anonymous) == ("unix", Path("edge-gateway.sock"), True)
    assert cfg.persistence.synchronous == "full"
    assert cfg.limits.queue == QueueLimits()
    assert cfg.auth.acl.default == "allow"
    assert cfg.topic_prefix == "gw"


def test_shipped_config_mentions_every_key() -> None:
    text = (REPO / "config.yaml").read_text()
    for key in (
        "topic_prefix", "listeners", "host", "port", "allow_anonymous", "certfile", "keyfile",
        "cafile", "require_client_cert", "path", "persistence", "enabled", "synchronous",
        "group_commit_ms", "max_size_mb", "max_packet_size", "receive_maximum",
        "max_inflight_messages", "max_keepalive", "max_session_expiry", "v311_session_expiry",
        "topic_alias_maximum", "connect_timeout", "max_connections", "max_retained_messages",
        "max_messages", "max_bytes", "overflow", "queue_qos0", "queue_rules", "password_file",
        "max_sessions",
        "admin_users", "default", "rules", "user", "client_id", "topic", "actions", "allow",
        "reason_code", "sys_interval", "level",
    ):  # fmt: skip
        assert f"{key}:" in text, key


def test_broker_settings_mapping() -> None:
    cfg = parse(
        """
        limits:
          max_packet_size: 5000
          receive_maximum: 7
          max_inflight_messages: 3
          max_keepalive: 60
          max_session_expiry: 3600
          v311_session_expiry: 600
          topic_alias_maximum: 0
          max_retained_messages: 50
          queue: {max_messages: 5, max_bytes: 100, overflow: reject-new, queue_qos0: true}
          queue_rules:
            - {client_id: "sensor-*", max_messages: 1}
        sys_interval: 0
        """
    )
    settings = broker_settings(cfg)
    base = QueueLimits(5, 100, Overflow.REJECT_NEW, True)
    assert settings == BrokerSettings(
        max_packet_size=5000,
        receive_maximum=7,
        max_inflight_out=3,
        max_keepalive=60,
        max_session_expiry=3600,
        v311_session_expiry=600,
        topic_alias_maximum=0,
        max_retained_messages=50,
        default_queue=base,
        # The rule names only max_messages; the rest comes from limits.queue.
        queue_rules=(QueueRule("sensor-*", QueueLimits(1, 100, Overflow.REJECT_NEW, True)),),
        sys_interval=0.0,
    )
    assert settings.queue_limits_for("sensor-1").max_messages == 1
    assert settings.queue_limits_for("other") == base
    assert broker_settings(GatewayConfig()) == BrokerSettings()


def test_listeners_and_names(in_tmp: Path, passwords: Path) -> None:
    cfg = parse(
        """
        listeners:
          - {type: tcp, host: "::1", port: 1884}
          - {type: tcp, host: 0.0.0.0, port: 1885, allow_anonymous: false, name: lan}
          - {type: unix, path: run/gw.sock}
        auth: {password_file: users.pw}
        """
    )
    assert [listener.name for listener in cfg.listeners] == [
        "tcp:[::1]:1884",
        "lan",
        "unix:run/gw.sock",
    ]
    assert cfg.listeners[1].allow_anonymous is False
    assert cfg.listeners[2] == ListenerConfig(
        type="unix", name="unix:run/gw.sock", host=None, port=None, path=Path("run/gw.sock")
    )
    assert describe_listeners(cfg) == [
        "tcp:[::1]:1884: tcp [::1]:1884, anonymous allowed",
        "lan: tcp 0.0.0.0:1885, user name and password required",
        "unix:run/gw.sock: unix socket run/gw.sock, anonymous allowed",
    ]


def test_lan_listener_defaults_to_passwords(in_tmp: Path, passwords: Path) -> None:
    cfg = parse(
        """
        listeners: [{host: 192.168.1.2, port: 1883}]
        auth: {password_file: users.pw}
        """
    )
    assert cfg.listeners[0].allow_anonymous is False


def test_port_zero_and_same_port_on_distinct_addresses() -> None:
    cfg = parse(
        """
        listeners:
          - {host: 127.0.0.1, port: 0}
          - {host: 127.0.0.2, port: 0, name: second}
          - {host: "::1", port: 1883}
          - {host: 127.0.0.1, port: 1883}
        """
    )
    assert [listener.port for listener in cfg.listeners] == [0, 0, 1883, 1883]


def test_yaml_off_means_synchronous_off() -> None:
    assert parse("persistence: {synchronous: off}").persistence.synchronous == "off"
    assert parse("persistence: {synchronous: NORMAL}").persistence.synchronous == "normal"


def test_acl_rules_and_authorizer(in_tmp: Path, passwords: Path) -> None:
    cfg = parse(
        """
        auth:
          password_file: users.pw
          admin_users: [alice]
          acl:
            default: deny
            rules:
              - {topic: "test/nosubscribe", actions: [subscribe], allow: false, reason_code: 0x80}
              - {user: "bob", topic: "users/%u/#", actions: write}
        """
    )
    rules = cfg.auth.acl.rules
    assert rules[0] == AclRule(
        topic="test/nosubscribe", actions=frozenset({"subscribe"}), allow=False, reason_code=0x80
    )
    assert rules[1].actions == frozenset({"write"}) and rules[1].reason_code == 0x87
    authorizer = build_authorizer(cfg)
    assert isinstance(authorizer, BridgeGuard) and authorizer.restricted_prefix is None
    assert authorizer.subscribe_refusal("bob", "c", "test/nosubscribe") == 0x80
    assert authorizer.can_publish("bob", "c", "users/bob/x")
    assert not authorizer.can_publish("bob", "c", "users/alice/x")
    assert authorizer.can_publish("alice", "c", "anything")  # admin
    # No rules: only the built-in guard of gw/bridge, which restricts nothing else.
    default = build_authorizer(GatewayConfig())
    assert isinstance(default, BridgeGuard) and default.restricted_prefix == "gw/bridge"
    authenticator = build_authenticator(cfg)
    assert authenticator.users == {"alice", "bob"}


def test_tls_listener(in_tmp: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not installed")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
         "-out", "cert.pem", "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    Path("users.pw").write_text(f"u:{hash_password('p')}\n")
    cfg = parse(
        """
        listeners:
          - {type: tls, certfile: cert.pem, keyfile: key.pem}
        auth: {password_file: users.pw}
        """
    )
    (tls,) = cfg.listeners
    assert (tls.type, tls.name, tls.host, tls.port) == ("tls", "tls:0.0.0.0:8883", "0.0.0.0", 8883)
    assert (tls.certfile, tls.keyfile, tls.allow_anonymous) == (
        Path("cert.pem"),
        Path("key.pem"),
        False,
    )
    # A key that does not belong to the certificate is caught at load time.
    Path("other.pem").write_text(Path("cert.pem").read_text())
    with pytest.raises(ConfigError) as caught:
        parse(
            """
            listeners: [{type: tls, certfile: cert.pem, keyfile: other.pem}]
            auth: {password_file: users.pw}
            """
        )
    assert caught.value.key_path == "listeners[0].certfile"


# (config text, key path in the error, words the message must contain)
BAD_CONFIGS = [
    ("listeners:\n  - {port: abc}", "listeners[0].port", "expected an integer 0-65535, got 'abc'"),
    (
        "listeners:\n  - {type: unix}\n  - {port: 70000}",
        "listeners[1].port",
        "expected an integer 0-65535, got 70000",
    ),
    ("listeners:\n  - {port: true}", "listeners[0].port", "got true"),
    ("listeners:\n  - {type: udp}", "listeners[0].type", "expected one of tcp, tls, unix"),
    ("listeners:\n  - {host: 'not a host!'}", "listeners[0].host", "IP address or host name"),
    (
        "listeners:\n  - {host: 0.0.0.0, allow_anonymous: true}",
        "listeners[0].allow_anonymous",
        "must require user names and passwords",
    ),
    (
        "listeners:\n  - {host: 0.0.0.0}",
        "auth.password_file",
        "a password file is needed",
    ),
    ("listeners:\n  - {type: unix, port: 1}", "listeners[0].port", "applies to tcp listeners"),
    ("listeners:\n  - {type: tcp, path: x}", "listeners[0].path", "applies to unix listeners"),
    ("listeners:\n  - {type: tls}", "listeners[0].certfile", "needs a certificate file"),
    (
        "listeners:\n  - {type: tls, certfile: nope.pem, keyfile: nope.key}",
        "listeners[0].certfile",
        "expected an existing file, got 'nope.pem'",
    ),
    ("listeners: []", "listeners", "at least one listener"),
    ("listeners: {port: 1}", "listeners", "expected a list, got a mapping"),
    ("listeners:\n  - 5", "listeners[0]", "expected a mapping of keys, got 5"),
    (
        "listeners:\n  - {port: 1883}\n  - {port: 1883, name: b}",
        "listeners[1].port",
        "port 1883 on 127.0.0.1 is already used by listeners[0]",
    ),
    (
        "listeners:\n  - {port: 1883}\n  - {host: '::', port: 1883, allow_anonymous: false}",
        "listeners[1].port",
        "already used",
    ),
    (
        "listeners:\n  - {port: 1883}\n  - {port: 1884, name: 'tcp:127.0.0.1:1883'}",
        "listeners[1].name",
        "already used",
    ),
    (
        "listeners:\n  - {type: unix, path: a.sock}\n  - {type: unix, path: ./a.sock, name: b}",
        "listeners[1].path",
        "already used",
    ),
    (
        f"listeners:\n  - {{type: unix, path: {'x' * 200}}}",
        "listeners[0].path",
        "at most 107 bytes",
    ),
    ("persistence: {synchronous: fast}", "persistence.synchronous", "off, normal, full, extra"),
    ("persistence: {enabled: 1}", "persistence.enabled", "expected true or false, got 1"),
    ("persistence: {group_commit_ms: -1}", "persistence.group_commit_ms", "got -1"),
    ("persistence: {path: ''}", "persistence.path", "non-empty path"),
    ("persistence: {path: 5}", "persistence.path", "expected a string, got 5"),
    ("persistence: 3", "persistence", "expected a mapping of keys, got 3"),
    ("limits: {receive_maximum: 0}", "limits.receive_maximum", "an integer 1-65535, got 0"),
    ("limits: {max_packet_size: 1.5}", "limits.max_packet_size", "got 1.5"),
    ("limits: {connect_timeout: 0}", "limits.connect_timeout", "a number > 0"),
    ("limits: {max_connections: -1}", "limits.max_connections", "an integer >= 0, got -1"),
    (
        "limits: {queue: {overflow: drop-newest}}",
        "limits.queue.overflow",
        "one of drop-oldest, reject-new, got 'drop-newest'",
    ),
    (
        "limits: {queue_rules: [{client_id: x, max_mesages: 3}]}",
        "limits.queue_rules[0].max_mesages",
        "did you mean 'max_messages'",
    ),
    ("limits: {queue_rules: [{client_id: ''}]}", "limits.queue_rules[0].client_id", "pattern"),
    ("auth: {password_file: missing.pw}", "auth.password_file", "file not found"),
    ("auth: {admin_users: [root]}", "auth.admin_users", "need auth.password_file"),
    ("auth: {admin_users: [3]}", "auth.admin_users[0]", "expected a user name, got 3"),
    ("auth: {acl: {default: maybe}}", "auth.acl.default", "one of allow, deny"),
    ("auth: {acl: {rules: [{topic: 'a/#/b'}]}}", "auth.acl.rules[0].topic", "'#' must be"),
    ("auth: {acl: {rules: [{topic: 'a+'}]}}", "auth.acl.rules[0].topic", "'+' must be"),
    (
        "auth: {acl: {rules: [{actions: [publish]}]}}",
        "auth.acl.rules[0].actions",
        "read, write, subscribe, got 'publish'",
    ),
    ("auth: {acl: {rules: [{actions: []}]}}", "auth.acl.rules[0].actions", "got a list"),
    (
        "auth: {acl: {rules: [{reason_code: 0x86}]}}",
        "auth.acl.rules[0].reason_code",
        "SUBACK failure code",
    ),
    ("auth: {acl: {rules: [{reason_code: [1]}]}}", "auth.acl.rules[0].reason_code", "a list"),
    ("auth: {acl: {rules: [{allow: 'no'}]}}", "auth.acl.rules[0].allow", "true or false"),
    ("topic_prefix: 'gw/#'", "topic_prefix", "without wildcards"),
    ("topic_prefix: 'gw/'", "topic_prefix", "non-empty topic levels"),
    ("topic_prefix: '$gw'", "topic_prefix", "not starting with '$'"),
    ("sys_interval: fast", "sys_interval", "expected a number >= 0"),
    ("admin_status_interval: 0", "admin_status_interval", "expected a number >= 0.5"),
    ("logging: {level: loud}", "logging.level", "debug, info, warning, error, critical"),
    ("listners: []", "listners", "unknown key 'listners' (did you mean 'listeners'?)"),
    ("zzz: 1", "zzz", "unknown key 'zzz'; valid keys here: admin_api, admin_status_interval, auth"),
    ("limits: {queue: {max_message: 1}}", "limits.queue.max_message", "'max_messages'"),
    ("1: x", "", "keys must be strings"),
    ("- a\n- b", "", "expected a mapping of keys, got a list"),
    ("sys_interval: 1\nsys_interval: 2", "sys_interval", "appears twice"),
]


@pytest.mark.parametrize(("text", "key_path", "words"), BAD_CONFIGS)
def test_bad_config(in_tmp: Path, text: str, key_path: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bad.yaml")
    error = caught.value
    assert error.key_path == key_path
    assert words in str(error)
    assert str(error).startswith("bad.yaml")
    if key_path:
        assert f": {key_path}: " in str(error)


def test_error_names_the_line() -> None:
    text = "topic_prefix: gw\nlisteners:\n  - type: tcp\n    port: abc\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "config.yaml")
    assert str(caught.value) == (
        "config.yaml:4: listeners[0].port: expected an integer 0-65535, got 'abc'"
    )


def test_misspelt_key_is_reported_before_cross_checks() -> None:
    # The misspelling leaves allow_anonymous at its LAN default; the typo must be what we
    # hear about, not a complaint about the missing password file.
    with pytest.raises(ConfigError) as caught:
        parse("listeners: [{host: 0.0.0.0, alow_anonymous: false}]")
    assert "did you mean 'allow_anonymous'" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse("listeners: [{host: 0.0.0.0, allow_anonymous: false}]\nauht: {}\n")
    assert "did you mean 'auth'" in str(caught.value)


def test_yaml_syntax_error_gives_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("listeners:\n  - type: tcp\n    port: [1883\nlogging: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:")
    assert caught.value.line in (3, 4)
    assert "YAML syntax error" in message


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("listeners:\n  - type: tcp\n\thost: 127.0.0.1\n", 3, "a tab character"),
        ("logging:\n\tlevel: info\n", 2, "indent with spaces"),
        ('topic_prefix: "gw\nlisteners: []\n\nlogging: {level: info}\n', 1, "never closed"),
        ("sys_interval: 3\ntopic_prefix: 'gw\n\n", 2, "the quote opened here"),
        ("logging:\n  level: info\n limits: {}\n", 3, "bad indentation"),
        ("listeners:\n  - type: tcp\n  port: 1883\n", 3, "bad indentation"),
        ("logging:\n  level: info\n    foo: 1\n", 3, "indented too far"),
        ("topic_prefix: a: b\n", 1, "needs quotes"),
        ("listeners: [{type: tcp, port: 1883\n\nsys_interval: 3\n", 1, "'{' opened here"),
        ("sys_interval: 3\nlisteners: [{type: tcp}\nlogging: {}\n", 2, "'[' opened here"),
        ("listeners: *nowhere\n", 1, "undefined alias"),
    ],
)
def test_yaml_syntax_error_points_at_the_line_to_fix(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml")
    assert caught.value.line == line
    assert caught.value.detail.startswith("YAML syntax error at column ")
    assert words in caught.value.detail


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_password_file_line(in_tmp: Path) -> None:
    Path("users.pw").write_text("# users\nalice:$scrypt$bogus\n")
    with pytest.raises(ConfigError) as caught:
        parse("auth: {password_file: users.pw}")
    assert caught.value.key_path == "auth.password_file"
    assert "users.pw:2" in str(caught.value)


def test_admin_must_be_in_password_file(passwords: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse("auth: {password_file: users.pw, admin_users: [alice, carol]}")
    assert caught.value.key_path == "auth.admin_users[1]"
    assert "edge-gateway passwd users.pw carol" in str(caught.value)


def test_relative_paths_are_kept_relative(in_tmp: Path) -> None:
    cfg = parse("persistence: {path: data/gw.db}")
    assert cfg.persistence.path == Path("data/gw.db")
    assert not cfg.persistence.path.is_absolute()


def test_home_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = parse("persistence: {path: ~/gw.db}")
    assert cfg.persistence.path == tmp_path / "gw.db"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("gateway.local", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_default_listeners_constant() -> None:
    assert GatewayConfig().listeners == DEFAULT_LISTENERS
    assert os.fspath(DEFAULT_LISTENERS[1].path or "") == "edge-gateway.sock"


# --- devices: -----------------------------------------------------------------------------

BAD_DEVICE_CONFIGS = [
    (
        "devices: {known: {kitchen: {kind: bthome, address: 'A4:C1:38:00:00:01', bind_key: 1234}}}",
        "devices.known.kitchen.bind_key",
        "expected 32 hex digits",
    ),
    (
        "devices: {known: {kitchen: {kind: bthome, address: 'A4:C1:38:00:00:01', "
        "bind_key: 'zz1d39c1d7cc1ab1aee224cd096db932'}}}",
        "devices.known.kitchen.bind_key",
        "expected 32 hex digits",
    ),
    ("devices: {known: {k: {kind: bthome, address: 'A4:C1'}}}", "devices.known.k.address", "BLE"),
    ("devices: {known: {k: {kind: bthome}}}", "devices.known.k.address", "needs its address"),
    ("devices: {known: {k: {host: h}}}", "devices.known.k.kind", "bthome, eq3, gatt, shelly, wled"),
    ("devices: {known: {k: {kind: toaster}}}", "devices.known.k.kind", "got 'toaster'"),
    ("devices: {known: {k: {kind: shelly}}}", "devices.known.k.host", "host name or IP"),
    ("devices: {known: {k: {kind: shelly, host: 'a b'}}}", "devices.known.k.host", "host name"),
    ("devices: {known: {k: {kind: wled, host: h, port: 0}}}", "devices.known.k.port", "got 0"),
    (
        "devices: {known: {k: {kind: shelly, host: h, address: 'A4:C1:38:00:00:01'}}}",
        "devices.known.k.address",
        "applies to BLE devices, not shelly",
    ),
    (
        "devices: {known: {k: {kind: shelly, host: h, session: sometimes}}}",
        "devices.known.k.session",
        "must be one of clean, persistent",
    ),
    (
        "devices: {known: {k: {kind: shelly, host: h, max_attempts: 0}}}",
        "devices.known.k.max_attempts",
        "whole number >= 1, got 0",
    ),
    (
        "devices: {known: {k: {kind: shelly, host: h, comand_ttl: 5}}}",
        "devices.known.k.comand_ttl",
        "did you mean 'command_ttl'",
    ),
    ("devices: {known: {'a/b': {kind: wled, host: h}}}", "devices.known.a/b", "one topic level"),
    (
        "devices: {known: {a: {kind: wled, host: h}, b: {kind: wled, host: h}}}",
        "devices.known.b",
        "already declared as 'a'",
    ),
    (
        "devices: {policies: {thermostat: {command_tl: 3}}}",
        "devices.policies.thermostat.command_tl",
        "did you mean 'command_ttl'",
    ),
    (
        "devices: {policies: {shelly: {overflow: drop-newest}}}",
        "devices.policies.shelly.overflow",
        "must be one of drop-oldest, reject-new",
    ),
    (
        "devices: {policies: {shelly: {wake_interval: 0}}}",
        "devices.policies.shelly.wake_interval",
        "> 0",
    ),
    ("devices: {policies: {toaster: {}}}", "devices.policies.toaster", "unknown key 'toaster'"),
    ("devices: {ble: {scanning_mode: loud}}", "devices.ble.scanning_mode", "auto, active"),
    ("devices: {ble: {enabled: 1}}", "devices.ble.enabled", "true or false"),
    ("devices: {ble: {adapter: ''}}", "devices.ble.adapter", "non-empty string"),
    ("devices: {lan: {interfaces: [eth0]}}", "devices.lan.interfaces[0]", "IP address"),
    ("devices: {lan: {interfaces: eth0}}", "devices.lan.interfaces", "expected a list"),
    ("devices: {lan: {poll_interval: 0}}", "devices.lan.poll_interval", "a number > 0"),
    ("devices: {lan: {timeout: 100}}", "devices.lan.timeout", "<= 60"),
    ("devices: {lna: {}}", "devices.lna", "did you mean 'lan'"),
]


@pytest.mark.parametrize(("text", "key_path", "words"), BAD_DEVICE_CONFIGS)
def test_bad_devices_config(text: str, key_path: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bad.yaml")
    assert caught.value.key_path == key_path
    assert words in str(caught.value)
    assert f": {key_path}: " in str(caught.value)


def test_devices_defaults_are_harmless() -> None:
    devices = GatewayConfig().devices
    # No mDNS on the machine's real network unless the user names an interface.
    assert devices.lan.interfaces == ()
    assert devices.ble.enabled and devices.ble.scanning_mode == "auto"
    assert devices.ble.adapter is None
    assert devices.policies == () and devices.known == ()


def test_devices_known_and_policies() -> None:
    from devices.model import DevicePolicy

    cfg = parse(
        """
        devices:
          lan: {interfaces: [127.0.0.1], poll_interval: 0.5, timeout: 2}
          ble: {scanning_mode: passive, adapter: hci1}
          policies:
            shelly: {command_ttl: 60}
            thermostat: {session: clean}
          known:
            kitchen:
              kind: bthome
              address: "a4:c1:38:00:00:01"
              bind_key: 231D39C1D7CC1AB1AEE224CD096DB932
              name: Kitchen
            plug: {kind: shelly, host: 192.168.1.20, max_attempts: 2}
            strip: {kind: wled, host: strip.local, port: 8080, session: clean}
        """
    ).devices
    assert cfg.lan.interfaces == ("127.0.0.1",) and cfg.lan.poll_interval == 0.5
    assert (cfg.ble.scanning_mode, cfg.ble.adapter) == ("passive", "hci1")
    assert cfg.policy_for("shelly") == DevicePolicy.for_kind("shelly").with_overrides(
        {"command_ttl": 60}
    )
    assert cfg.policy_for("thermostat").session == "clean"
    assert cfg.policy_for("wled") == DevicePolicy.for_kind("wled")
    kitchen, plug, strip = cfg.known
    assert (kitchen.id, kitchen.kind, kitchen.name) == ("kitchen", "bthome", "Kitchen")
    assert kitchen.address == "A4:C1:38:00:00:01"
    assert kitchen.bind_key == "231d39c1d7cc1ab1aee224cd096db932"
    assert kitchen.policy == DevicePolicy.for_kind("bthome")
    # Kind policy from config first, then the device's own overrides.
    assert (plug.host, plug.port) == ("192.168.1.20", 80)
    assert plug.policy.command_ttl == 60 and plug.policy.max_attempts == 2
    assert plug.policy.persistent
    assert (strip.host, strip.port, strip.policy.session) == ("strip.local", 8080, "clean")


def test_policy_rules_match_by_address_name_and_id_first_match_wins() -> None:
    cfg = parse(
        """
        devices:
          policies:
            bthome: {wake_interval: 300}
          policy_rules:
            - {address: "a4:c1:38:*", session: persistent, queue_depth: 3}
            - {name: "shellyplus2pm-*", command_ttl: 600}
            - {id: "bthome-*", max_attempts: 2}
        """
    )
    d = cfg.devices
    matched = d.policy_for("bthome", "bthome-a4c138000001", "A4:C1:38:00:00:01")
    assert (matched.session, matched.queue_depth, matched.wake_interval) == ("persistent", 3, 300)
    assert matched.max_attempts == DevicePolicy().max_attempts  # first match only
    other = d.policy_for("bthome", "bthome-112233445566", "11:22:33:44:55:66")
    assert (other.session, other.max_attempts) == ("clean", 2)
    cover = d.policy_for("shelly", "shellyplus2pm-abc", None, "shellyplus2pm-abc")
    assert cover.command_ttl == 600
    assert d.policy_for("wled", "wled-1", None, "wled-1") == DevicePolicy.for_kind("wled")


@pytest.mark.parametrize(
    ("rule", "path", "expected"),
    [
        ("{queue_depth: 3}", "devices.policy_rules[0]", "at least one of id, address, name"),
        ("{id: x, queue_depth: 0}", "devices.policy_rules[0].queue_depth", ">= 1"),
        ("{id: x, colour: red}", "devices.policy_rules[0].colour", "unknown key"),
        ("{id: x, session: sometimes}", "devices.policy_rules[0].session", "clean, persistent"),
    ],
)
def test_bad_policy_rules_name_the_key(rule: str, path: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"devices:\n  policy_rules:\n    - {rule}\n", "bad.yaml")
    message = str(err.value)
    assert path in message and expected in message, message


# --- devices: eq3 and gatt devices, gatt_profiles -------------------------------------------

VALVE_PROFILE = """
devices:
  gatt_profiles:
    my-valve:
      commands:
        open:
          char: fff1
          payload: "57 01 {raw}"
          values: {true: "01", false: "00"}
          confirm: {notify: fff2, expect: "13 01"}
        level: {char: fff1, payload: "57 02 {u8}", min: 0, max: 100}
    other: {commands: {ring: {char: fff3, payload: "01"}}}
"""


def test_eq3_and_gatt_devices_with_a_profile() -> None:
    from devices.ble.gatt_ops import GattStep

    cfg = parse(
        VALVE_PROFILE
        + """
  known:
    living-room: {kind: eq3, address: "00:1a:22:0a:0b:0c", name: Living room}
    garden: {kind: gatt, address: "C0:FF:EE:00:00:01", profile: my-valve, max_attempts: 2}
"""
    ).devices
    eq3, garden = cfg.known
    assert (eq3.kind, eq3.address, eq3.name, eq3.profile) == (
        "eq3",
        "00:1A:22:0A:0B:0C",
        "Living room",
        None,
    )
    assert eq3.policy == DevicePolicy.for_kind("thermostat")
    assert (garden.kind, garden.profile, garden.bind_key) == ("gatt", "my-valve", None)
    assert garden.policy == DevicePolicy.for_kind("gatt").with_overrides({"max_attempts": 2})
    assert [name for name, _ in cfg.gatt_profiles] == ["my-valve", "other"]
    profile = cfg.gatt_profile("my-valve")
    assert profile.keys == ("open", "level")
    assert profile.notify_chars == ("0000fff2-0000-1000-8000-00805f9b34fb",)
    (step,) = profile.plan({"level": 40})
    assert step == GattStep("0000fff1-0000-1000-8000-00805f9b34fb", bytes.fromhex("570228"))
    assert cfg.gatt_profile("other").keys == ("ring",)
    with pytest.raises(KeyError):
        cfg.gatt_profile("nope")


def test_eq3_policy_is_the_thermostats_and_can_be_overridden() -> None:
    assert DevicePolicy.for_kind("eq3") == DevicePolicy.for_kind("thermostat")
    cfg = parse("devices: {policies: {eq3: {wake_interval: 300}}}").devices
    assert cfg.policy_for("eq3").wake_interval == 300


def _commented_block(lines: list[str], start: str) -> list[str]:
    begin = lines.index(f"  #   {start}:")
    block = []
    for line in lines[begin:]:
        if not line.startswith("  #   "):
            break
        block.append("  " + line[len("  #   ") :])
    return block


def test_shipped_config_examples_of_profiles_and_known_devices_load() -> None:
    lines = (REPO / "config.yaml").read_text().splitlines()
    text = "\n".join(
        ["devices:", *_commented_block(lines, "gatt_profiles"), *_commented_block(lines, "known")]
    )
    cfg = parse_config(text, "example.yaml").devices
    assert [name for name, _ in cfg.gatt_profiles] == ["my-valve"]
    assert {d.kind for d in cfg.known} == {"bthome", "eq3", "gatt", "shelly"}
    garden = next(d for d in cfg.known if d.kind == "gatt")
    assert cfg.gatt_profile(garden.profile or "").keys == ("open", "level")


BAD_PROFILE_CONFIGS = [
    (
        "devices: {known: {k: {kind: gatt, address: 'C0:FF:EE:00:00:01'}}}",
        "devices.known.k.profile",
        "a gatt device needs the name of a devices.gatt_profiles entry (none is declared)",
    ),
    (
        VALVE_PROFILE + "  known: {k: {kind: gatt, address: 'C0:FF:EE:00:00:01', profile: valve}}",
        "devices.known.k.profile",
        "entry (my-valve, other), got 'valve' (did you mean 'my-valve'?)",
    ),
    (
        VALVE_PROFILE + "  known: {k: {kind: gatt, address: 'C0:FF:EE:00:00:01', profile: 3}}",
        "devices.known.k.profile",
        "(my-valve, other), got 3",
    ),
    (
        VALVE_PROFILE + "  known: {k: {kind: eq3, address: 'C0:FF:EE:00:00:01', profile: other}}",
        "devices.known.k.profile",
        "'profile' applies to gatt devices, not eq3",
    ),
    (
        "devices: {known: {k: {kind: shelly, host: h, profile: x}}}",
        "devices.known.k.profile",
        "'profile' applies to gatt devices, not shelly",
    ),
    (
        "devices: {known: {k: {kind: eq3, address: 'C0:FF:EE:00:00:01', "
        "bind_key: 231d39c1d7cc1ab1aee224cd096db932}}}",
        "devices.known.k.bind_key",
        "'bind_key' applies to bthome devices, not eq3",
    ),
    ("devices: {known: {k: {kind: eq3}}}", "devices.known.k.address", "needs its address"),
    ("devices: {known: {k: {kind: gatt, host: h}}}", "devices.known.k.host", "LAN devices"),
    ("devices: {gatt_profiles: [a]}", "devices.gatt_profiles", "expected a mapping of keys"),
    ("devices: {gatt_profiles: {v: null}}", "devices.gatt_profiles.v", "got null"),
    ("devices: {gatt_profiles: {v: {}}}", "devices.gatt_profiles.v.commands", "at least one"),
    (
        "devices: {gatt_profiles: {v: {comands: {}}}}",
        "devices.gatt_profiles.v.comands",
        "unknown key 'comands'",
    ),
    (
        "devices: {gatt_profiles: {v: {commands: {open: {char: fff1, payload: '57 {u7}'}}}}}",
        "devices.gatt_profiles.v.commands.open.payload",
        "unknown placeholder {u7}",
    ),
    (
        "devices: {gatt_profiles: {v: {commands: {open: {char: 1234, payload: '01'}}}}}",
        "devices.gatt_profiles.v.commands.open.char",
        "in quotes",
    ),
    (
        "devices: {gatt_profiles: {v: {commands: {o: {char: fff1, payload: '01', "
        "confirm: {notify: fff2, timeout: 0}}}}}}",
        "devices.gatt_profiles.v.commands.o.confirm.timeout",
        "seconds > 0",
    ),
    ("devices: {gatt_profile: {}}", "devices.gatt_profile", "did you mean 'gatt_profiles'"),
]


@pytest.mark.parametrize(("text", "key_path", "words"), BAD_PROFILE_CONFIGS)
def test_bad_gatt_devices_and_profiles(text: str, key_path: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "bad.yaml")
    assert caught.value.key_path == key_path
    assert words in str(caught.value), str(caught.value)
    assert str(caught.value).startswith("bad.yaml")
    assert f": {key_path}: " in str(caught.value)


def test_profile_errors_name_the_line() -> None:
    text = VALVE_PROFILE.replace('payload: "57 02 {u8}", min: 0', 'payload: "57 02 {u8}", min: -1')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "config.yaml")
    assert str(caught.value) == (
        "config.yaml:11: devices.gatt_profiles.my-valve.commands.level.min: "
        "-1 * scale 1 does not fit {u8} (0-255)"
    )


def test_profile_error_on_a_key_yaml_rewrote_takes_the_enclosing_line() -> None:
    # A bare `on:` is the boolean true to YAML: the message names it as such, on its line.
    text = (
        "devices:\n"
        "  gatt_profiles:\n"
        "    v:\n"
        "      commands:\n"
        "        power:\n"
        "          char: fff1\n"
        "          payload: '{raw}'\n"
        "          values:\n"
        "            on: zz\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "config.yaml")
    assert caught.value.key_path == "devices.gatt_profiles.v.commands.power.values.true"
    assert caught.value.line == 8


# --- admin listeners (issue 4) ------------------------------------------------------------


def test_admin_listener_only_on_unix(in_tmp: Path) -> None:
    cfg = parse(
        """
        listeners:
          - {type: tcp, port: 1884}
          - {type: unix, path: admin.sock, admin: true, name: local}
          - {type: unix, path: other.sock}
        """
    )
    assert [listener.admin for listener in cfg.listeners] == [False, True, False]
    assert describe_listeners(cfg)[1] == (
        "local: unix socket admin.sock, anonymous allowed, every client is an admin"
    )
    assert DEFAULT_LISTENERS[1].admin and not DEFAULT_LISTENERS[0].admin
    for kind in ("tcp", "tls"):
        with pytest.raises(ConfigError) as caught:
            parse(f"listeners: [{{type: {kind}, port: 1884, admin: true}}]")
        assert caught.value.key_path == "listeners[0].admin"
        assert "unix listeners only" in str(caught.value)
        assert "auth.admin_users" in str(caught.value)
    with pytest.raises(ConfigError, match="expected true or false"):
        parse("listeners: [{type: unix, admin: 'yes'}]")


async def test_admin_listener_makes_every_client_of_it_an_admin(in_tmp: Path) -> None:
    from gateway.broker.effects import ConnectionInfo

    cfg = parse(
        """
        listeners:
          - {type: tcp, port: 1884}
          - {type: unix, path: admin.sock, admin: true, name: local}
        """
    )
    authenticator = build_authenticator(cfg)
    local = await authenticator.authenticate(None, None, ConnectionInfo(1, "local", "unix"))
    tcp = await authenticator.authenticate(None, None, ConnectionInfo(2, "tcp:127.0.0.1:1884", "x"))
    assert local.ok and local.is_admin
    assert tcp.ok and not tcp.is_admin


async def test_admin_listener_still_checks_passwords(passwords: Path) -> None:
    from gateway.broker.effects import ConnectionInfo

    cfg = parse(
        """
        listeners: [{type: unix, path: admin.sock, admin: true, allow_anonymous: false}]
        auth: {password_file: users.pw}
        """
    )
    authenticator = build_authenticator(cfg)
    info = ConnectionInfo(1, "unix:admin.sock", "unix", allow_anonymous=False)
    assert not (await authenticator.authenticate(None, None, info)).ok
    assert not (await authenticator.authenticate("bob", b"wrong", info)).ok
    bob = await authenticator.authenticate("bob", b"b", info)
    assert bob.ok and bob.is_admin and bob.username == "bob"


def test_admin_api_switch() -> None:
    assert GatewayConfig().admin_api is True
    assert "admin_api: true" in (REPO / "config.yaml").read_text()
    assert parse("admin_api: false").admin_api is False
    assert parse("admin_api: true").admin_api is True
    with pytest.raises(ConfigError) as caught:
        parse("admin_api: 'no'")
    assert caught.value.key_path == "admin_api"
    assert "expected true or false" in str(caught.value)
