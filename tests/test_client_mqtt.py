"""gateway.client.mqtt against the real gateway, over the in-process transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.client.mqtt import ConnectionClosed, ConnectRefused, MQTTClient
from gateway.config import load_config
from gateway.mqtt.packets import Properties, Publish, Will
from tests import paho_helpers
from tests.conftest import free_port, write_config


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    gateway = Gateway(load_config(write_config(tmp_path, free_port())))
    await gateway.start()
    yield gateway
    await gateway.stop()


class Inbox:
    """A message handler that records what it saw and answers from a script."""

    def __init__(self, answers: list[bool] | None = None) -> None:
        self.seen: list[Publish] = []
        self.answers = answers or []
        self.event = asyncio.Event()

    async def __call__(self, message: Publish) -> bool:
        self.seen.append(message)
        self.event.set()
        return self.answers.pop(0) if self.answers else True

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async def enough() -> None:
            while len(self.seen) < count:
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(enough(), timeout)


async def test_in_process_connection_is_trusted(gw: Gateway) -> None:
    # The gateway's own services (the admin API) are in-process connections too.
    before = set(gw.server.connections)
    client = MQTTClient(gw.server.connect_in_process)
    ack = await client.connect("inproc-1")
    assert ack.reason_code == 0 and not ack.session_present
    infos = [c.info for k, c in gw.server.connections.items() if c.info and k not in before]
    mine = [i for i in infos if i.listener == "in-process"]
    assert len(mine) == 1 and mine[0].trusted and mine[0].peer == "in-process"
    await client.disconnect()
    assert await client.wait_closed() is None
    assert not client.connected


async def test_publish_subscribe_roundtrip(gw: Gateway) -> None:
    inbox = Inbox()
    sub = MQTTClient(gw.server.connect_in_process, inbox)
    await sub.connect("sub")
    assert await sub.subscribe("t/#", qos=1) == (1,)
    pub = MQTTClient(gw.server.connect_in_process)
    await pub.connect("pub")
    await pub.publish("t/a", b"one", qos=1)
    await pub.publish("t/b", b"two", qos=0)
    await pub.publish("t/r", b"kept", qos=1, retain=True, properties=Properties(content_type="x"))
    await inbox.wait_for(3)
    assert [(m.topic, m.payload) for m in inbox.seen] == [
        ("t/a", b"one"),
        ("t/b", b"two"),
        ("t/r", b"kept"),
    ]
    assert inbox.seen[2].properties.content_type == "x"
    await pub.disconnect()
    await sub.disconnect()


async def test_unacknowledged_message_is_redelivered_on_next_connect(gw: Gateway) -> None:
    first = Inbox(answers=[False])
    c1 = MQTTClient(gw.server.connect_in_process, first)
    await c1.connect("manual", clean_start=False, session_expiry=3600, receive_maximum=1)
    await c1.subscribe("cmd", qos=1)
    pub = MQTTClient(gw.server.connect_in_process)
    await pub.connect("pub")
    await pub.publish("cmd", b"a", qos=1)
    await pub.publish("cmd", b"b", qos=1)
    await first.wait_for(1)
    await asyncio.sleep(0.1)  # receive maximum 1: "b" must wait for the ack of "a"
    assert [m.payload for m in first.seen] == [b"a"]
    await c1.disconnect()

    second = Inbox()
    c2 = MQTTClient(gw.server.connect_in_process, second)
    ack = await c2.connect("manual", clean_start=False, session_expiry=3600, receive_maximum=1)
    assert ack.session_present
    await second.wait_for(2)
    assert [m.payload for m in second.seen] == [b"a", b"b"]
    assert second.seen[0].dup
    await c2.disconnect()

    third = Inbox()
    c3 = MQTTClient(gw.server.connect_in_process, third)
    await c3.connect("manual", clean_start=False, session_expiry=3600)
    await asyncio.sleep(0.1)
    assert third.seen == []  # both acknowledged: nothing left
    await c3.disconnect()
    await pub.disconnect()


async def test_handler_that_raises_leaves_message_unacknowledged(gw: Gateway) -> None:
    async def broken(message: Publish) -> bool:
        raise RuntimeError("device unreachable")

    c1 = MQTTClient(gw.server.connect_in_process, broken)
    await c1.connect("raiser", clean_start=False, session_expiry=3600)
    await c1.subscribe("cmd", qos=1)
    pub = MQTTClient(gw.server.connect_in_process)
    await pub.connect("pub")
    await pub.publish("cmd", b"x", qos=1)
    await asyncio.sleep(0.1)
    await c1.disconnect()
    inbox = Inbox()
    c2 = MQTTClient(gw.server.connect_in_process, inbox)
    await c2.connect("raiser", clean_start=False, session_expiry=3600)
    await inbox.wait_for(1)
    assert inbox.seen[0].payload == b"x"
    await c2.disconnect()
    await pub.disconnect()


async def test_will_on_lost_link_but_not_on_clean_disconnect(gw: Gateway) -> None:
    inbox = Inbox()
    watcher = MQTTClient(gw.server.connect_in_process, inbox)
    await watcher.connect("watcher")
    await watcher.subscribe("will/#", qos=1)
    will = Will("will/a", b"gone", qos=1)
    clean = MQTTClient(gw.server.connect_in_process)
    await clean.connect("a", will=will)
    await clean.disconnect()
    lost = MQTTClient(gw.server.connect_in_process)
    await lost.connect("b", will=Will("will/b", b"gone", qos=1))
    await lost.close()
    await inbox.wait_for(1)
    await asyncio.sleep(0.05)
    assert [m.topic for m in inbox.seen] == ["will/b"]
    await watcher.disconnect()


async def test_keep_alive_pings(gw: Gateway) -> None:
    client = MQTTClient(gw.server.connect_in_process)
    await client.connect("pinger", keep_alive=1)
    assert client.keep_alive == 1
    await asyncio.sleep(2.2)  # past 1.5 x keep-alive: the broker would have dropped us
    assert client.connected
    await client.publish("x", b"still here", qos=1)
    await client.disconnect()


async def test_broker_going_away_surfaces_as_closed(tmp_path: Path) -> None:
    gateway = Gateway(load_config(write_config(tmp_path, free_port())))
    await gateway.start()
    client = MQTTClient(gateway.server.connect_in_process)
    await client.connect("c")
    await gateway.stop()
    reason = await asyncio.wait_for(client.wait_closed(), 5)
    assert isinstance(reason, ConnectionClosed)
    assert not client.connected
    with pytest.raises(ConnectionClosed):
        await client.publish("x", b"", qos=1)


async def test_refused_connect(gw: Gateway) -> None:
    client = MQTTClient(gw.server.connect_in_process)
    with pytest.raises(ConnectRefused) as info:
        await client.connect("c", will=Will("$SYS/forged", b"x"))
    assert info.value.reason_code == 0x87
    assert await asyncio.wait_for(client.wait_closed(), 5) is not None


async def test_unreachable_broker() -> None:
    async def nowhere() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", free_port())

    client = MQTTClient(nowhere)
    with pytest.raises(ConnectionClosed):
        await client.connect("c")


async def test_qos2_delivery_completes_and_unhandled_qos2_is_redelivered(tmp_path: Path) -> None:
    port = free_port()
    gateway = Gateway(load_config(write_config(tmp_path, port)))
    await gateway.start()
    try:
        first = Inbox(answers=[True, False])
        c1 = MQTTClient(gateway.server.connect_in_process, first)
        await c1.connect("q2", clean_start=False, session_expiry=600, receive_maximum=1)
        assert await c1.subscribe("q2/#", qos=2) == (2,)

        def send() -> None:
            client = paho_helpers.Client(port, "q2-pub")
            try:
                client.publish("q2/a", b"handled", qos=2)
                client.publish("q2/b", b"refused", qos=2)
            finally:
                client.disconnect()

        await asyncio.to_thread(send)
        await first.wait_for(2)
        assert [(m.payload, m.qos) for m in first.seen] == [(b"handled", 2), (b"refused", 2)]
        await asyncio.sleep(0.05)  # let the PUBREL/PUBCOMP of the first one finish
        await c1.disconnect()

        second = Inbox()
        c2 = MQTTClient(gateway.server.connect_in_process, second)
        await c2.connect("q2", clean_start=False, session_expiry=600)
        await second.wait_for(1)
        await asyncio.sleep(0.1)
        assert [m.payload for m in second.seen] == [b"refused"]
        await c2.disconnect()
    finally:
        await gateway.stop()
