"""The admin API's view of the upstream bridge (issue 10): the `upstreams` request, the live
`gw/bridge/updates/upstreams` list and the status counts.

The bridge engine is not needed: a fake `UpstreamLayer` stands in for it. The end-to-end
tests run a real gateway (app.Gateway with `admin_api: false`) and start the admin service
on it the way gateway/app.py does, with the fake as its upstream provider; requests and
updates go through real paho clients (MQTT 5 and 3.1.1). The live publisher's timing is
tested with a fake clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lan_fakes import shelly_plus_1pm
from paho_helpers import V5, V311, Client
from test_admin_api import Env, Watcher
from test_admin_parse import FakeBroker

from gateway.admin import protocol as p
from gateway.admin.data import AdminData, UpstreamLayer
from gateway.admin.live import LivePublisher
from gateway.admin.service import AdminService
from gateway.upstream.status import UpstreamStatus

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning")]

FIELDS = {f.name for f in dataclasses.fields(UpstreamStatus)}
SINCE = 1_790_000_000.0


def status(name: str, **changes: Any) -> UpstreamStatus:
    base = UpstreamStatus(
        name=name,
        host="127.0.0.1",
        port=1883,
        protocol=5,
        client_id=f"edge-gateway-test-{name}",
        state="connected",
        since=SINCE,
        queued=0,
        forwarded=10,
        received=2,
        dropped=0,
        duplicates=0,
        rate_out=1.5,
        rate_in=0.0,
        last_error=None,
    )
    return dataclasses.replace(base, **changes)


class FakeUpstreams:
    """What the bridge engine shows the admin service: statuses and a version."""

    def __init__(self, *statuses: UpstreamStatus) -> None:
        self.statuses = {s.name: s for s in statuses}
        self.version = 0

    def upstream_statuses(self) -> list[UpstreamStatus]:
        return list(self.statuses.values())  # in no particular order: the admin sorts

    def change(self, name: str, **changes: Any) -> None:
        self.statuses[name] = dataclasses.replace(self.statuses[name], **changes)
        self.version += 1


def test_the_fake_is_an_upstream_layer() -> None:
    layer: UpstreamLayer = FakeUpstreams()  # mypy checks the fake against the Protocol
    assert layer.upstream_statuses() == []


# --- end to end: a gateway, its admin service with the fake, paho clients ----------------------


class UpstreamEnv:
    def __init__(self, env: Env, service: AdminService, layer: FakeUpstreams | None) -> None:
        self.env = env
        self.service = service
        self.layer = layer


async def start_env(tmp_path: Path, layer: FakeUpstreams | None) -> AsyncIterator[UpstreamEnv]:
    fake = shelly_plus_1pm()
    async with fake:
        env = Env(tmp_path, fake, admin_api=False)
        gw = await env.start()
        # As gateway/app.py builds it, plus the upstream provider the lead wires there.
        service = AdminService(
            gw.server,
            gw.server.connect_in_process,
            lambda: gw.supervisor,
            gw.config.topic_prefix,
            upstreams=lambda: layer,
            poll_interval=0.05,
        )
        await service.start()
        try:
            yield UpstreamEnv(env, service, layer)
        finally:
            for client in env.clients:
                await asyncio.to_thread(
                    client.close if not isinstance(client, Client) else client.disconnect
                )
            await service.stop()
            await env.stop()


@pytest.fixture
async def up(tmp_path: Path) -> AsyncIterator[UpstreamEnv]:
    layer = FakeUpstreams(
        status("cloud"),
        status("backup", state="disconnected", queued=120, last_error="connection refused"),
    )
    async for env in start_env(tmp_path, layer):
        yield env


@pytest.fixture
async def none(tmp_path: Path) -> AsyncIterator[UpstreamEnv]:
    async for env in start_env(tmp_path, None):
        yield env


@pytest.mark.parametrize("version", [V5, V311])
async def test_upstreams_lists_every_connection_by_name(up: UpstreamEnv, version: int) -> None:
    admin = await up.env.admin(version)
    answer = await admin.call("upstreams")
    assert answer["ok"] is True, answer
    assert [u["name"] for u in answer["data"]] == ["backup", "cloud"]
    assert all(set(u) == FIELDS for u in answer["data"])
    backup = answer["data"][0]
    assert backup["state"] == "disconnected" and backup["queued"] == 120
    assert backup["last_error"] == "connection refused" and backup["since"] == SINCE
    assert answer["data"][1] == status("cloud").as_json()
    assert answer["page"] == {"offset": 0, "limit": p.DEFAULT_PAGE, "total": 2, "next": None}


async def test_upstreams_come_in_pages(up: UpstreamEnv) -> None:
    assert up.layer is not None
    for n in range(5):
        up.layer.statuses[f"site{n}"] = status(f"site{n}")
    admin = await up.env.admin(V5)
    names: list[str] = []
    offset: int | None = 0
    while offset is not None:
        answer = await admin.call("upstreams", {"offset": offset, "limit": 3})
        assert answer["ok"] is True and len(answer["data"]) <= 3
        assert answer["page"]["total"] == 7
        names += [u["name"] for u in answer["data"]]
        offset = answer["page"]["next"]
    assert names == ["backup", "cloud", "site0", "site1", "site2", "site3", "site4"]
    bad = await admin.call("upstreams", {"limit": 0})
    assert bad["ok"] is False and "'limit' must be a whole number" in bad["error"]
    bad = await admin.call("upstreams", {"offset": "1"})
    assert bad["ok"] is False and "'offset' must be a whole number" in bad["error"]


async def test_no_upstream_configured_is_an_empty_list(none: UpstreamEnv) -> None:
    admin = await none.env.admin(V5)
    answer = await admin.call("upstreams")
    assert answer["ok"] is True
    assert answer["data"] == []
    assert answer["page"] == {"offset": 0, "limit": p.DEFAULT_PAGE, "total": 0, "next": None}
    w = await none.env.watch("gw/bridge/status", "gw/bridge/updates/upstreams")
    await w.until(lambda w: bool(w.on("gw/bridge/status")))
    last = w.on("gw/bridge/status")[-1]
    assert last["upstreams"] == 0 and last["upstreams_connected"] == 0


async def test_live_updates_follow_the_bridge(up: UpstreamEnv) -> None:
    assert up.layer is not None
    w = await up.env.watch("gw/bridge/updates/upstreams", "gw/bridge/status")
    await w.until(lambda w: (w.on("gw/bridge/status") or [{}])[-1].get("upstreams") == 2)
    assert w.on("gw/bridge/status")[-1]["upstreams_connected"] == 1

    up.layer.change("backup", state="connected", since=SINCE + 60, last_error=None, queued=0)

    def backup_connected(w: Watcher) -> bool:
        updates = w.on("gw/bridge/updates/upstreams")
        return bool(updates) and updates[-1][0]["state"] == "connected"

    await w.until(backup_connected)
    latest = w.on("gw/bridge/updates/upstreams")[-1]
    assert [u["name"] for u in latest] == ["backup", "cloud"]
    assert latest[0] == status("backup", since=SINCE + 60, queued=0).as_json()
    # The status line's counts follow (it is sent every 2 s at most).
    await w.until(lambda w: w.on("gw/bridge/status")[-1].get("upstreams_connected") == 2, timeout=8)


async def test_a_non_admin_can_neither_ask_nor_watch(up: UpstreamEnv) -> None:
    env = up.env
    for version, refused in ((V5, 0x87), (V311, 0x80)):
        bob = await asyncio.to_thread(
            Client, env.port, f"bob-{version}", version=version, username="bob", password="bobpw"
        )
        env.clients.append(bob)
        for topic_filter in ("gw/bridge/updates/upstreams", "gw/bridge/response/upstreams"):
            codes = await asyncio.to_thread(bob.subscribe, topic_filter, 1)
            assert [int(getattr(c, "value", c)) for c in codes] == [refused], topic_filter
        info = await asyncio.to_thread(bob.publish, "gw/bridge/request/upstreams", b"{}", 1)
        if version == V5:
            rc = bob.pubacks[info.mid]
            assert int(getattr(rc, "value", rc)) == 0x87
    # A broad subscription is granted but never carries the list.
    nosy = await asyncio.to_thread(
        Client, env.port, "nosy", version=V5, username="bob", password="bobpw"
    )
    env.clients.append(nosy)
    await asyncio.to_thread(nosy.subscribe, "gw/#", 1)
    admin = await env.admin(V5)
    assert len(await admin.ok("upstreams")) == 2  # a request that passes, as a barrier
    assert up.service.requests == 1  # bob's never reached the service
    assert up.layer is not None
    up.layer.change("cloud", queued=5)
    w = await env.watch("gw/bridge/updates/upstreams")
    await w.until(lambda w: bool(w.on("gw/bridge/updates/upstreams")))
    seen = await asyncio.to_thread(nosy.drain, 0.3)
    private = ("gw/bridge/updates/", "gw/bridge/response/")
    assert not [m.topic for m in seen if m.topic.startswith(private)]


# --- the live publisher, with a fake clock ------------------------------------------------------


def live_with(
    provider: Any,
) -> tuple[LivePublisher, list[tuple[str, Any]], list[float]]:
    sent: list[tuple[str, Any]] = []
    now = [2000.0]

    async def publish(topic: str, payload: bytes, retain: bool) -> bool:
        sent.append((topic, json.loads(payload)))
        return True

    data = AdminData(FakeBroker(), lambda: None, upstreams=provider)
    live = LivePublisher(data, publish, "gw", clock=lambda: now[0])
    live.prime()
    return live, sent, now


def updates(sent: list[tuple[str, Any]]) -> list[Any]:
    return [payload for topic, payload in sent if topic == "gw/bridge/updates/upstreams"]


async def test_live_list_only_when_the_version_moved_and_once_per_second() -> None:
    layer = FakeUpstreams(status("cloud"))
    live, sent, now = live_with(lambda: layer)
    await live.step()
    assert updates(sent) == [[status("cloud").as_json()]]
    sent.clear()
    # A status that changed without its version: not looked at (the version is the signal).
    layer.statuses["cloud"] = status("cloud", queued=7)
    for _ in range(8):
        now[0] += 0.25
        await live.step()
    assert updates(sent) == []
    # The version moves at every poll for two seconds: one update per second at most, and
    # the last one shows where it ended.
    for n in range(8):
        layer.change("cloud", forwarded=100 + n)
        now[0] += 0.25
        await live.step()
    now[0] += 1.0
    await live.step()
    sent_now = updates(sent)
    assert 1 <= len(sent_now) <= 3
    assert sent_now[-1][0]["forwarded"] == 107
    # A new version with the same statuses: nothing new to say.
    sent.clear()
    layer.version += 1
    now[0] += 1.0
    await live.step()
    assert updates(sent) == []


async def test_live_list_when_the_bridge_is_replaced() -> None:
    """A reload may build a new bridge whose version starts again at the old one's value."""
    first = FakeUpstreams(status("cloud"))
    second = FakeUpstreams(status("cloud"), status("site2"))
    current: list[FakeUpstreams | None] = [None]
    live, sent, now = live_with(lambda: current[0])
    await live.step()
    assert updates(sent) == [[]]  # none configured: said once
    statuses = [payload for topic, payload in sent if topic == "gw/bridge/status"]
    assert statuses[-1]["upstreams"] == 0 and statuses[-1]["upstreams_connected"] == 0
    for layer, names in ((first, ["cloud"]), (second, ["cloud", "site2"])):
        current[0] = layer
        now[0] += 5.0  # the status: when a count changed, at most every 5 s
        await live.step()
        assert [u["name"] for u in updates(sent)[-1]] == names
    statuses = [payload for topic, payload in sent if topic == "gw/bridge/status"]
    assert statuses[-1]["upstreams"] == 2 and statuses[-1]["upstreams_connected"] == 2
