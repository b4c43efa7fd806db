"""The upstream: section of config.yaml: every key, its default, and a clear message with the
line for everything check-config and start-up refuse."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from abuse_tools import self_signed_cert
from conftest import REPO
from test_startup import gateway_cmd, one_line_error, unprivileged

from gateway.cli import describe_upstream, upstream_warnings
from gateway.config import ConfigError, GatewayConfig, load_config, parse_config
from gateway.reload import plan_reload, upstream_weakened, weakened_access
from gateway.upstream.settings import (
    TopicRule,
    UpstreamConfig,
    UpstreamQueue,
    UpstreamTls,
)

HEAD = "upstream:\n  - name: cloud\n    host: broker.example.org\n"  # lines 1-3
RULES = '    topics:\n      - {pattern: "#", local_prefix: "gw/", remote_prefix: "site1/gw/"}\n'
SECRET = "pa55:w0rd-not-in-logs"


def parse(text: str) -> GatewayConfig:
    return parse_config(textwrap.dedent(text), "up.yaml")


def one(extra: str = "", rules: str = RULES) -> str:
    """One connection; ``extra`` starts at line 4, the rules follow it."""
    return HEAD + extra + rules


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "up.yaml")
    return caught.value


@pytest.fixture(autouse=True)
def hostname(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr("socket.gethostname", lambda: "pi4")
    return "pi4"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- values


def test_no_upstream_by_default() -> None:
    assert GatewayConfig().upstream == ()
    assert parse("{}").upstream == ()
    assert parse("upstream: []").upstream == ()
    assert parse("upstream:").upstream == ()


def test_the_shipped_config_has_an_empty_upstream_list() -> None:
    text = (REPO / "config.yaml").read_text()
    assert re.search(r"^upstream: \[\]$", text, re.MULTILINE)
    assert load_config(REPO / "config.yaml").upstream == ()


def test_defaults() -> None:
    (cfg,) = parse_config(one(), "up.yaml").upstream
    assert cfg == UpstreamConfig(
        name="cloud",
        host="broker.example.org",
        port=1883,
        protocol=5,
        client_id="edge-gateway-pi4-cloud",
        username=None,
        password=None,
        tls=None,
        keepalive=60,
        session_expiry=86_400,
        reconnect_min=1.0,
        reconnect_max=30.0,
        notification_topic="edge-gateway/edge-gateway-pi4-cloud/state",
        topics=(TopicRule("#", "out", 1, "gw/", "site1/gw/"),),
        queue=UpstreamQueue(100_000, 0, "drop-oldest"),
    )
    assert cfg.local_client_id == "edge-gateway-upstream-cloud"


def test_every_key(in_tmp: Path) -> None:
    certfile, keyfile = self_signed_cert(in_tmp)
    Path("secret").write_text(f"{SECRET}\nsecond line is ignored\n")
    cfg = parse(
        f"""
        topic_prefix: home
        upstream:
          - name: site-1_b
            host: 10.0.0.5
            port: 18883
            protocol: 3.1.1
            client_id: gateway-kitchen
            username: site1
            password_file: secret
            tls: {{cafile: {certfile}, certfile: {certfile}, keyfile: {keyfile}, insecure: true}}
            keepalive: 20
            session_expiry: 0
            reconnect_min: 0.5
            reconnect_max: 0.5
            notification_topic: sites/1/gateway
            topics:
              - {{pattern: "+/state", direction: out, qos: 0, local_prefix: "home/",
                 remote_prefix: "site1/"}}
              - {{pattern: "+/set", direction: in, qos: 2, local_prefix: "home/",
                 remote_prefix: "cmd/site1/"}}
              - {{pattern: "x"}}
            queue: {{max_messages: 0, max_bytes: 1048576, overflow: reject-new}}
        """
    ).upstream[0]
    assert cfg == UpstreamConfig(
        name="site-1_b",
        host="10.0.0.5",
        port=18883,
        protocol=4,
        client_id="gateway-kitchen",
        username="site1",
        password=SECRET.encode(),
        password_file=Path("secret"),
        tls=UpstreamTls(cafile=certfile, certfile=certfile, keyfile=keyfile, insecure=True),
        keepalive=20,
        session_expiry=0,
        reconnect_min=0.5,
        reconnect_max=0.5,
        notification_topic="sites/1/gateway",
        topics=(
            TopicRule("+/state", "out", 0, "home/", "site1/"),
            TopicRule("+/set", "in", 2, "home/", "cmd/site1/"),
            TopicRule("x", "out", 1, "", ""),
        ),
        queue=UpstreamQueue(0, 1_048_576, "reject-new"),
    )


def test_several_connections_in_order() -> None:
    cfg = parse(HEAD + RULES + "  - name: backup\n    host: backup.example.org\n" + RULES).upstream
    assert [(u.name, u.client_id) for u in cfg] == [
        ("cloud", "edge-gateway-pi4-cloud"),
        ("backup", "edge-gateway-pi4-backup"),
    ]


@pytest.mark.parametrize(
    ("hostname", "client_id"),
    [
        ("pi4.home.lan", "edge-gateway-pi4-home-lan-cloud"),
        ("Gate way#1", "edge-gateway-Gate-way-1-cloud"),
        ("küche", "edge-gateway-k-che-cloud"),
        ("...", "edge-gateway-host-cloud"),
        ("", "edge-gateway-host-cloud"),
    ],
)
def test_the_default_client_id_keeps_what_every_broker_takes(
    monkeypatch: pytest.MonkeyPatch, hostname: str, client_id: str
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: hostname)
    (cfg,) = parse_config(one(), "up.yaml").upstream
    assert cfg.client_id == client_id
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cfg.client_id)
    assert cfg.notification_topic == f"edge-gateway/{client_id}/state"


def test_the_default_notification_topic_follows_a_set_client_id() -> None:
    (cfg,) = parse_config(one("    client_id: gw-7\n"), "up.yaml").upstream
    assert cfg.notification_topic == "edge-gateway/gw-7/state"


@pytest.mark.parametrize(
    ("value", "protocol"),
    [("5", 5), ('"5"', 5), ("5.0", 5), ("3.1.1", 4), ('"3.1.1"', 4)],
)
def test_protocol(value: str, protocol: int) -> None:
    assert parse_config(one(f"    protocol: {value}\n"), "up.yaml").upstream[0].protocol == protocol


def test_port_defaults_to_8883_with_tls() -> None:
    assert parse_config(one("    tls: {}\n"), "up.yaml").upstream[0].port == 8883
    assert parse_config(one("    tls: null\n"), "up.yaml").upstream[0].port == 1883
    cfg = parse_config(one("    tls: {}\n    port: 443\n"), "up.yaml").upstream[0]
    assert (cfg.port, cfg.tls) == (443, UpstreamTls())


def test_hosts_that_are_fine() -> None:
    for host in ("::1", "127.0.0.1", "mqtt_broker", "broker.example.org.", "localhost"):
        assert parse_config(one().replace("broker.example.org", host), "up.yaml").upstream


# --------------------------------------------------------------------------- refused

# (text, key path, line, words the message must contain)
BAD = [
    ("upstream: {cloud: {}}\n", "upstream", 1, "expected a list, got a mapping"),
    ("upstream:\n  - cloud\n", "upstream[0]", 2, "expected a mapping of keys"),
    ("upstream:\n  - host: h\n" + RULES, "upstream[0].name", 2, "every upstream needs a name"),
    (one().replace("name: cloud", "name: Cloud"), "upstream[0].name", 2, "a-z, 0-9, '_' and '-'"),
    (one().replace("name: cloud", "name: a.b"), "upstream[0].name", 2, "got 'a.b'"),
    (one().replace("name: cloud", "name: " + "a" * 65), "upstream[0].name", 2, "1-64"),
    (one().replace("name: cloud", "name: 7"), "upstream[0].name", 2, "got 7"),
    (one(" " * 4 + "hots: x\n"), "upstream[0].hots", 4, "did you mean 'host'"),
    ("upstream:\n  - name: cloud\n" + RULES, "upstream[0].host", 2, "needs the host name"),
    (one().replace("broker.example.org", '""'), "upstream[0].host", 3, "needs the host name"),
    (
        one().replace("broker.example.org", "mqtts://broker"),
        "upstream[0].host",
        3,
        "without a scheme",
    ),
    (one().replace("broker.example.org", "broker:1883"), "upstream[0].host", 3, "':<port>'"),
    (one().replace("broker.example.org", '"[::1]"'), "upstream[0].host", 3, "without brackets"),
    (one().replace("broker.example.org", "0.0.0.0"), "upstream[0].host", 3, "nobody's address"),
    (one().replace("broker.example.org", "a b"), "upstream[0].host", 3, "host name or IP"),
    (one("    port: 0\n"), "upstream[0].port", 4, "an integer 1-65535, got 0"),
    (one("    port: 65536\n"), "upstream[0].port", 4, "an integer 1-65535"),
    (one("    protocol: 4\n"), "upstream[0].protocol", 4, "expected 5 or 3.1.1, got 4"),
    (one("    protocol: 3.1\n"), "upstream[0].protocol", 4, "MQTT 3.1 is not supported"),
    (one("    protocol: mqttv5\n"), "upstream[0].protocol", 4, "expected 5 or 3.1.1"),
    (one("    protocol: true\n"), "upstream[0].protocol", 4, "got true"),
    (one("    protocol: null\n"), "upstream[0].protocol", 4, "got null"),
    (one("    client_id: ''\n"), "upstream[0].client_id", 4, "non-empty client id"),
    (one('    client_id: "a\\x01"\n'), "upstream[0].client_id", 4, "control character"),
    (one("    client_id: 12\n"), "upstream[0].client_id", 4, "expected a string or null"),
    (one("    client_id: 'gw/#'\n"), "upstream[0].client_id", 4, "set notification_topic"),
    (one("    notification_topic: a/+\n"), "upstream[0].notification_topic", 4, "wildcards"),
    (one("    notification_topic: $SYS/x\n"), "upstream[0].notification_topic", 4, "'$'"),
    (one("    notification_topic: ''\n"), "upstream[0].notification_topic", 4, "empty"),
    (one("    username: ''\n"), "upstream[0].username", 4, "non-empty string or null"),
    (one('    username: "a\\x00b"\n'), "upstream[0].username", 4, "NUL"),
    (one("    password: x\n"), "upstream[0].password", 4, "a password needs a username"),
    (one("    tls: true\n"), "upstream[0].tls", 4, "{} = TLS checked against the system's CAs"),
    (one("    tls: {verify: false}\n"), "upstream[0].tls.verify", 4, "unknown key 'verify'"),
    (one("    tls: {insecure: 1}\n"), "upstream[0].tls.insecure", 4, "true or false"),
    (one("    tls: {cafile: nowhere.pem}\n"), "upstream[0].tls.cafile", 4, "'nowhere.pem'"),
    (one("    keepalive: 0\n"), "upstream[0].keepalive", 4, "would never be noticed"),
    (one("    keepalive: 65536\n"), "upstream[0].keepalive", 4, "an integer 0-65535"),
    (one("    keepalive: 1.5\n"), "upstream[0].keepalive", 4, "got 1.5"),
    (one("    session_expiry: -1\n"), "upstream[0].session_expiry", 4, "0-4294967295"),
    (one("    session_expiry: 4294967296\n"), "upstream[0].session_expiry", 4, "0-4294967295"),
    (one("    reconnect_min: 0\n"), "upstream[0].reconnect_min", 4, "a number > 0"),
    (one("    reconnect_max: 0\n"), "upstream[0].reconnect_max", 4, "a number > 0"),
    (
        one("    reconnect_min: 10\n    reconnect_max: 5\n"),
        "upstream[0].reconnect_max",
        5,
        "at least reconnect_min (10), got 5",
    ),
    (HEAD, "upstream[0].topics", 2, "at least one rule"),
    (HEAD + "    topics: []\n", "upstream[0].topics", 4, "at least one rule"),
    (HEAD + "    topics: '#'\n", "upstream[0].topics", 4, "expected a list"),
    (
        HEAD + "    topics:\n      - '# out 1 gw/ site1/gw/'\n",
        "upstream[0].topics[0]",
        5,
        "expected a mapping such as {pattern: '#', direction: out",
    ),
    (
        HEAD + "    topics:\n      - {direction: out}\n",
        "upstream[0].topics[0].pattern",
        5,
        "every rule needs a pattern",
    ),
    (
        HEAD + "    topics:\n      - {pattern: ''}\n",
        "upstream[0].topics[0].pattern",
        5,
        "expected a topic filter such as '#' or '+/set', got ''",
    ),
    (
        HEAD + "    topics:\n      - {pattern: 'a/#/b'}\n",
        "upstream[0].topics[0].pattern",
        5,
        "'#' must be a whole level and the last one",
    ),
    (
        HEAD + "    topics:\n      - {pattern: 'a+'}\n",
        "upstream[0].topics[0].pattern",
        5,
        "'+' must be a whole level",
    ),
    (
        HEAD + "    topics:\n      - {pattern: 7}\n",
        "upstream[0].topics[0].pattern",
        5,
        "expected a string, got 7",
    ),
    (
        HEAD + "    topics:\n      - {pattern: '#', direction: sideways}\n",
        "upstream[0].topics[0].direction",
        5,
        "one of out, in, both",
    ),
    (
        HEAD + "    topics:\n      - {pattern: '#', qos: 3}\n",
        "upstream[0].topics[0].qos",
        5,
        "an integer 0-2",
    ),
    (
        HEAD + "    topics:\n      - {pattern: '#', local_prefx: gw/}\n",
        "upstream[0].topics[0].local_prefx",
        5,
        "did you mean 'local_prefix'",
    ),
    (
        HEAD + "    topics:\n      - pattern: '#'\n        local_prefix: gw/+/\n",
        "upstream[0].topics[0].local_prefix",
        6,
        "without wildcards",
    ),
    (
        HEAD + "    topics:\n      - pattern: '#'\n        remote_prefix: site1/#\n",
        "upstream[0].topics[0].remote_prefix",
        6,
        "without wildcards",
    ),
    (
        HEAD + "    topics:\n      - pattern: '#'\n        local_prefix: gw\n",
        "upstream[0].topics[0].local_prefix",
        6,
        "ending with '/' (such as 'gw/')",
    ),
    (
        HEAD + "    topics:\n      - pattern: 'x'\n        remote_prefix: \"a\\u0085/\"\n",
        "upstream[0].topics[0].remote_prefix",
        6,
        "U+0085",
    ),
    (
        HEAD + "    topics:\n      - pattern: 'x'\n        remote_prefix: [a]\n",
        "upstream[0].topics[0].remote_prefix",
        6,
        "expected a string",
    ),
    (one("    queue: {max_messages: -1}\n"), "upstream[0].queue.max_messages", 4, ">= 0"),
    (one("    queue: {max_bytes: many}\n"), "upstream[0].queue.max_bytes", 4, ">= 0"),
    (one("    queue: {overflow: drop}\n"), "upstream[0].queue.overflow", 4, "drop-oldest, reject"),
    (one("    queue: {max_message: 5}\n"), "upstream[0].queue.max_message", 4, "did you mean"),
    (one("    queue: 5\n"), "upstream[0].queue", 4, "expected a mapping"),
]


@pytest.mark.parametrize(("text", "key_path", "line", "words"), BAD)
def test_refused_with_key_path_and_line(text: str, key_path: str, line: int, words: str) -> None:
    error = refused(text)
    assert (error.key_path, error.line) == (key_path, line), str(error)
    assert words in error.detail
    assert str(error).startswith(f"up.yaml:{line}: {key_path}: ")


def test_the_first_rule_error_is_named_in_a_later_connection() -> None:
    text = HEAD + RULES + "  - name: backup\n    host: b\n    topics:\n      - {pattern: ''}\n"
    error = refused(text)
    assert (error.key_path, error.line) == ("upstream[1].topics[0].pattern", 9)


# --------------------------------------------------------------------------- passwords


def test_password_inline_needs_quotes_and_is_never_repeated() -> None:
    cfg = parse_config(one(f"    username: u\n    password: '{SECRET}'\n"), "up.yaml")
    assert cfg.upstream[0].password == SECRET.encode()
    assert cfg.upstream[0].password_file is None
    error = refused(one("    username: u\n    password: 918273645\n"))
    assert (error.key_path, error.line) == ("upstream[0].password", 5)
    assert "in quotes" in error.detail
    assert "918273645" not in str(error)
    error = refused(one('    username: u\n    password: "zq\\ud800zq"\n'))
    assert error.key_path == "upstream[0].password" and "well-formed" in error.detail
    assert "zq" not in str(error)


def test_the_password_is_in_no_repr() -> None:
    cfg = parse_config(one(f"    username: u\n    password: '{SECRET}'\n"), "up.yaml")
    assert SECRET not in repr(cfg)
    assert SECRET not in str(cfg.upstream)


def test_password_file_first_line(in_tmp: Path) -> None:
    Path("pw").write_bytes(b"s3cret \xc3\xa4\r\nnext\n")
    cfg = parse_config(one("    username: u\n    password_file: pw\n"), "up.yaml").upstream[0]
    assert cfg.password == "s3cret ä".encode()  # a trailing space is part of the password
    assert cfg.password_file == Path("pw")
    Path("pw").write_bytes(b"no newline")
    cfg = parse_config(one("    username: u\n    password_file: pw\n"), "up.yaml").upstream[0]
    assert cfg.password == b"no newline"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot read 'pw': not found"),
        (b"", "the first line of 'pw' is empty"),
        (b"\nsecret\n", "the first line of 'pw' is empty"),
        (b"x" * 65536 + b"\n", "longer than 65535 bytes"),
    ],
)
def test_password_file_refused(in_tmp: Path, content: bytes | None, words: str) -> None:
    if content is not None:
        Path("pw").write_bytes(content)
    error = refused(one("    username: u\n    password_file: pw\n"))
    assert (error.key_path, error.line) == ("upstream[0].password_file", 5)
    assert words in error.detail


@pytest.mark.parametrize("make", [Path.mkdir, os.mkfifo])
def test_password_file_that_is_no_regular_file(in_tmp: Path, make: object) -> None:
    """A FIFO would block start-up until someone writes a line into it."""
    make(Path("pw"))  # type: ignore[operator]
    error = refused(one("    username: u\n    password_file: pw\n"))
    assert error.key_path == "upstream[0].password_file"
    assert "cannot read 'pw': not a regular file" in error.detail


def test_password_file_unreadable(in_tmp: Path) -> None:
    # As a user would meet it: check-config run by someone the file's mode shuts out (as
    # root, with the capability that reads any file dropped).
    Path("pw").write_text("x\n")
    Path("pw").chmod(0)
    Path("up.yaml").write_text(one("    username: u\n    password_file: pw\n"))
    result = gateway_cmd("check-config", "--config", "up.yaml", cwd=in_tmp, prefix=unprivileged())
    error = one_line_error(result, 2)
    assert "upstream[0].password_file" in error and "permission denied" in error


def test_password_and_password_file_not_both(in_tmp: Path) -> None:
    Path("pw").write_text("x\n")
    error = refused(one("    username: u\n    password: y\n    password_file: pw\n"))
    assert (error.key_path, error.line) == ("upstream[0].password_file", 6)
    assert "not both" in error.detail


def test_password_file_needs_a_username(in_tmp: Path) -> None:
    Path("pw").write_text("x\n")
    error = refused(one("    password_file: pw\n"))
    assert (error.key_path, error.line) == ("upstream[0].password_file", 4)
    assert "needs a username" in error.detail


def test_username_without_password_is_fine() -> None:
    cfg = parse_config(one("    username: u\n"), "up.yaml").upstream[0]
    assert (cfg.username, cfg.password) == ("u", None)


# --------------------------------------------------------------------------- TLS


def test_tls_files_are_loaded(in_tmp: Path) -> None:
    certfile, keyfile = self_signed_cert(in_tmp)
    Path("both.pem").write_bytes(certfile.read_bytes() + keyfile.read_bytes())
    tls = parse_config(one("    tls: {certfile: both.pem}\n"), "up.yaml").upstream[0].tls
    assert tls == UpstreamTls(certfile=Path("both.pem"))
    error = refused(one("    tls: {keyfile: key.pem}\n"))
    assert (error.key_path, error.line) == ("upstream[0].tls.keyfile", 4)
    assert "set certfile too" in error.detail
    error = refused(one("    tls: {certfile: cert.pem}\n"))  # the key is elsewhere
    assert (error.key_path, error.line) == ("upstream[0].tls.certfile", 4)
    assert "cannot load the client certificate and key" in error.detail


def test_tls_file_that_is_no_pem(in_tmp: Path) -> None:
    Path("ca.pem").write_text("not a certificate\n")
    error = refused(one("    tls: {cafile: ca.pem}\n"))
    assert (error.key_path, error.line) == ("upstream[0].tls.cafile", 4)
    assert "cannot load CA certificates" in error.detail


def test_an_encrypted_key_is_refused_without_asking_for_its_pass_phrase(in_tmp: Path) -> None:
    """OpenSSL would prompt on the terminal: a service would hang at start-up."""
    from cryptography.hazmat.primitives import serialization

    certfile, keyfile = self_signed_cert(in_tmp)
    key = serialization.load_pem_private_key(keyfile.read_bytes(), None)
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"phrase"),
        )
    )
    text = one(f"    tls: {{certfile: {certfile}, keyfile: {keyfile}}}\n")
    result = subprocess.run(
        [sys.executable, "-c", f"from gateway.config import parse_config; parse_config({text!r})"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert result.returncode == 1
    assert "encrypted private keys are not supported" in result.stderr


# --------------------------------------------------------------------------- whole-section checks


def test_an_in_rule_into_the_admin_api_is_refused_with_its_line() -> None:
    rules = "    topics:\n" + RULES.splitlines()[1] + "\n"
    rules += "      - {pattern: 'request/+', direction: in, local_prefix: 'gw/bridge/'}\n"
    error = refused(HEAD + rules)
    assert (error.key_path, error.line) == ("upstream[0].topics[1]", 6)
    assert "the upstream may never publish there" in error.detail


def test_the_private_area_follows_topic_prefix() -> None:
    rules = "    topics:\n      - {pattern: '#', direction: in, local_prefix: 'gw/bridge/'}\n"
    assert parse_config("topic_prefix: home\n" + HEAD + rules, "up.yaml").upstream
    error = refused("topic_prefix: home\n" + HEAD + rules.replace("gw/bridge/", "home/bridge/"))
    assert error.key_path == "upstream[0].topics[0]"


ISSUE_RULES = (
    "    topics:\n"
    '      - {pattern: "#", direction: out, qos: 1, local_prefix: "gw/",'
    ' remote_prefix: "site1/gw/"}\n'
    '      - {pattern: "+/set", direction: in, qos: 1, local_prefix: "gw/",'
    ' remote_prefix: "site1/gw/"}\n'
)


def test_the_issues_rules_work_with_5_and_loop_with_3_1_1() -> None:
    assert parse_config(one("    protocol: 5\n", ISSUE_RULES), "up.yaml").upstream
    error = refused(one("    protocol: 3.1.1\n", ISSUE_RULES))
    assert (error.key_path, error.line) == ("upstream[0].topics[1]", 7)
    assert "with protocol 3.1.1 this rule and topics[0] would loop" in error.detail
    in_rule = ISSUE_RULES.splitlines()[2]
    fixed = ISSUE_RULES.replace(in_rule, in_rule.replace("site1/gw/", "cmd/site1/"))
    assert parse_config(one("    protocol: 3.1.1\n", fixed), "up.yaml").upstream


def test_both_with_3_1_1_is_refused_with_its_line() -> None:
    rules = "    topics:\n      - pattern: '#'\n        direction: both\n"
    error = refused(one("    protocol: 3.1.1\n", rules))
    assert (error.key_path, error.line) == ("upstream[0].topics[0].direction", 7)
    assert parse_config(one("", rules), "up.yaml").upstream[0].topics[0].direction == "both"


def test_names_are_unique() -> None:
    error = refused(HEAD + RULES + "  - name: cloud\n    host: other\n" + RULES)
    assert (error.key_path, error.line) == ("upstream[1].name", 6)
    assert "already the name of upstream[0]" in error.detail


def test_one_broker_one_client_id() -> None:
    second = "  - name: b\n    host: broker.example.org\n    client_id: edge-gateway-pi4-cloud\n"
    error = refused(HEAD + RULES + second + RULES)
    assert (error.key_path, error.line) == ("upstream[1].client_id", 8)


def test_two_connections_to_one_broker_that_would_loop() -> None:
    second = "  - name: b\n    host: broker.example.org\n    topics:\n"
    second += (
        "      - {pattern: '+/set', direction: in, local_prefix: gw/, remote_prefix: site1/gw/}\n"
    )
    error = refused(HEAD + RULES + second)
    assert (error.key_path, error.line) == ("upstream[1].topics", 8)
    assert "go round between them" in error.detail


def test_the_example_in_config_yaml_is_valid(in_tmp: Path) -> None:
    text = (REPO / "config.yaml").read_text()
    section = text[text.index("# Upstream bridge") : text.index("upstream: []")]
    example = section[section.index("#   upstream:") :]
    lines = [line.removeprefix("#  ") for line in example.splitlines() if line.startswith("#")]
    Path("upstream.secret").write_text("s\n")
    yaml_text = "\n".join(lines).replace("/etc/edge-gateway/upstream.secret", "upstream.secret")
    (cfg,) = parse_config(yaml_text, "example").upstream
    assert cfg.tls == UpstreamTls() and cfg.port == 8883
    assert [rule.direction for rule in cfg.topics] == ["out", "in"]


def test_every_key_is_documented_in_config_yaml() -> None:
    text = (REPO / "config.yaml").read_text()
    section = text[text.index("# Upstream bridge") : text.index("upstream: []")]
    keys = [field for field in UpstreamConfig.__dataclass_fields__ if field != "topics"]
    keys += ["topics", "pattern", "direction", "qos", "local_prefix", "remote_prefix"]
    keys += ["cafile", "certfile", "keyfile", "insecure", "max_messages", "max_bytes", "overflow"]
    for key in keys:
        assert re.search(rf"^#\s+{key}\b", section, re.MULTILINE), key


# --------------------------------------------------------------------------- reload


def test_an_upstream_change_needs_a_restart_and_names_no_password() -> None:
    old = parse_config(one(f"    username: u\n    password: '{SECRET}'\n"), "up.yaml")
    new = parse_config(one("    username: u\n    password: 'other-secret'\n"), "up.yaml")
    plan = plan_reload(old, new)
    assert plan.restart_needed == ("upstream",)
    assert plan.config.upstream == old.upstream
    said = " ".join((*plan.applied, *plan.restart_needed, *plan.weakened, repr(plan)))
    assert SECRET not in said and "other-secret" not in said
    assert plan_reload(old, old).restart_needed == ()


def test_reload_names_what_widens_an_upstreams_reach() -> None:
    base = parse_config(one("    tls: {}\n"), "up.yaml")
    (cfg,) = base.upstream
    in_rule = TopicRule("+/set", "in", 1, "gw/", "cmd/")
    more = replace(cfg, topics=(*cfg.topics, in_rule))
    assert list(upstream_weakened([cfg], [more])) == [
        "upstream 'cloud': the broker broker.example.org:8883 may publish on local 'gw/+/set' "
        "(at the next restart)"
    ]
    assert list(upstream_weakened([more], [more])) == []
    moved = replace(more, host="elsewhere")  # another broker: all of its reach is new
    assert len(list(upstream_weakened([more], [moved]))) == 1
    plain = replace(cfg, tls=None)
    assert "no longer TLS" in " ".join(upstream_weakened([cfg], [plain]))
    insecure = replace(cfg, tls=UpstreamTls(insecure=True))
    assert "tls.insecure" in " ".join(upstream_weakened([cfg], [insecure]))
    assert list(upstream_weakened([cfg], [cfg])) == []
    added = weakened_access(GatewayConfig(), replace(base, upstream=(more,)))
    assert added == (
        "upstream 'cloud': the broker broker.example.org:8883 may publish on "
        "local 'gw/+/set' (at the next restart)",
    )


# --------------------------------------------------------------------------- check-config


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=path.parent,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=60,
    )


def test_check_config_lists_each_upstream(tmp_path: Path) -> None:
    secret = tmp_path / "up.secret"
    secret.write_text(f"{SECRET}\n")
    secret.chmod(0o644)
    config = tmp_path / "gw.yaml"
    config.write_text(
        "persistence: {enabled: false}\n"
        + one(f"    username: site1\n    password_file: {secret}\n", ISSUE_RULES)
        + "  - name: lab\n    host: 127.0.0.1\n    protocol: 3.1.1\n"
        + "    tls: {insecure: true}\n    username: u\n"
        + f"    password: '{SECRET}'\n"
        + "    queue: {max_messages: 0, max_bytes: 1000, overflow: reject-new}\n"
        + RULES
    )
    result = check_config(config)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    cloud = next(i for i, line in enumerate(lines) if line.startswith("upstream cloud:"))
    assert lines[cloud].startswith(
        "upstream cloud: broker.example.org:1883, MQTT 5, no TLS, "
        f"user 'site1' with the password in {secret}, client id 'edge-gateway-"
    )
    assert lines[cloud].endswith("-cloud', 2 topic rules, queue 100000 messages, drop-oldest")
    assert lines[cloud + 1] == (
        "  WARNING: no TLS: the password goes to broker.example.org in clear text (set tls: {})"
    )
    assert lines[cloud + 2] == f"  warning: {secret} is open to its group or others (chmod 600 it)"
    lab = lines[cloud + 3]
    assert lab.startswith(
        "upstream lab: 127.0.0.1:8883, MQTT 3.1.1, TLS UNCHECKED (insecure), "
        "user 'u' with a password, client id "
    )
    assert lab.endswith("1 topic rule, queue unlimited messages, 1000 bytes, reject-new")
    assert lines[cloud + 4].startswith("  WARNING: tls.insecure: the broker's certificate")
    assert SECRET not in result.stdout + result.stderr


def test_the_check_config_line_says_how_the_broker_is_checked() -> None:
    cfg = UpstreamConfig(
        "c", "::1", 8883, client_id="c", tls=UpstreamTls(Path("ca.pem"), Path("me.pem"))
    )
    assert describe_upstream(cfg) == (
        "c: [::1]:8883, MQTT 5, TLS (CA ca.pem, client certificate), anonymous, client id "
        "'c', 0 topic rules, queue 100000 messages, drop-oldest"
    )
    assert upstream_warnings(cfg) == []
    assert "TLS (system CAs)" in describe_upstream(replace(cfg, tls=UpstreamTls()))
    # A password in clear text to this machine itself crosses no network.
    assert upstream_warnings(replace(cfg, tls=None, username="u", password=b"p")) == []


def test_check_config_says_none_without_upstreams(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("persistence: {enabled: false}\n")
    result = check_config(config)
    assert result.returncode == 0
    assert "upstream: none" in result.stdout.splitlines()


def test_check_config_refuses_a_bad_upstream(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(one("    protocol: 3.1.1\n", ISSUE_RULES))
    result = check_config(config)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"edge-gateway: {config}:7: upstream[0].topics[1]: with protocol 3.1.1 this rule and "
        "topics[0] would loop"
    )
    assert "Traceback" not in result.stderr
