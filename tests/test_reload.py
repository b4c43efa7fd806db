"""Configuration reload: SIGHUP (systemctl reload) re-reads config.yaml; connections stay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, free_port
from notify_helpers import NotifySocket, abstract_notify_socket
from paho_helpers import V5, Client

from gateway.auth.passwords import hash_password, set_user
from gateway.config import AclConfig, AuthConfig, GatewayConfig, LimitsConfig, parse_config
from gateway.reload import plan_reload, weakened_access

DENY_SECRET = {
    "user": "alice",
    "topic": "secret/#",
    "actions": ["read", "subscribe"],
    "allow": False,
}
DENY_SECRET_READ = {**DENY_SECRET, "actions": ["read"]}


class ReloadableGateway:
    """`python -m gateway run` as systemd runs it: NOTIFY_SOCKET set, reloaded by SIGHUP."""

    def __init__(self, directory: Path, notify: NotifySocket) -> None:
        self.dir = directory
        self.notify = notify
        self.port = free_port()
        self.config_path = directory / "config.yaml"
        self.passwords = directory / "passwd"
        self.log_path = directory / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "listeners": [{"type": "tcp", "name": "tcp", "host": "127.0.0.1", "port": self.port}],
            "persistence": {"path": str(self.dir / "gw.db")},
            "sys_interval": 0,
            "auth": {"password_file": str(self.passwords), "acl": {"rules": rules}},
        }
        cfg.update(extra)
        return cfg

    def write(self, cfg: dict[str, Any] | str) -> None:
        text = cfg if isinstance(cfg, str) else yaml.safe_dump(cfg)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), NOTIFY_SOCKET=self.notify.address)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
            )
        self.notify.wait_for(lambda m: "READY" in m)

    def reload(self) -> dict[str, str]:
        """SIGHUP, then the READY=1 that ends the reload; its STATUS says how it went."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGHUP)
        self.notify.wait_for(lambda m: m.get("RELOADING") == "1")
        return self.notify.wait_for(lambda m: "READY" in m)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[ReloadableGateway]:
    notify = abstract_notify_socket()
    gateway = ReloadableGateway(tmp_path, notify)
    set_user(gateway.passwords, "alice", hash_password("alice-pw"))
    yield gateway
    gateway.stop()
    notify.close()


def _still_connected(client: Client) -> bool:
    return client.c.is_connected() and client.disconnects.empty()


def _received_topics(client: Client) -> list[str]:
    return sorted(m.topic for m in client.drain(0.5))


def test_sighup_changes_acl_and_users_without_dropping_connections(
    gw: ReloadableGateway,
) -> None:
    gw.write(gw.config(rules=[]))
    gw.start()
    alice = Client(gw.port, "alice-1", version=V5, username="alice", password="alice-pw")
    pub = Client(gw.port, "publisher")
    try:
        assert [rc.value for rc in alice.subscribe("secret/#", qos=1)] == [1]
        assert [rc.value for rc in alice.subscribe("public/#", qos=1)] == [1]
        pub.publish("secret/1", b"before", qos=1)
        assert alice.get().topic == "secret/1"

        # The reload: alice may no longer read or subscribe to secret/#, bob is a new user;
        # a new listener port and store path need a restart (reported, not applied).
        set_user(gw.passwords, "bob", hash_password("bob-pw"))
        changed = gw.config(rules=[DENY_SECRET])
        changed["persistence"] = {"path": str(gw.dir / "elsewhere.db")}
        changed["limits"] = {"max_connections": 50}
        gw.write(changed)
        ready = gw.reload()
        assert ready["STATUS"] == "serving 2 clients"

        assert _still_connected(alice)
        pub.publish("secret/2", b"after", qos=1)
        pub.publish("public/2", b"after", qos=1)
        assert _received_topics(alice) == ["public/2"]  # the old subscription, now filtered
        refused = alice.subscribe("secret/new", qos=1)
        assert [rc.value for rc in refused] == [0x87]
        assert _still_connected(alice)

        bob = Client(gw.port, "bob-1", username="bob", password="bob-pw")
        bob.disconnect()

        log = gw.log()
        assert "applied: auth.acl: 0 -> 1 rules" in log
        assert "applied: limits.max_connections: 0 -> 50" in log
        assert "persistence changed: needs a restart" in log
        assert not (gw.dir / "elsewhere.db").exists()
    finally:
        alice.disconnect()
        pub.disconnect()
    assert gw.stop() == 0


def test_bad_config_on_sighup_keeps_the_old_one(gw: ReloadableGateway) -> None:
    gw.write(gw.config(rules=[DENY_SECRET_READ]))
    gw.start()
    alice = Client(gw.port, "alice-2", version=V5, username="alice", password="alice-pw")
    pub = Client(gw.port, "publisher")
    try:
        assert [rc.value for rc in alice.subscribe("public/#", qos=1)] == [1]
        assert [rc.value for rc in alice.subscribe("secret/#", qos=1)] == [1]

        gw.write(yaml.safe_dump(gw.config(rules=[])) + "limits:\n  receive_maximum: lots\n")
        ready = gw.reload()
        assert ready["STATUS"].startswith("reload failed, previous configuration in force")
        assert "limits.receive_maximum: expected an integer" in ready["STATUS"]
        log = gw.log()
        assert f"{gw.config_path}:" in log and "limits.receive_maximum" in log
        assert "the previous configuration stays in force" in log

        # A password file the gateway cannot read: refused as well, old users stay.
        gw.write(gw.config(rules=[]))
        good_passwords = gw.passwords.read_text()
        gw.passwords.write_text("alice has no hash\n")
        ready = gw.reload()
        assert "auth.password_file" in ready["STATUS"]

        # Still the first configuration: the deny rule holds, alice is connected.
        assert _still_connected(alice)
        pub.publish("secret/x", b"no", qos=1)
        pub.publish("public/x", b"yes", qos=1)
        assert _received_topics(alice) == ["public/x"]
        again = Client(gw.port, "alice-3", username="alice", password="alice-pw")
        again.disconnect()

        # Fixed: the next reload applies (secret/# readable again).
        gw.passwords.write_text(good_passwords)
        assert gw.reload()["STATUS"] == "serving 2 clients"
        pub.publish("secret/y", b"now", qos=1)
        assert _received_topics(alice) == ["secret/y"]
        assert _still_connected(alice)
    finally:
        alice.disconnect()
        pub.disconnect()
    assert gw.stop() == 0


# --- what a reload may change (pure) ------------------------------------------------------------


def test_plan_keeps_what_needs_a_restart() -> None:
    old = parse_config("topic_prefix: gw\n")
    new = parse_config(
        "topic_prefix: home\n"
        "listeners: [{type: tcp, host: 127.0.0.1, port: 1884}]\n"
        "limits: {connect_timeout: 3, max_keepalive: 60}\n"
        "auth: {acl: {default: deny}}\n"
        "logging: {level: debug}\n"
    )
    plan = plan_reload(old, new)
    assert plan.restart_needed == ("topic_prefix", "listeners", "limits.max_keepalive")
    assert plan.config.topic_prefix == "gw"
    assert plan.config.listeners == old.listeners
    assert plan.config.limits == LimitsConfig(connect_timeout=3)
    assert plan.config.auth == AuthConfig(acl=AclConfig(default="deny"))
    assert plan.config.logging.level == "debug"
    assert plan.applied == (
        "limits.connect_timeout: 10.0 -> 3.0",
        "auth.acl: 0 -> 0 rules, default allow -> deny",
        "logging.level: info -> debug",
    )


def test_plan_without_changes() -> None:
    cfg = GatewayConfig()
    plan = plan_reload(cfg, cfg)
    assert plan.config == cfg
    assert plan.applied == () and plan.restart_needed == ()


def test_reload_without_a_file_is_refused() -> None:
    import asyncio

    from gateway.app import Gateway
    from gateway.config import ConfigError

    gateway = Gateway(parse_config("persistence: {enabled: false}\n"))
    with pytest.raises(ConfigError, match="no config file"):
        asyncio.run(gateway.reload())


def test_switching_the_admin_api_needs_a_restart() -> None:
    plan = plan_reload(parse_config("admin_api: true\n"), parse_config("admin_api: false\n"))
    assert plan.restart_needed == ("admin_api",)
    assert plan.config.admin_api is True


# --- fail closed: a file that does not load changes nothing -------------------------------------


def _admin_reload(port: int, user: str, password: str) -> dict[str, Any]:
    """The admin API's reload, as an MQTT 5 client asks for it."""
    import json

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    admin = Client(port, "admin-reload", version=V5, username=user, password=password)
    try:
        assert [rc.value for rc in admin.subscribe("test/replies", qos=1)] == [1]
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "test/replies"
        props.CorrelationData = b"reload-1"
        admin.c.publish("gw/bridge/request/reload", b"{}", 1, properties=props).wait_for_publish(5)
        answer: dict[str, Any] = json.loads(admin.get(10).payload)
        return answer
    finally:
        admin.disconnect()


BAD_FILES = [
    # (what a half-written or mistyped file looks like, what the ERROR line names)
    ("", "config.yaml: no settings in the file"),
    ("# ===\n# edge-gateway configuration\n# ===\n", "config.yaml: no settings in the file"),
    ("auth:\n  acl:\n\tdefault: allow\n", "config.yaml:3: YAML syntax error"),
    ("auht: {}\n", "config.yaml:1: auht: unknown key 'auht' (did you mean 'auth'?)"),
    ("auth: {acl: {default: allwo}}\n", "config.yaml:1: auth.acl.default: expected one of"),
]


def test_a_file_that_does_not_load_is_refused_and_the_old_access_stays(
    gw: ReloadableGateway,
) -> None:
    """SIGHUP (and the admin API's reload) with an empty, truncated, invalid or mistyped file:
    refused at ERROR with the file, line and key; passwords and the deny-by-default ACL stay.
    (An empty file used to be applied: no password file, ACL default allow.)"""
    set_user(gw.passwords, "bob", hash_password("bob-pw"))
    allow_bob_public = {"user": "bob", "topic": "public/#", "allow": True}
    cfg = gw.config(rules=[allow_bob_public])
    cfg["listeners"][0]["allow_anonymous"] = False
    cfg["auth"]["acl"]["default"] = "deny"
    cfg["auth"]["admin_users"] = ["alice"]
    gw.write(cfg)
    gw.start()
    for text, named in BAD_FILES:
        gw.write(text)
        ready = gw.reload()
        assert ready["STATUS"].startswith("reload failed, previous configuration in force")
        errors = [line for line in gw.log().splitlines() if " ERROR " in line]
        assert errors and named in errors[-1] and str(gw.config_path) in errors[-1]
        assert "reload failed, the previous configuration stays in force" in errors[-1]
    assert "default deny -> allow" not in gw.log()

    gw.write("")
    answer = _admin_reload(gw.port, "alice", "alice-pw")
    assert answer["ok"] is False and "no settings in the file" in answer["error"]

    # Passwords still required and checked, the ACL still denies what no rule allows.
    anonymous = Client(gw.port, "anon", connect=False)
    assert anonymous.connect()[1].value == 0x87  # 3.1.1 return code 5, not authorized
    anonymous.c.loop_stop()
    wrong = Client(gw.port, "bob-wrong", username="bob", password="nope", connect=False)
    assert wrong.connect()[1].value == 0x86  # 3.1.1 return code 4, bad user name or password
    wrong.c.loop_stop()
    bob = Client(gw.port, "bob-1", version=V5, username="bob", password="bob-pw")
    try:
        assert [rc.value for rc in bob.subscribe("public/#", qos=1)] == [1]
        assert [rc.value for rc in bob.subscribe("secret/#", qos=1)] == [0x87]
    finally:
        bob.disconnect()
    assert gw.stop() == 0


# --- a valid reload that weakens access: applied, and said at WARNING ---------------------------


def test_weakened_acl() -> None:
    deny = "{user: alice, topic: 'secret/#', actions: [read], allow: false}"
    old = parse_config(f"auth: {{acl: {{default: deny, rules: [{deny}, {{topic: 'a/#'}}]}}}}\n")
    new = parse_config("auth: {acl: {default: allow, rules: [{topic: 'a/#'}]}}\n")
    assert weakened_access(old, new) == (
        "auth.acl.default deny -> allow: every topic no rule names is open to every client",
        "auth.acl rule removed: deny user 'alice' read 'secret/#'",
    )
    assert plan_reload(old, new).weakened == weakened_access(old, new)


def test_weakened_auth(tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    set_user(passwords, "alice", hash_password("a"))
    set_user(passwords, "bob", hash_password("b"))
    old = parse_config(f"auth: {{password_file: {passwords}, admin_users: [alice]}}\n")
    more_admins = parse_config(f"auth: {{password_file: {passwords}, admin_users: [bob, alice]}}\n")
    assert weakened_access(old, more_admins) == (
        "auth.admin_users added: bob (may use the admin API and are not bound by the ACL)",
    )
    # A half-saved file that lost its auth: section (the listeners are loopback ones, which
    # may allow anonymous clients, so the file is valid).
    lost = parse_config("topic_prefix: gw\n")
    assert weakened_access(old, lost) == (
        f"auth.password_file removed (was {passwords}): user names are no longer checked, "
        "every client is anonymous and rules for named users no longer apply",
    )


def test_weakened_listeners_are_reported_although_they_wait_for_a_restart(tmp_path: Path) -> None:
    cert, key, ca = (tmp_path / name for name in ("c.pem", "k.pem", "ca.pem"))
    _self_signed(cert, key)
    ca.write_bytes(cert.read_bytes())
    tls = (
        f"{{type: tls, name: lan, host: 127.0.0.1, port: 8883, certfile: {cert}, keyfile: {key}, "
        f"cafile: {ca}, require_client_cert: true, allow_anonymous: false}}"
    )
    local = "{type: tcp, name: local, host: 127.0.0.1, port: 1883, allow_anonymous: false}"
    passwords = tmp_path / "passwd"
    set_user(passwords, "alice", hash_password("a"))
    auth = f"auth: {{password_file: {passwords}}}\n"
    old = parse_config(f"listeners: [{tls}, {local}]\n{auth}")
    opened_up = parse_config(
        f"listeners: [{tls.replace('require_client_cert: true', 'require_client_cert: false')}, "
        f"{local.replace('false', 'true')}, {{type: unix, path: x.sock, admin: true}}]\n{auth}"
    )
    assert weakened_access(old, opened_up) == (
        "listeners[0] (lan): client certificates no longer required (at the next restart)",
        "listeners[1] (local): anonymous clients allowed (at the next restart)",
        "listeners[2] (unix:x.sock) added with anonymous clients allowed (at the next restart)",
        "listeners[2] (unix:x.sock) added: every client of it is an admin (at the next restart)",
    )


def test_stricter_or_equal_access_is_not_called_weaker(tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    set_user(passwords, "alice", hash_password("a"))
    old = parse_config(f"auth: {{password_file: {passwords}, admin_users: [alice]}}\n")
    stricter = parse_config(
        f"auth: {{password_file: {passwords}, acl: {{default: deny, rules: [{{topic: 'a/#'}}]}}}}\n"
        "listeners: [{type: tcp, host: 127.0.0.1, port: 1883, allow_anonymous: false}]\n"
    )
    assert weakened_access(old, stricter) == ()
    assert weakened_access(old, old) == ()


async def test_a_reload_that_lost_its_auth_section_is_logged_at_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The half-saved file loads (loopback listeners may be anonymous), so it is applied;
    the log says at WARNING what it opened up."""
    import logging

    from gateway.app import Gateway
    from gateway.config import load_config

    passwords = tmp_path / "passwd"
    set_user(passwords, "alice", hash_password("a"))
    path = tmp_path / "config.yaml"
    base = {
        "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": free_port()}],
        "persistence": {"enabled": False},
        "admin_api": False,
        "devices": {"ble": {"enabled": False}, "lan": {"enabled": False}},
    }
    deny = {"user": "alice", "topic": "secret/#", "allow": False}
    auth = {"password_file": str(passwords), "acl": {"default": "deny", "rules": [deny]}}
    path.write_text(yaml.safe_dump({**base, "auth": auth}))
    gateway = Gateway(load_config(path), config_path=path)
    await gateway.start()
    try:
        path.write_text(yaml.safe_dump(base))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="gateway"):
            await gateway.reload()
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.name == "gateway" and r.levelno == logging.WARNING
        ]
        assert warnings == [
            "  access weakened: auth.acl.default deny -> allow: every topic no rule names is "
            "open to every client",
            "  access weakened: auth.acl rule removed: deny user 'alice' "
            "read,subscribe,write 'secret/#'",
            f"  access weakened: auth.password_file removed (was {passwords}): user names are "
            "no longer checked, every client is anonymous and rules for named users no longer "
            "apply",
        ]
        assert gateway.config.auth.password_file is None  # applied: it is a valid file
    finally:
        await gateway.stop()


def _self_signed(cert: Path, key: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=localhost", "-days", "1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
