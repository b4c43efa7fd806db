"""The admin API against a running gateway, with real MQTT clients (paho, v5 and v3.1.1).

The gateway (app.Gateway) runs in the test's event loop with two declared Shelly plugs: `plug`,
a fake Shelly on loopback that carries out commands, and `sleeper`, whose address answers
nothing, so that commands sent to it wait in its broker session. Blocking paho calls run in
worker threads so that the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import queue
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from conftest import free_port
from lan_fakes import FakeShelly, shelly_plus_1pm
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho_helpers import V5, V311, Client

from devices.lan import shelly
from gateway.app import Gateway
from gateway.auth.passwords import hash_password, write_password_file
from gateway.config import load_config

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning")]

USERS = {"root": hash_password("rootpw"), "bob": hash_password("bobpw")}


class Admin:
    """A paho client that makes admin requests and waits for their responses."""

    _ids = itertools.count(1)

    def __init__(self, port: int, version: int = V5, user: str = "root", pw: str = "rootpw"):
        self.version = version
        self.client = Client(
            port, f"admin-{next(self._ids)}", version=version, username=user, password=pw
        )
        self.reply_to = f"test/replies/{self.client.c._client_id.decode()}"
        if version == V5:
            self.client.subscribe(self.reply_to, 1)
        else:
            self.client.subscribe("gw/bridge/response/+", 1)
        self.other: list[paho.MQTTMessage] = []

    def request(self, action: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        n = next(self._ids)
        body = dict(body or {})
        if self.version == V5:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = self.reply_to
            props.CorrelationData = f"corr-{n}".encode()
            info = self.client.c.publish(
                f"gw/bridge/request/{action}", json.dumps(body), 1, properties=props
            )
        else:
            body.setdefault("id", n)  # cancel's "id" is the command's: echoed all the same
            info = self.client.c.publish(f"gw/bridge/request/{action}", json.dumps(body), 1)
        info.wait_for_publish(5)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no response to {action}")
            try:
                m = self.client.messages.get(timeout=left)
            except queue.Empty:
                continue
            if self.version == V5:
                if (
                    m.topic == self.reply_to
                    and m.properties.CorrelationData == f"corr-{n}".encode()
                ):
                    return json.loads(m.payload)
            else:
                answer = json.loads(m.payload)
                if m.topic == f"gw/bridge/response/{action}" and answer.get("id") == body["id"]:
                    return answer
            self.other.append(m)

    async def call(self, action: str, body: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self.request, action, body)

    async def ok(self, action: str, body: dict[str, Any] | None = None) -> Any:
        answer = await self.call(action, body)
        assert answer["ok"] is True, answer
        return answer["data"]

    def close(self) -> None:
        self.client.disconnect()


class Watcher:
    """Everything published on some topics, in order (a paho client, admin or not)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.all: list[tuple[str, bytes]] = []

    @classmethod
    async def start(
        cls, port: int, *filters: str, user: str = "root", pw: str = "rootpw", version: int = V311
    ) -> Watcher:
        client = await asyncio.to_thread(
            Client, port, "", version=version, username=user, password=pw
        )
        for topic_filter in filters:
            codes = await asyncio.to_thread(client.subscribe, topic_filter, 1)
            assert all(int(getattr(c, "value", c)) < 0x80 for c in codes), codes
        return cls(client)

    def drain(self) -> None:
        while True:
            try:
                m = self.client.messages.get_nowait()
            except queue.Empty:
                return
            self.all.append((m.topic, bytes(m.payload)))

    def on(self, topic: str) -> list[Any]:
        self.drain()
        return [json.loads(p) if p else None for t, p in self.all if t == topic]

    async def until(self, predicate: Callable[[Watcher], bool], timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            self.drain()
            if predicate(self):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not met; seen: {self.all[-20:]}")
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()


async def until(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.02)


class Env:
    def __init__(self, tmp_path: Path, fake: FakeShelly, **extra: Any) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.fake = fake
        self.gateway: Gateway | None = None
        self.clients: list[Admin | Watcher | Client] = []
        pwfile = tmp_path / "users.pw"
        write_password_file(pwfile, USERS)
        config = {
            "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": self.port}],
            "persistence": {"path": str(tmp_path / "gw.db")},
            "sys_interval": 0,
            "auth": {"password_file": str(pwfile), "admin_users": ["root"]},
            "devices": {
                "ble": {"enabled": False},
                "lan": {"poll_interval": 0.2, "timeout": 0.5},
                "known": {
                    "plug": {"kind": "shelly", "host": "127.0.0.1", "port": fake.port},
                    # Nothing listens there: its commands wait in the broker.
                    "sleeper": {"kind": "shelly", "host": "127.0.0.1", "port": free_port()},
                },
            },
        }
        config.update(extra)
        self.config_path = tmp_path / "config.yaml"
        self.config_path.write_text(json.dumps(config))

    async def start(self) -> Gateway:
        self.gateway = Gateway(load_config(self.config_path), config_path=self.config_path)
        await self.gateway.start()
        return self.gateway

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
            self.gateway = None

    async def admin(self, version: int = V5, user: str = "root", pw: str = "rootpw") -> Admin:
        admin = await asyncio.to_thread(Admin, self.port, version, user, pw)
        self.clients.append(admin)
        return admin

    async def watch(self, *filters: str, **kwargs: Any) -> Watcher:
        w = await Watcher.start(self.port, *filters, **kwargs)
        self.clients.append(w)
        return w


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    fake = shelly_plus_1pm()
    async with fake:
        e = Env(tmp_path, fake)
        await e.start()
        try:
            yield e
        finally:
            for client in e.clients:
                await asyncio.to_thread(
                    client.close if not isinstance(client, Client) else client.disconnect
                )
            await e.stop()


def by(items: list[dict[str, Any]], key: str, value: Any) -> dict[str, Any] | None:
    return next((i for i in items if i[key] == value), None)


# --- reading --------------------------------------------------------------------------------------


async def test_sessions_and_devices(env: Env) -> None:
    admin = await env.admin(V5)
    listing = await admin.ok("devices")
    assert [d["id"] for d in listing] == ["plug", "sleeper"]
    plug = by(listing, "id", "plug")
    assert plug is not None
    assert plug["kind"] == "shelly" and plug["name"] == "plug"
    assert plug["policy"]["session"] == "persistent" and plug["policy"]["queue_depth"] == 20
    assert plug["address"] == "127.0.0.1" and plug["rssi"] is None
    assert plug["pending"] == 0 and plug["wake_interval"] is None
    assert set(plug) == {
        "id",
        "kind",
        "name",
        "policy",
        "link",
        "last_seen",
        "address",
        "rssi",
        "wake_interval",
        "wake_observed",
        "policy_from",
        "pending",
        "schema",
    }
    assert plug["schema"] == shelly.COMMAND_SCHEMA.data
    assert plug["policy_from"]["session"] == "default"

    sessions = await admin.ok("sessions")
    me = by(sessions, "client_id", admin.client.c._client_id.decode())
    assert me is not None
    assert me["username"] == "root" and me["protocol"] == 5 and me["connected"] is True
    assert me["offline_since"] is None and me["listener"] and me["address"].startswith("127.0.0.1")
    assert admin.reply_to in me["subscriptions"]
    service = by(sessions, "client_id", "edge-gateway-admin")
    assert service is not None and service["device"] is None
    sleeper = by(sessions, "client_id", "dev-sleeper")
    assert sleeper is not None
    assert sleeper["device"] == "sleeper" and sleeper["persistent"] is True
    assert sleeper["subscriptions"] == ["gw/sleeper/set"]


async def test_v311_client_uses_the_id(env: Env) -> None:
    admin = await env.admin(V311)
    answer = await admin.call("devices")
    assert answer["ok"] is True and answer["id"] is not None
    assert [d["id"] for d in answer["data"]] == ["plug", "sleeper"]
    # Grouped by device; a device with nothing waiting is not listed (one asked for is).
    assert (await admin.call("pending"))["data"] == {}
    assert (await admin.call("pending", {"device": "plug"}))["data"] == {"plug": []}


async def test_bad_requests_get_clear_errors(env: Env) -> None:
    admin = await env.admin(V5)
    w = await env.watch("gw/bridge/response/#")

    def raw(topic: str, payload: bytes) -> None:
        admin.client.c.publish(topic, payload, 1).wait_for_publish(5)

    await asyncio.to_thread(raw, "gw/bridge/request/devices", b"{not json")
    await asyncio.to_thread(raw, "gw/bridge/request/explode", b'{"id": "x1"}')
    await w.until(
        lambda w: (
            bool(w.on("gw/bridge/response/devices")) and bool(w.on("gw/bridge/response/explode"))
        )
    )
    bad = w.on("gw/bridge/response/devices")[0]
    assert bad["ok"] is False and "not valid JSON" in bad["error"]
    unknown = w.on("gw/bridge/response/explode")[0]
    assert unknown == {"ok": False, "error": unknown["error"], "id": "x1"}
    assert "unknown action 'explode'" in unknown["error"]

    missing = await admin.call("cancel", {"device": "sleeper"})
    assert missing["ok"] is False and "missing argument 'id'" in missing["error"]
    nobody = await admin.call("send", {"device": "nobody", "command": {"on": True}})
    assert nobody == {"ok": False, "error": "unknown device 'nobody'"}
    not_object = await admin.call("send", {"device": "plug", "command": [1]})
    assert not_object["ok"] is False and "'command' must be a JSON object" in not_object["error"]
    policy = await admin.call("set_policy", {"device": "plug", "policy": {"queue_depth": 0}})
    assert policy["ok"] is False and "queue_depth" in policy["error"]
    unknown_key = await admin.call("set_policy", {"device": "plug", "policy": {"colour": 1}})
    assert unknown_key["ok"] is False and "unknown policy key" in unknown_key["error"]


async def test_non_admin_is_refused(env: Env) -> None:
    """The broker's guard: only admins may publish requests or read responses and updates."""
    admin_watch = await env.watch("gw/bridge/request/#", "gw/bridge/response/#")
    for version, refused in ((V5, 0x87), (V311, 0x80)):
        bob = await asyncio.to_thread(
            Client, env.port, f"bob-{version}", version=version, username="bob", password="bobpw"
        )
        env.clients.append(bob)
        for topic_filter in (
            "gw/bridge/response/#",
            "gw/bridge/updates/devices",
            "gw/bridge/events",
        ):
            codes = await asyncio.to_thread(bob.subscribe, topic_filter, 1)
            assert [int(getattr(c, "value", c)) for c in codes] == [refused], topic_filter
        codes = await asyncio.to_thread(bob.subscribe, "gw/bridge/state", 1)
        assert int(getattr(codes[0], "value", codes[0])) < 0x80
        await asyncio.to_thread(bob.publish, "gw/bridge/request/flush", b'{"device": "sleeper"}', 1)
    # An anonymous client is no admin either.
    anon = await asyncio.to_thread(Client, env.port, "anon", version=V5)
    env.clients.append(anon)
    await asyncio.to_thread(anon.publish, "gw/bridge/request/sessions", b"{}", 1)
    # Neither request reached the service: no response was published, and the request itself
    # was not delivered to an admin subscribed to it.
    admin = await env.admin(V5)
    await admin.ok("sessions")  # a request that passes, as a barrier
    admin_watch.drain()
    requests = [t for t, _ in admin_watch.all if t.startswith("gw/bridge/request/")]
    assert requests == ["gw/bridge/request/sessions"]  # the admin's own
    assert env.gateway is not None and env.gateway.admin is not None
    assert env.gateway.admin.requests == 1


# --- commands -------------------------------------------------------------------------------------


async def test_send_is_delivered_to_the_device(env: Env) -> None:
    admin = await env.admin(V5)
    w = await env.watch("gw/plug/result", "gw/bridge/events")
    await w.until(lambda w: True)
    data = await admin.ok("send", {"device": "plug", "command": {"on": True}, "ttl": 60})
    assert data == {"queued": True}
    await w.until(lambda w: bool(w.on("gw/plug/result")))
    assert w.on("gw/plug/result")[0]["result"] == "delivered"
    assert env.fake.components["switch:0"]["output"] is True
    # The outcome is an event too.
    await w.until(lambda w: any(e.get("type") == "command" for e in w.on("gw/bridge/events")))
    event = next(e for e in w.on("gw/bridge/events") if e.get("type") == "command")
    assert event["device"] == "plug" and event["result"] == "delivered"
    assert '{"on":true}' in event["detail"]


async def test_pending_cancel_flush(env: Env) -> None:
    admin = await env.admin(V5)
    w = await env.watch("gw/sleeper/result", "gw/sleeper/pending")
    for command in ({"on": True}, {"brightness": 5}, {"cover": "open"}):
        await admin.ok("send", {"device": "sleeper", "command": command, "ttl": 600})
    pending = await admin.ok("pending", {"device": "sleeper"})
    entries = pending["sleeper"]
    assert [e["command"] for e in entries] == [{"on": True}, {"brightness": 5}, {"cover": "open"}]
    first = entries[0]
    assert first["state"] == "queued" and first["attempts"] == 0
    assert first["topic"] == "gw/sleeper/set"
    assert first["expires_at"] == pytest.approx(first["queued_at"] + 600, abs=1.5)
    listing = await admin.ok("devices")
    assert by(listing, "id", "sleeper")["pending"] == 3  # type: ignore[index]

    cancelled = await admin.ok("cancel", {"device": "sleeper", "id": first["id"]})
    assert cancelled == {"cancelled": [first["id"]]}
    await w.until(lambda w: any(r["result"] == "cancelled" for r in w.on("gw/sleeper/result")))
    notice = next(r for r in w.on("gw/sleeper/result") if r["result"] == "cancelled")
    assert notice["command"] == {"on": True} and notice["id"] == first["id"]
    left = (await admin.ok("pending", {"device": "sleeper"}))["sleeper"]
    assert [e["id"] for e in left] == [e["id"] for e in entries[1:]]
    await w.until(lambda w: len(w.on("gw/sleeper/pending")[-1] or []) == 2)

    again = await admin.call("cancel", {"device": "sleeper", "id": first["id"]})
    assert again["ok"] is False and "not queued" in again["error"]

    flushed = await admin.ok("flush", {"device": "sleeper"})
    assert flushed == {"cancelled": [e["id"] for e in entries[1:]]}
    assert "sleeper" not in await admin.ok("pending")
    await w.until(lambda w: w.on("gw/sleeper/pending")[-1] == [])


async def test_send_of_a_command_the_device_cannot_take_says_why(env: Env) -> None:
    admin = await env.admin(V5)
    answer = await admin.call("send", {"device": "sleeper", "command": {"mode": "x"}})
    assert answer["ok"] is False
    assert "0x83" in answer["error"] and "mode: unknown key" in answer["error"]
    assert (await admin.ok("pending", {"device": "sleeper"}))["sleeper"] == []


async def test_kick_and_delete_session(env: Env) -> None:
    admin = await env.admin(V311)
    victim = await asyncio.to_thread(
        Client,
        env.port,
        "victim",
        version=V5,
        clean=False,
        session_expiry=3600,
        will=("wills/victim", b'"gone"', 1, False),
    )
    env.clients.append(victim)
    victim.c.reconnect_delay_set(min_delay=60, max_delay=60)  # paho would come back in 1 s
    w = await env.watch("wills/victim", "gw/bridge/events")
    assert await admin.ok("kick", {"client_id": "victim"}) == {"kicked": True}
    reason = await asyncio.to_thread(victim.disconnects.get, True, 5)
    assert int(getattr(reason, "value", reason)) == 0x98
    await w.until(lambda w: bool(w.on("wills/victim")))  # published as on a drop
    sessions = await admin.ok("sessions")
    kept = by(sessions, "client_id", "victim")
    assert kept is not None and kept["connected"] is False and kept["offline_since"] is not None
    assert await admin.ok("kick", {"client_id": "victim"}) == {"kicked": False}

    assert await admin.ok("delete_session", {"client_id": "victim"}) == {"deleted": True}
    assert by(await admin.ok("sessions"), "client_id", "victim") is None
    assert await admin.ok("delete_session", {"client_id": "victim"}) == {"deleted": False}
    await w.until(
        lambda w: {"kick", "session_deleted"} <= {e.get("type") for e in w.on("gw/bridge/events")}
    )

    # The gateway's own service connections are not the admin's to cut.
    for action in ("kick", "delete_session"):
        for own in ("edge-gateway-admin", "edge-gateway-bridge"):
            refused = await admin.call(action, {"client_id": own})
            assert refused["ok"] is False and "gateway's own" in refused["error"], refused
    # A device session may go: it comes back by itself (with the presence checks).
    assert env.gateway is not None and env.gateway.supervisor is not None
    for action, answer in (("kick", {"kicked": True}), ("delete_session", {"deleted": True})):
        assert await admin.ok(action, {"client_id": "dev-plug"}) == answer
        plug = by(await admin.ok("sessions"), "client_id", "dev-plug")
        assert plug is None or plug["connected"] is False
        await env.gateway.supervisor.rejoin()
        plug = by(await admin.ok("sessions"), "client_id", "dev-plug")
        assert plug is not None and plug["connected"] is True
        assert plug["subscriptions"] == ["gw/plug/set"]
    assert await admin.ok("send", {"device": "plug", "command": {"on": True}}) == {"queued": True}
    await until(lambda: env.fake.components["switch:0"]["output"] is True)


async def test_set_policy_applies_and_survives_a_restart(env: Env) -> None:
    admin = await env.admin(V5)
    data = await admin.ok("set_policy", {"device": "sleeper", "policy": {"queue_depth": 1}})
    assert data["policy"]["queue_depth"] == 1 and data["policy"]["session"] == "persistent"
    assert by(await admin.ok("devices"), "id", "sleeper")["policy"]["queue_depth"] == 1  # type: ignore[index]

    async def two_commands() -> list[Any]:
        for command in ({"on": True}, {"brightness": 5}):  # different keys: no coalescing
            await admin.ok("send", {"device": "sleeper", "command": command})
        return [e["command"] for e in (await admin.ok("pending", {"device": "sleeper"}))["sleeper"]]

    # Depth 1, drop-oldest: the second command drops the first.
    assert await two_commands() == [{"brightness": 5}]
    await admin.ok("flush", {"device": "sleeper"})

    await asyncio.to_thread(admin.close)
    env.clients.remove(admin)
    await env.stop()
    await env.start()
    admin = await env.admin(V311)
    listing = await admin.ok("devices")
    assert by(listing, "id", "sleeper")["policy"]["queue_depth"] == 1  # type: ignore[index]
    assert by(listing, "id", "plug")["policy"]["queue_depth"] == 20  # type: ignore[index]
    assert await two_commands() == [{"brightness": 5}]

    # null: back to the config's policy, at once and for good.
    data = await admin.ok("set_policy", {"device": "sleeper", "policy": None})
    assert data["policy"]["queue_depth"] == 20
    await admin.ok("flush", {"device": "sleeper"})
    assert await two_commands() == [{"on": True}, {"brightness": 5}]


async def test_reload(env: Env) -> None:
    admin = await env.admin(V5)
    assert await admin.ok("reload") == {"reloaded": True, "applied": []}
    env.config_path.write_text("listeners: [")  # broken: the running config stays
    failed = await admin.call("reload")
    assert failed["ok"] is False and "reload failed" in failed["error"]
    assert (await admin.call("sessions"))["ok"] is True


async def test_a_small_max_packet_size_gives_small_pages(tmp_path: Path) -> None:
    # With 1500-byte packets a whole sessions list would not fit (it was an error, and its
    # live update was skipped): pages end before half the packet size, and page on.
    fake = shelly_plus_1pm()
    async with fake:
        env = Env(tmp_path, fake, limits={"max_packet_size": 1500})
        await env.start()
        try:
            admin = await env.admin(V5)
            w = await env.watch("gw/bridge/updates/sessions")
            for _ in range(5):
                # Offset pages are not a snapshot: a session that appears while we page (the
                # device's, connecting) shifts the rest. Page again until the total held still.
                seen: list[str] = []
                totals: set[int] = set()
                offset: int | None = 0
                while offset is not None:
                    answer = await admin.call("sessions", {"offset": offset})
                    assert answer["ok"] is True and len(json.dumps(answer)) < 1500
                    seen += [s["client_id"] for s in answer["data"]]
                    totals.add(answer["page"]["total"])
                    offset = answer["page"]["next"]
                if len(totals) == 1:
                    break
                await asyncio.sleep(0.2)
            assert answer["page"]["total"] == len(seen) >= 4 and len(set(seen)) == len(seen)
            assert "edge-gateway-admin" in seen and "dev-sleeper" in seen
            assert await admin.ok("pending", {"device": "plug"}) == {"plug": []}
            await w.until(lambda w: bool(w.on("gw/bridge/updates/sessions")))
            assert 1 <= len(w.on("gw/bridge/updates/sessions")[-1]) < len(seen)
        finally:
            for client in env.clients:
                await asyncio.to_thread(client.close)  # type: ignore[union-attr]
            await env.stop()


async def test_admin_api_false_answers_nothing(tmp_path: Path) -> None:
    fake = shelly_plus_1pm()
    async with fake:
        env = Env(tmp_path, fake, admin_api=False)
        gateway = await env.start()
        try:
            assert gateway.admin is None
            admin = await env.admin(V5)
            with pytest.raises(AssertionError, match="no response to sessions"):
                await asyncio.to_thread(admin.request, "sessions", None, 1.0)
        finally:
            for client in env.clients:
                await asyncio.to_thread(client.close)  # type: ignore[union-attr]
            await env.stop()


# --- live updates ---------------------------------------------------------------------------------


async def test_live_updates_follow_changes_and_are_rate_limited(env: Env) -> None:
    w = await env.watch("gw/bridge/updates/#", "gw/bridge/status")
    await w.until(lambda w: bool(w.on("gw/bridge/status")))
    status = w.on("gw/bridge/status")[-1]
    assert set(status) == {
        "version",
        "started_at",
        "uptime",
        "clients",
        "sessions",
        "devices",
        "pending",
        "msgs_in_per_s",
        "msgs_out_per_s",
        "store_bytes",
        "upstreams",
        "upstreams_connected",
    }
    assert status["devices"] == 2 and status["sessions"] >= 3
    await w.until(lambda w: bool(w.on("gw/bridge/updates/sessions")))

    # A change shows up without asking.
    probe = await asyncio.to_thread(Client, env.port, "probe", version=V5)
    await w.until(
        lambda w: any(by(s, "client_id", "probe") for s in w.on("gw/bridge/updates/sessions"))
    )
    await asyncio.to_thread(probe.disconnect)

    # A burst of 200 session changes (persistent sessions connect and go offline): at most
    # one sessions update per second, and the last one shows where the burst ended.
    w.drain()
    before = len(w.on("gw/bridge/updates/sessions"))
    started = time.monotonic()

    def burst() -> None:
        for i in range(100):
            Client(env.port, f"burst-{i}", clean=False).disconnect()

    await asyncio.to_thread(burst)

    def settled(w: Watcher) -> bool:
        updates = w.on("gw/bridge/updates/sessions")[before:]
        if not updates:
            return False
        last = by(updates[-1], "client_id", "burst-99")
        return last is not None and last["connected"] is False

    await w.until(settled, timeout=15)
    elapsed = time.monotonic() - started
    updates = len(w.on("gw/bridge/updates/sessions")) - before
    assert 1 <= updates <= elapsed / 1.0 + 2, (updates, elapsed)


async def test_events_stream_is_rate_limited(env: Env) -> None:
    assert env.gateway is not None
    server = env.gateway.server
    w = await env.watch("gw/bridge/events")
    c = await asyncio.to_thread(Client, env.port, "evented", version=V5)
    await asyncio.to_thread(c.disconnect)
    await w.until(
        lambda w: (
            {("connect", "evented"), ("disconnect", "evented")}
            <= {(e.get("type"), e.get("client_id")) for e in w.on("gw/bridge/events")}
        )
    )
    event = next(e for e in w.on("gw/bridge/events") if e.get("client_id") == "evented")
    assert {"seq", "ts", "type", "client_id", "detail"} <= set(event)

    # A burst of 400 events (100 connects and disconnects): every event is either sent or
    # counted in an events_dropped report, and at most 50 are sent per second.
    start_seq, _ = server.events_since(1 << 62)
    started = time.monotonic()

    def burst() -> None:
        for i in range(100):
            Client(env.port, f"burst-{i}").disconnect()

    await asyncio.to_thread(burst)
    end_seq, _ = server.events_since(1 << 62)
    assert end_seq - start_seq >= 200

    def accounted(w: Watcher) -> int:
        events = w.on("gw/bridge/events")
        sent = sum(1 for e in events if isinstance(e.get("seq"), int) and e["seq"] > start_seq)
        dropped = sum(e["count"] for e in events if e.get("type") == "events_dropped")
        return sent + dropped

    await w.until(lambda w: accounted(w) >= end_seq - start_seq, timeout=15)
    elapsed = time.monotonic() - started
    assert accounted(w) == end_seq - start_seq
    sent = sum(1 for e in w.on("gw/bridge/events") if e.get("seq", 0) > start_seq)
    assert sent <= 50 * (elapsed + 1), (sent, elapsed)


# --- BLE devices (demo mode: a simulated BTHome sensor and a sleepy eQ-3 thermostat) ----------


async def test_ble_devices_in_the_listing(tmp_path: Path) -> None:
    from devices.demo import DemoTimings
    from gateway.admin.protocol import Request, RequestError
    from gateway.config import parse_config

    timings = DemoTimings(
        sensor_interval=0.1, thermostat_period=3.0, thermostat_awake=0.4, advert_interval=0.1
    )
    config = {
        "listeners": [{"type": "tcp", "host": "127.0.0.1", "port": free_port()}],
        "persistence": {"path": str(tmp_path / "gw.db")},
        "sys_interval": 0,
        "devices": {"ble": {"enabled": False}, "lan": {"poll_interval": 0.2, "timeout": 1}},
        "demo": True,
    }
    gw = Gateway(parse_config(json.dumps(config), "demo.yaml"), demo_timings=timings)
    await gw.start()
    try:
        admin = gw.admin
        assert admin is not None

        async def devices() -> list[dict[str, Any]]:
            page = await admin.handle(Request("devices", {}))
            return page.data  # type: ignore[attr-defined,no-any-return]

        async def sensor_heard() -> bool:
            sensor = by(await devices(), "id", "demo-sensor")
            return sensor is not None and sensor["link"] == "online"

        await until_async(sensor_heard)
        listing = await devices()
        sensor = by(listing, "id", "demo-sensor")
        assert sensor is not None and sensor["kind"] == "bthome"
        assert sensor["schema"] is None  # it takes no commands
        assert isinstance(sensor["rssi"], int) and sensor["last_seen"] is not None
        assert sensor["policy"]["session"] == "clean" and sensor["pending"] == 0
        thermostat = by(listing, "id", "demo-thermostat")
        assert thermostat is not None and thermostat["kind"] == "eq3"
        assert thermostat["wake_interval"] == thermostat["policy"]["wake_interval"]
        assert thermostat["schema"]["properties"]["target_temp"]["maximum"] == 30
        assert isinstance(thermostat["pending"], int)

        # A sensor that only reports takes no commands.
        with pytest.raises(RequestError, match="takes no commands"):
            await admin.handle(Request("send", {"device": "demo-sensor", "command": {"x": 1}}))
        # The sleepy thermostat's policy changes at run time too.
        data = await admin.handle(
            Request("set_policy", {"device": "demo-thermostat", "policy": {"queue_depth": 2}})
        )
        assert data == {"policy": {**thermostat["policy"], "queue_depth": 2}}
        assert gw.supervisor is not None
        assert gw.supervisor.sessions["demo-thermostat"].device.policy.queue_depth == 2
    finally:
        await gw.stop()


async def until_async(predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.05)
