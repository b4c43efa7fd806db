"""Who is an admin, end to end with paho against the real gateway: the built-in guard of
gw/bridge/... keeps everybody else out, an `admin: true` Unix listener and auth.admin_users
let admins in; the admin primitives of the server (kick, delete, cancel) as a client sees them."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ThreadGateway, wait_for
from paho_helpers import V5, V311, Client

from gateway.auth.passwords import hash_password, write_password_file

Factory = Callable[..., tuple[ThreadGateway, int]]


class UnixClient(Client):
    """A paho client on the gateway's Unix socket."""

    def __init__(self, path: Path, client_id: str = "", **kw: Any) -> None:
        self.path = path
        super().__init__(0, client_id, connect=False, **kw)
        self.c.transport = "unix"  # type: ignore[assignment]  # paho 2.2 accepts it
        self.connect()

    def connect(self, timeout: float = 5.0) -> tuple[Any, Any, Any]:
        self.c.connect(str(self.path), keepalive=self.keepalive)
        self.c.loop_start()
        return self.connack.get(timeout=timeout)


@pytest.fixture
def gw(gateway_factory: Factory, tmp_path: Path) -> tuple[ThreadGateway, int, Path]:
    passwords = tmp_path / "users.pw"
    write_password_file(passwords, {"root": hash_password("r"), "bob": hash_password("b")})
    sock = tmp_path / "admin.sock"
    gateway, port = gateway_factory(
        {
            "listeners": [
                {"type": "tcp", "name": "tcp", "host": "127.0.0.1", "port": 0},
                {"type": "unix", "name": "admin", "path": str(sock), "admin": True},
            ],
            "auth": {"password_file": str(passwords), "admin_users": ["root"]},
        }
    )
    port = gateway.gateway.server.port_of("tcp")
    return gateway, port, sock


def codes(rcs: list[Any]) -> list[int]:
    return [rc.value for rc in rcs]


def reason(rc: Any) -> int:
    return int(rc.value) if hasattr(rc, "value") else int(rc)


def test_socket_file_is_0660(gw: tuple[ThreadGateway, int, Path]) -> None:
    _, _, sock = gw
    mode = os.stat(sock).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


@pytest.mark.parametrize("version", [V5, V311])
def test_non_admin_is_kept_out_of_the_bridge(
    gw: tuple[ThreadGateway, int, Path], version: int
) -> None:
    _, port, sock = gw
    admin = UnixClient(sock, "watching-admin", version=V5)
    assert codes(admin.subscribe("gw/bridge/#", qos=1)) == [1]
    admin.drain(0.2)  # what the gateway keeps retained there
    for name, user in (("anonymous", None), ("bob", "bob")):
        c = Client(port, f"user-{name}", version=version, username=user, password="b")
        info = c.publish("gw/bridge/request/kick", b"{}", qos=1)
        assert info.is_published()
        if version == V5:
            assert reason(c.pubacks[info.mid]) == 0x87
        c.publish("gw/bridge/state", b"offline", qos=1)
        seen = [(m.topic, m.payload) for m in admin.drain(0.3)]
        assert ("gw/bridge/request/kick", b"{}") not in seen
        assert ("gw/bridge/state", b"offline") not in seen
        refused = 0x87 if version == V5 else 0x80
        assert codes(c.subscribe("gw/bridge/response/#", qos=1)) == [refused]
        assert codes(c.subscribe("gw/bridge/events", qos=0)) == [refused]
        assert codes(c.subscribe("gw/bridge/state", qos=1)) == [1]
        assert codes(c.subscribe("#", qos=1)) == [1]
        c.drain(0.2)  # retained messages, if any
        admin.publish("gw/bridge/response/kick", b'{"ok": true}', qos=1)
        admin.publish("gw/bridge/state", b"online", qos=1)
        got = [m.topic for m in c.drain(0.3)]
        assert "gw/bridge/state" in got and "gw/bridge/response/kick" not in got
        c.disconnect()
    admin.disconnect()


def test_admins_on_the_unix_listener_and_admin_users(gw: tuple[ThreadGateway, int, Path]) -> None:
    _, port, sock = gw
    on_socket = UnixClient(sock, "tui", version=V5)
    root = Client(port, "root-cli", version=V311, username="root", password="r")
    for c in (on_socket, root):
        assert codes(c.subscribe("gw/bridge/response/#", qos=1)) == [1]
        assert codes(c.subscribe("gw/bridge/request/x", qos=1)) == [1]
    on_socket.publish("gw/bridge/request/x", b'{"from": "tui"}', qos=1)
    root.publish("gw/bridge/request/x", b'{"from": "root"}', qos=1)
    for c in (on_socket, root):
        got = {m.payload for m in c.drain(0.5) if m.topic == "gw/bridge/request/x"}
        assert got == {b'{"from": "tui"}', b'{"from": "root"}'}
    on_socket.disconnect()
    root.disconnect()


def test_kick_delete_and_cancel_through_the_server(gw: tuple[ThreadGateway, int, Path]) -> None:
    gateway, port, _ = gw
    server = gateway.gateway.server
    sleeper = Client(port, "sleeper", version=V5, clean=False, session_expiry=3600)
    assert codes(sleeper.subscribe("jobs", qos=1)) == [1]
    before = gateway.call(server.versions)
    assert gateway.call(lambda: server.kick("sleeper"))
    assert reason(sleeper.disconnects.get(timeout=5)) == 0x98  # Administrative action
    sleeper.c.loop_stop()
    assert wait_for(lambda: not _connected(gateway, "sleeper"))
    after = gateway.call(server.versions)
    assert after[0] > before[0]
    pub = Client(port, "pub", version=V311)
    for n in range(3):
        pub.publish("jobs", f"job {n}".encode(), qos=1)
    entries = gateway.call(lambda: server.queue_entries("sleeper"))
    assert [(m.payload, flying) for _, m, flying in entries] == [
        (b"job 0", False),
        (b"job 1", False),
        (b"job 2", False),
    ]
    second = entries[1][0]
    assert gateway.call(lambda: server.cancel_queued("sleeper", [second])) == [second]
    again = Client(port, "sleeper", version=V5, clean=False, session_expiry=3600)
    assert [m.payload for m in again.drain(0.5)] == [b"job 0", b"job 2"]
    assert gateway.call(lambda: server.delete_session("sleeper"))
    assert reason(again.disconnects.get(timeout=5)) == 0x98
    again.c.loop_stop()
    assert gateway.call(lambda: server.queue_entries("sleeper")) is None
    _, events = gateway.call(lambda: server.events_since(0))
    mine = [e["type"] for e in events if e["client_id"] == "sleeper"]
    assert mine[:2] == ["connect", "kick"] and mine[-1] == "session_deleted"
    snap = gateway.call(server.stats_snapshot)
    assert snap["clients_connected"] >= 1 and "store_bytes" in snap and snap["uptime"] >= 0
    pub.disconnect()


def _connected(gateway: ThreadGateway, client_id: str) -> bool:
    infos = gateway.call(gateway.gateway.server.sessions_info)
    return any(i.client_id == client_id and i.connected for i in infos)
