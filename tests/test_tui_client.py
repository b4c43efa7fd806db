"""The TUI's admin client against a real gateway over TCP: logging in, refusals, requests
and their failures."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.auth.passwords import hash_password, set_user
from gateway.config import parse_config
from gateway.tui.client import (
    AdminClient,
    LinkState,
    LinkStatus,
    RequestError,
    tcp_connector,
    unix_connector,
)

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[int]:
    passwords = tmp_path / "passwd"
    set_user(passwords, "admin", hash_password("admin-secret"))
    set_user(passwords, "bob", hash_password("bob-secret"))
    port = free_port()
    config = {
        "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": port, "allow_anonymous": False}],
        "persistence": {"enabled": False},
        "sys_interval": 0,
        "auth": {"password_file": str(passwords), "admin_users": ["admin"]},
        "devices": {"ble": {"enabled": False}, "lan": {"enabled": False}},
    }
    gw = Gateway(parse_config(json.dumps(config), "client-test.yaml"))
    await gw.start()
    try:
        yield port
    finally:
        await gw.stop()


class Recorder:
    def __init__(self) -> None:
        self.states: list[LinkStatus] = []
        self.messages: list[tuple[str, bytes]] = []

    def message(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))

    def status(self, status: LinkStatus) -> None:
        self.states.append(status)

    async def until(self, predicate: Callable[[Recorder], bool], timeout: float = 5.0) -> None:
        for _ in range(int(timeout / 0.02)):
            if predicate(self):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out; states: {self.states}")


def client(port: int, user: str | None, password: str | None, **kw: object) -> AdminClient:
    return AdminClient(
        tcp_connector("127.0.0.1", port),
        username=user,
        password=password,
        backoff_initial=0.05,
        backoff_max=0.1,
        **kw,  # type: ignore[arg-type]
    )


async def test_admin_user_connects_requests_and_gets_live_updates(gateway: int) -> None:
    rec = Recorder()
    admin = client(gateway, "admin", "admin-secret")
    admin.start(rec.message, rec.status)
    try:
        await rec.until(lambda r: admin.status.state is LinkState.CONNECTED)
        sessions = await admin.request("sessions")
        assert isinstance(sessions, list)
        assert admin.client_id in {s["client_id"] for s in sessions}
        # The retained status arrives by itself.
        await rec.until(lambda r: any(t == "gw/bridge/status" for t, _ in r.messages))
    finally:
        await admin.stop()


async def test_gateway_errors_become_request_errors(gateway: int) -> None:
    rec = Recorder()
    admin = client(gateway, "admin", "admin-secret", request_timeout=0.5)
    admin.start(rec.message, rec.status)
    try:
        await rec.until(lambda r: admin.status.state is LinkState.CONNECTED)
        with pytest.raises(RequestError, match="no-such-action"):
            await admin.request("no-such-action")
        with pytest.raises(RequestError, match="device"):  # the gateway's own words
            await admin.request("cancel", {})
    finally:
        await admin.stop()


async def test_a_request_nobody_answers_times_out(gateway: int) -> None:
    rec = Recorder()
    admin = client(gateway, "admin", "admin-secret", prefix="elsewhere", request_timeout=0.3)
    admin.start(rec.message, rec.status)
    try:
        await rec.until(lambda r: admin.status.state is LinkState.CONNECTED)
        with pytest.raises(RequestError, match="no answer"):
            await admin.request("sessions")
    finally:
        await admin.stop()


async def test_non_admin_is_refused_and_says_why(gateway: int) -> None:
    rec = Recorder()
    bob = client(gateway, "bob", "bob-secret")
    bob.start(rec.message, rec.status)
    try:
        await rec.until(lambda r: any(s.state is LinkState.REFUSED for s in r.states))
        refused = next(s for s in rec.states if s.state is LinkState.REFUSED)
        assert "not an admin" in refused.detail
        assert refused.retry_in is not None
        with pytest.raises(RequestError, match="not connected"):
            await bob.request("sessions")
    finally:
        await bob.stop()


async def test_bad_password_is_refused(gateway: int) -> None:
    rec = Recorder()
    admin = client(gateway, "admin", "wrong")
    admin.start(rec.message, rec.status)
    try:
        await rec.until(lambda r: any(s.state is LinkState.REFUSED for s in r.states))
        assert any("bad user name or password" in s.detail for s in rec.states)
    finally:
        await admin.stop()


async def test_nothing_listening_is_unreachable_and_retried() -> None:
    rec = Recorder()
    nobody = client(free_port(), None, None)
    nobody.start(rec.message, rec.status)
    try:
        await rec.until(lambda r: sum(s.state is LinkState.UNREACHABLE for s in r.states) >= 3)
        assert all(s.retry_in for s in rec.states if s.state is LinkState.UNREACHABLE)
    finally:
        await nobody.stop()


async def test_a_missing_socket_says_so(tmp_path: Path) -> None:
    rec = Recorder()
    nobody = AdminClient(unix_connector(str(tmp_path / "none.sock")), backoff_initial=0.05)
    nobody.start(rec.message, rec.status)
    try:
        await rec.until(lambda r: any(s.state is LinkState.UNREACHABLE for s in r.states))
        down = next(s for s in rec.states if s.state is LinkState.UNREACHABLE)
        assert "is the gateway running" in down.detail
    finally:
        await nobody.stop()


async def test_a_socket_we_may_not_use_says_why(tmp_path: Path) -> None:
    async def denied() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise PermissionError(13, "Permission denied")

    rec = Recorder()
    client = AdminClient(denied, backoff_initial=0.05)
    client.start(rec.message, rec.status)
    try:
        await rec.until(lambda r: any(s.state is LinkState.UNREACHABLE for s in r.states))
        down = next(s for s in rec.states if s.state is LinkState.UNREACHABLE)
        assert "add yourself to its group" in down.detail
    finally:
        await client.stop()
