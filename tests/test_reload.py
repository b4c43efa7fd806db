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
from gateway.reload import plan_reload

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
